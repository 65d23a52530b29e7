"""What a batch of files needs beyond the file job: input checks and the run log that makes a batch resumable.

The run log ``OUT_DIR/ccdseg_run.csv`` gets one CSV row per file as soon as the file is done
(``time, path, status, reason, outputs``; status ``done`` or ``failed``), by one
``write`` to a file opened for appending, so an interrupted batch leaves every finished
file's row and at worst a last partial row, which is ignored on reading. Rerunning with
``skip_existing`` skips the files whose last row is ``done`` and whose outputs all exist.
"""

import csv
import io
import os
import time
from pathlib import Path

from ccdseg.errors import ConfigError
from ccdseg.io import fits_stem

#: Name of the run log in the output directory.
RUN_LOG = "ccdseg_run.csv"
#: Columns of the run log.
LOG_COLUMNS = ("time", "path", "status", "reason", "outputs")
#: Endings of files that ccdseg writes and that are not images to segment (simulation truth, segmentations).
DERIVED_ENDINGS = ("_truth", "_seg")


def split_derived(paths):
    """Separate the files named like ccdseg's own outputs (``*_truth.fits``, ``*_seg.fits``) from the images.

    Returns
    -------
    images, derived : list of Path
    """
    images, derived = [], []
    for path in map(Path, paths):
        (derived if fits_stem(path).endswith(DERIVED_ENDINGS) else images).append(path)
    return images, derived


def unique_inputs(paths):
    """The inputs, each file once, refusing different files that would write the same outputs.

    Outputs are named after the input's name without its folder and FITS ending, so
    ``d1/run.fits.fz`` and ``d2/run.fits`` would write the same ``run_*`` files. They are refused
    before any work rather than renamed: an output name that does not follow from the input's
    name would be misread later.

    Raises
    ------
    ConfigError
        Naming every pair of colliding inputs.
    """
    unique, by_stem = {}, {}
    for path in map(Path, paths):
        key = os.path.abspath(path)
        if key not in unique:
            unique[key] = path
            by_stem.setdefault(fits_stem(path), []).append(path)
    clashes = [paths for paths in by_stem.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(" and ".join(map(str, paths)) for paths in clashes)
        raise ConfigError(f"inputs with the same name would write the same outputs: {listed}; "
                          "segment them into separate --out-dir folders (or rename one)")
    return list(unique.values())


class RunLog:
    """The per-run log of file statuses in an output directory (see the module docstring)."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / RUN_LOG

    def finished(self):
        """The files done in earlier runs: absolute input path -> outputs, when all of them exist."""
        done = {path: self._outputs(row) for path, row in self._last_rows().items() if row["status"] == "done"}
        return {path: outputs for path, outputs in done.items() if all(p.exists() for p in outputs)}

    def _outputs(self, row):
        return [self.path.parent / name for name in row["outputs"].split(";") if name]

    def _last_rows(self):
        if not self.path.is_file():
            return {}
        last = {}
        with open(self.path, newline="") as stream:
            for row in csv.DictReader(stream):
                if None not in row.values() and None not in row:  # a partial last row of a killed run
                    last[row["path"]] = row
        return last

    def record(self, path, status, reason="", outputs=()):
        """Append the row of one file (one ``write``; the header first when the log is new)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        row = (time.strftime("%Y-%m-%dT%H:%M:%S"), os.path.abspath(path), status, reason,
               ";".join(Path(p).name for p in outputs))
        writer.writerow(row)
        try:
            with open(self.path, "a+b") as stream:
                if stream.tell() == 0:
                    start = ",".join(LOG_COLUMNS) + "\n"
                else:  # after a partial row of a killed run, start a new line
                    stream.seek(stream.tell() - 1)
                    start = "" if stream.read(1) == b"\n" else "\n"
                stream.write((start + buffer.getvalue()).encode())
        except OSError:
            pass  # the directory takes no file: the file's own outputs failed alike and its line says why
