"""Segment many files in parallel on a Dask cluster (``pip install 'ccdseg[dask]'``).

Each task runs :func:`ccdseg.pipeline.try_process_file` on one file, so the outputs and the
per-file failure lines are those of a serial run. A task ships only file names: each worker
process loads the model file on its first task and keeps it (:func:`ccdseg.predict.get_model`
caches models per process). Paths are made absolute before they are sent; on a remote cluster
the inputs, the output directory and the model file must be reachable under the same paths
from every worker (a shared file system).

Dask is imported only here, when asked for.
"""

import contextlib
import importlib
from pathlib import Path

from tqdm import tqdm

from ccdseg.errors import ConfigError
from ccdseg.pipeline import try_process_file


def process_files_dask(paths, out_dir, model=None, workers=None, scheduler=None, progress=True, **options):
    """Run :func:`ccdseg.pipeline.process_file` on many files on a Dask cluster.

    Parameters
    ----------
    paths : iterable of str or Path
        Input FITS files.
    out_dir : str or Path
        Output directory.
    model : Model, OnnxModel, str, path-like or None
        The model; workers load its file (a loaded model's ``path``), None is the shipped model.
    workers : int, optional
        Start a local cluster of this many worker processes, one thread each (Dask limits
        each worker's BLAS/OpenMP, hence PyTorch's, threads to one).
    scheduler : str, optional
        Use the existing cluster of this scheduler address (``tcp://HOST:PORT``) instead.
        Exactly one of ``workers`` and ``scheduler`` must be given.
    progress : bool
        Show a progress bar over the finished files (on stderr).
    **options
        Further keyword arguments of :func:`ccdseg.pipeline.process_file`.

    Returns
    -------
    results : list of FileResult
        One per file processed completely, in input order (with absolute paths).
    failures : list of str
        One line ``"PATH: reason"`` per failed file, in input order.

    Raises
    ------
    ConfigError
        Dask is not installed, ``workers`` is not a positive integer, both or neither of
        ``workers`` and ``scheduler`` are given, or the scheduler cannot be reached.
    """
    if (workers is None) == (scheduler is None):
        raise ConfigError("give exactly one of workers (a local cluster) and scheduler (an existing cluster)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    distributed = _import_distributed()
    paths = [Path(path).absolute() for path in paths]
    out_dir = Path(out_dir).absolute()
    if model is not None:
        model = Path(getattr(model, "path", model)).absolute()
    results, failures = [None] * len(paths), [None] * len(paths)
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None))
            client = stack.enter_context(distributed.Client(cluster))
        else:
            client = stack.enter_context(_connect(distributed, scheduler))
        # pure=False: a file given twice is processed twice, as in the serial loop
        futures = {client.submit(try_process_file, path, out_dir, model=model, pure=False, **options): index
                   for index, path in enumerate(paths)}
        finished = distributed.as_completed(futures)
        for future in tqdm(finished, total=len(futures), desc="ccdseg predict", unit="file",
                           disable=not progress or not paths):
            results[futures[future]], failures[futures[future]] = future.result()
    return [r for r in results if r is not None], [f for f in failures if f is not None]


def _connect(distributed, scheduler):
    # a malformed address is refused before a Client exists: a failed Client lingers at exit
    try:
        address = distributed.comm.resolve_address(scheduler)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"scheduler {scheduler!r} is not an address like tcp://HOST:PORT ({error})") from None
    try:
        return distributed.Client(address, timeout="20s")
    except OSError as error:
        raise ConfigError(f"scheduler {scheduler}: cannot connect ({error})") from None


def _import_distributed():
    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise ConfigError("--workers and --scheduler need Dask: pip install 'ccdseg[dask]'") from None
