"""Where a stage's shards run: the Prefect task runner a `runner` setting names
(`processes`, `threads` or `dask`), the environment its workers start with, and how many
CPUs this process may use. Weak labeling (`weak_labeling.runner`) and sampling's pool
scoring (`sampling.runner`) both run on it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


def cpus() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def shard_task_runner(
    runner: str,
    workers: int,
    dask_address: str | None,
    *,
    setting: str,
    error: type[Exception],
) -> Any:
    """The Prefect task runner `runner` names, with `workers` workers (a local Dask
    cluster of that many single-threaded processes, or the scheduler at `dask_address`).
    `setting` ("weak_labeling.runner") names the key in the error raised as `error`
    when prefect-dask is missing."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise error(
            f"{setting} is 'dask' but prefect-dask is not installed: "
            "pip install 'semilabel[dask]' (or choose runner 'processes')"
        ) from exc
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """The environment worker processes start with, restored afterwards.

    Without a configured `PREFECT_API_URL`, Prefect runs a temporary server inside this
    process; spawned workers would each start their own (seconds each) and record their
    task runs there, out of this flow run's sight. Workers inherit the environment, so
    it names ours. Dask's nanny also leaves OMP_NUM_THREADS=1 (and more) in this
    process's environment for good, which would slow every process started later in the
    run (ingest workers, training launched as a subprocess): the whole environment is
    put back as it was."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    saved = dict(os.environ)
    try:
        if not (os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()):
            with get_client(sync_client=True) as client:
                os.environ["PREFECT_API_URL"] = str(client.api_url)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
