"""Atomic writing: an output appears complete or not at all, and never overwrites by surprise."""

import contextlib
import os
import tempfile
from pathlib import Path

from ccdseg.errors import OutputError


@contextlib.contextmanager
def atomic_path(path, overwrite=False):
    """Yield a temporary path beside ``path`` that is renamed onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is left as it was.

    Raises
    ------
    OutputError
        ``path`` exists and ``overwrite`` is false, or its directory cannot be written.
    """
    path = Path(path)
    check_absent([path], overwrite)
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
        os.replace(temp, path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if os.path.exists(temp):
            os.remove(temp)


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
