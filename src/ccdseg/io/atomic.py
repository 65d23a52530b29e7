"""Atomic writing: an output appears complete or not at all, and never overwrites by surprise.

Outputs get the permissions of a file the user creates (``0o666`` less the umask), not the
``0o600`` of a temporary file, so collaborators on shared storage can read them.
"""

import contextlib
import os
import re
import tempfile
from pathlib import Path

from ccdseg.errors import OutputError

#: Ending of the journal that lists a group of outputs while they are being renamed into place.
JOURNAL_SUFFIX = ".renaming"


@contextlib.contextmanager
def atomic_path(path, overwrite=False):
    """Yield a temporary path beside ``path`` that is renamed onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is left as it was. The file gets the mode ``0o666 & ~umask``.

    Raises
    ------
    OutputError
        ``path`` exists and ``overwrite`` is false, or its directory cannot be written.
    """
    path = Path(path)
    check_absent([path], overwrite)
    with _temporary(path) as temp:
        yield temp
        _rename(temp, path)


@contextlib.contextmanager
def atomic_paths(paths, overwrite=False):
    """Yield temporary paths for a group of outputs, all renamed into place only when all are written.

    While the renames run, a journal (``.<first output>.renaming``) lists the group; if the
    process dies between two renames (a killed worker, a power cut), :func:`recover_group`
    finds the journal next time and removes the group's outputs, so the job can be redone
    without ``overwrite``.

    Parameters
    ----------
    paths : dict of str -> path-like
        Output path by role.
    overwrite : bool
        Replace existing outputs.

    Yields
    ------
    dict of str -> Path
        Temporary path by role.
    """
    targets = {role: Path(path) for role, path in paths.items()}
    check_absent(targets.values(), overwrite)
    with contextlib.ExitStack() as stack:
        temps = {role: stack.enter_context(_temporary(target)) for role, target in targets.items()}
        yield temps
        journal = _journal(targets.values())
        write_text_atomic(journal, "".join(f"{target}\n" for target in targets.values()), overwrite=True)
        for role, target in targets.items():
            _rename(temps[role], target)
        journal.unlink()


def recover_group(paths):
    """Remove the outputs of a group whose renaming was cut short (see :func:`atomic_paths`).

    Also removes temporary files left beside the outputs by a process that died while
    writing them. Returns the removed outputs.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        # ".NAME.*.tmp", and "..NAME.*.tmp" of a writer that itself writes atomically (a figure)
        for prefix in (".", ".."):
            for temp in path.parent.glob(f"{prefix}{_glob_escape(path.name)}.*.tmp"):
                temp.unlink(missing_ok=True)
    journal = _journal(paths)
    if not journal.exists():
        return []
    removed = []
    for line in journal.read_text().splitlines():
        if line and Path(line).exists():
            Path(line).unlink()
            removed.append(Path(line))
    journal.unlink()
    return removed


def write_text_atomic(path, text, overwrite=False):
    """Write a text file (CSV, DS9 regions, JSON) atomically."""
    with atomic_path(path, overwrite) as temp:
        Path(temp).write_text(text)


def output_paths(out_dir, stem, suffixes):
    """The output files of one job, by role: ``out_dir / (stem + suffix)`` for each role's suffix.

    Parameters
    ----------
    out_dir : str or Path
    stem : str
        Common start of the file names (often the input's name without its FITS suffix).
    suffixes : dict of str -> str
        Role -> rest of the file name.
    """
    return {role: Path(out_dir) / f"{stem}{suffix}" for role, suffix in suffixes.items()}


def check_absent(paths, overwrite=False):
    """Refuse to go on when an output exists and may not be replaced.

    Raises
    ------
    OutputError
        Naming the first existing path, and how many more exist.
    """
    existing = [] if overwrite else [Path(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" and {len(existing) - 1} more output(s)" if len(existing) > 1 else ""
        raise OutputError(f"{existing[0]}{more}: exists (use --overwrite to replace it)")


def file_mode():
    """Mode of a new file under the current umask (``0o644`` for the usual umask 022)."""
    try:  # Linux: read without changing it (os.umask sets it, which races with other threads)
        status = Path("/proc/self/status").read_text()
        umask = int(re.search(r"^Umask:\s*([0-7]+)", status, re.MULTILINE).group(1), 8)
    except (OSError, AttributeError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def _temporary(path):
    """A temporary file beside ``path`` (made with the directory), removed unless renamed away."""
    blocked = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocked is not None:
        raise OutputError(f"{path}: cannot write ({blocked} is not a directory)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    os.close(handle)
    try:
        yield Path(temp)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def _rename(temp, path):
    try:
        os.chmod(temp, file_mode())  # mkstemp makes 0o600: readable by the owner only
        os.replace(temp, path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None


def _journal(paths):
    first = Path(next(iter(paths)))
    return first.parent / f".{first.name}{JOURNAL_SUFFIX}"


def _glob_escape(name):
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
