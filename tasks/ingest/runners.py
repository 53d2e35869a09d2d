"""Where ingest decodes and checks its batches (`ingest.runner`): in local processes (the
default), threads, or on a Dask cluster (a local one, or `ingest.dask_address`).

Each is a `concurrent.futures` executor over batches of the source's listing; the main
process keeps the order, the dedupe and the writes (`checked_batches`). Dask workers read
the image files themselves, so on a remote cluster they must see the same paths (shared
storage). A small ingest is checked in process, each batch as it is formed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context

from configs.data import IngestConfig
from tasks.images.check import read_and_check
from tasks.ingest.sources import RawRecord

MIN_RECORDS_FOR_POOL = 2_000  # below this, worker start-up costs more than it saves
BATCH_ROWS = 256  # records per worker task
MAX_BATCH_BYTES = 8 << 20  # bytes per worker task (a worker stops reading files there)
BATCHES_IN_FLIGHT_PER_WORKER = 8  # keeps workers busy while the main process writes


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


# -- checking a source's records, in order ------------------------------------------------


@dataclass(frozen=True)
class CheckedBatch:
    """Consecutive records of a source with their checks (`checks[i]` is the check of
    `records[i]`, see `tasks.images.check.check_image`) and their bytes (`datas[i]`: as
    the source gave them, or as read from the record's path)."""

    records: list[RawRecord]
    checks: list[tuple]
    datas: list[bytes | None]


class _Workers:
    """The executor of `ingest.runner`, closed in the background once every result is
    in (the workers exit while the last chunks are written), or cancelled on failure."""

    def __init__(self, ing: IngestConfig):
        self.executor, self._close = open_executor(ing)
        self._closing: threading.Thread | None = None

    def close_in_background(self) -> None:
        self._closing = threading.Thread(
            target=self._close, args=(True,), name="ingest-pool-shutdown"
        )
        self._closing.start()

    def close(self) -> None:
        if self._closing is not None:
            self._closing.join()
        else:
            self._close(False)


@dataclass(frozen=True)
class _ImageCheck:
    """How each batch is read and checked, and where: in process without `workers`."""

    max_pixels: int
    channels: tuple[int, ...] | None  # accepted channel counts; None: any (converted)
    workers: _Workers | None

    def submit(self, batch: list[RawRecord]) -> Future | tuple[list, list]:
        items = [
            None if r.error is not None else r.data if r.path is None else r.path for r in batch
        ]
        args = (items, self.max_pixels, self.channels, MAX_BATCH_BYTES)
        if self.workers is None:
            return read_and_check(*args)
        return self.workers.executor.submit(read_and_check, *args)


@contextmanager
def checked_batches(
    records: Iterator[RawRecord], ing: IngestConfig, total: int | None
) -> Iterator[Iterator[CheckedBatch]]:
    """The records read and checked in batches, in source order, on the `ingest.runner`
    (in process for a small ingest: fewer than MIN_RECORDS_FOR_POOL records or one
    worker). The workers are closed when the block ends."""
    use_workers = ing.runner != "processes" or (  # threads or a cluster: as asked
        ing.workers > 1 and (total is None or total >= MIN_RECORDS_FOR_POOL)
    )
    workers = _Workers(ing) if use_workers else None
    accepted = None if ing.convert != "off" else tuple(ing.channels)
    check = _ImageCheck(ing.max_pixels, accepted, workers)
    # In process, each batch is checked as it is formed and written before the next is
    # read; with workers, several batches are out while the main process writes.
    max_in_flight = BATCHES_IN_FLIGHT_PER_WORKER * ing.workers if workers else 1
    try:
        yield _in_order(_batches(records, BATCH_ROWS), check, max_in_flight)
    finally:
        if workers is not None:
            workers.close()


def _in_order(
    batches: Iterator[list[RawRecord]], check: _ImageCheck, max_in_flight: int
) -> Iterator[CheckedBatch]:
    """Each batch's results as they come in order, up to `max_in_flight` batches out."""
    pending: deque[tuple[list[RawRecord], Future | tuple[list, list]]] = deque()
    more = True
    while True:
        while more and len(pending) < max_in_flight:
            batch = next(batches, None)
            if batch is None:
                more = False
            else:
                pending.append((batch, check.submit(batch)))
        if not pending:
            return
        batch, job = pending.popleft()
        checks, read = job.result() if isinstance(job, Future) else job
        if len(checks) < len(batch):  # the worker stopped at its byte budget
            rest = batch[len(checks) :]
            pending.appendleft((rest, check.submit(rest)))
            batch = batch[: len(checks)]
        if check.workers is not None and not more and not pending:
            check.workers.close_in_background()  # every result is in
        datas = [r.data if d is None else d for r, d in zip(batch, read, strict=True)]
        yield CheckedBatch(batch, checks, datas)


def _batches(records: Iterator[RawRecord], max_rows: int) -> Iterator[list[RawRecord]]:
    """Consecutive records, at most `max_rows` and (for records that carry their bytes)
    about MAX_BATCH_BYTES at a time."""
    batch: list[RawRecord] = []
    size = 0
    for rec in records:
        batch.append(rec)
        if rec.data:
            size += len(rec.data)
        if len(batch) >= max_rows or size >= MAX_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
