"""Where ingest decodes and checks its batches (`ingest.runner`): in local processes (the
default), threads, or on a Dask cluster (a local one, or `ingest.dask_address`).

Each is a `concurrent.futures` executor over batches of the source's listing; the main
process keeps the order, the dedupe and the writes. Dask workers read the image files
themselves, so on a remote cluster they must see the same paths (shared storage).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

from configs.data import IngestConfig


class IngestRunnerError(RuntimeError):
    """The configured runner cannot start; the message says what to install or set."""


def open_executor(ing: IngestConfig) -> tuple[Executor, Callable[[bool], None]]:
    """(executor, close(wait)) for `ingest.runner`. `close(False)` cancels what is
    still queued."""
    if ing.runner == "threads":
        pool: Executor = ThreadPoolExecutor(ing.workers)
    elif ing.runner == "processes":
        pool = ProcessPoolExecutor(ing.workers, mp_context=get_context("spawn"))
    else:
        return _dask_executor(ing)

    def close(wait: bool) -> None:
        pool.shutdown(wait=wait, cancel_futures=not wait)

    return pool, close


def _dask_executor(ing: IngestConfig) -> tuple[Executor, Callable[[bool], None]]:
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise IngestRunnerError(
            "ingest.runner is 'dask' but dask.distributed is not installed: "
            "pip install 'semilabel[dask]' (or choose runner 'processes')"
        ) from exc
    cluster = None
    # Dask keeps its last 1,000 sent batches and transitions for debugging (the
    # low-level log); here each batch holds a task's 256 paths, which made 100 MiB of the
    # process at 1M images. The logs are sized when the client and scheduler start.
    with dask.config.set({"distributed.admin.low-level-log-length": 0}):
        if ing.dask_address:
            client = Client(ing.dask_address)
        else:
            cluster = LocalCluster(
                n_workers=ing.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            client = Client(cluster)
    executor = client.get_executor(pure=False)

    def close(wait: bool) -> None:
        executor.shutdown(wait=wait)
        client.close()
        if cluster is not None:
            cluster.close()

    return executor, close
