"""Runners that apply one job to many items, serially or on a Dask cluster, knowing nothing of the job.

A job is a picklable callable ``job(item) -> (result, failure)`` whose failure is a one-line
string (or None); the runners return the results and the failures, each in input order, and
call ``on_result(item, result, failure)`` in the calling process as each item finishes.
With Dask, the job runs on workers that share the file system of the inputs and outputs. An
item whose worker dies (killed, out of memory) is rerun on another worker by the scheduler (up
to its ``distributed.scheduler.allowed-failures``, 3 by default), one whose job raises is rerun
:data:`RETRIES` times; after that it becomes that item's failure line, and the others go on.
"""

import contextlib
import importlib

from tqdm import tqdm

from ccdseg.errors import ConfigError

#: Progress bar label.
_DESC = "ccdseg predict"
#: Reruns of an item whose job raised or whose worker died, beyond Dask's own rescheduling.
RETRIES = 2


def run_serial(job, items, *, progress=True, on_result=None):
    """Apply ``job`` to each item in turn; returns (results, failures)."""
    results, failures = [], []
    for item in tqdm(items, desc=_DESC, unit="file", disable=not progress or not items):
        result, failure = job(item)
        if on_result is not None:
            on_result(item, result, failure)
        if failure is None:
            results.append(result)
        else:
            failures.append(failure)
    return results, failures


def run_dask(job, items, *, workers=None, scheduler=None, progress=True, on_result=None):
    """Apply ``job`` to the items on a Dask cluster; returns (results, failures) in input order.

    Parameters
    ----------
    job : callable
        ``job(item) -> (result, failure)``, picklable (a module-level function or a partial of one).
    items : sequence
        The job's inputs (absolute paths, so that workers find them).
    workers : int, optional
        Start a local cluster of this many worker processes, one thread each (Dask limits
        each worker's BLAS/OpenMP, hence PyTorch's, threads to one).
    scheduler : str, optional
        Use the existing cluster of this scheduler address (``tcp://HOST:PORT``) instead.
        Exactly one of ``workers`` and ``scheduler`` must be given.
    progress : bool
        Show a progress bar over the finished items (on stderr).
    on_result : callable, optional
        ``on_result(item, result, failure)``, called here as each item finishes.

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
    results, failures = [None] * len(items), [None] * len(items)
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None))
            client = stack.enter_context(distributed.Client(cluster))
        else:
            client = stack.enter_context(_connect(distributed, scheduler))
        # pure=False: an item given twice is processed twice, as in the serial loop
        futures = {client.submit(job, item, pure=False, retries=RETRIES): index for index, item in enumerate(items)}
        finished = distributed.as_completed(futures)
        for future in tqdm(finished, total=len(futures), desc=_DESC, unit="file", disable=not progress or not items):
            index = futures[future]
            try:
                results[index], failures[index] = future.result()
            except Exception as error:  # noqa: BLE001 - e.g. KilledWorker: its workers died on every try
                lines = str(error).strip().splitlines() or [""]
                results[index], failures[index] = None, f"{items[index]}: {type(error).__name__}: {lines[0]}"
            if on_result is not None:
                on_result(items[index], results[index], failures[index])
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
