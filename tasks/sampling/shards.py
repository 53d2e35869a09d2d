"""Scoring the train pool in shards: consecutive runs of `sampling.shard_rows` pool rows
(rows of the decoded cache), each scored batch by batch by one mapped Prefect task on
the task runner `sampling.runner` names (a process pool, a thread pool, or Dask), each
returning only what its strategy keeps (`tasks.sampling.candidates.Kept`, bounded by the
budget). This process merges them as they finish; a pool of one shard, or one worker,
is scored here, with no runner (as weak labeling's applier does)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from configs.sampling import SamplingConfig
from models import Classifier
from models.pool import ImagePool
from tasks.sampling.candidates import KeepPlan, Kept, jitter_at
from tasks.sampling.pool import scored_batches
from tasks.task_runners import cpus, worker_environment
from tasks.task_runners import shard_task_runner as task_runner
from tasks.training.decoded_cache import DecodedCache

log = logging.getLogger(__name__)


class SamplingRunnerError(RuntimeError):
    """The configured runner cannot run (e.g. Dask is asked for and not installed)."""


@dataclass(frozen=True)
class PoolShard:
    index: int
    start: int  # pool position of its first row
    rows: np.ndarray  # int64 cache rows, in pool order


@dataclass(frozen=True)
class ScoringJob:
    """What every shard of one pool shares: the cache's image file, the model, what to
    keep, and the generator state the pool's random numbers are drawn from. (Not the
    cache's index: a million ids would travel to every task.)"""

    images_path: str
    shape: tuple[int, int, int]  # (C, H, W)
    model: Classifier
    plan: KeepPlan
    rng_state: dict[str, Any]  # before the pool's first draw
    batch_rows: int
    torch_threads: int = 0  # a worker process's torch threads; 0 = leave as they are


def plan_shards(rows: np.ndarray, shard_rows: int) -> list[PoolShard]:
    """The pool's rows in consecutive shards of at most `shard_rows`."""
    return [
        PoolShard(i, start, rows[start : start + shard_rows])
        for i, start in enumerate(range(0, len(rows), shard_rows))
    ]


def score_shard(job: ScoringJob, shard: PoolShard) -> Kept:
    """Score one shard batch by batch; keep only what the job's strategy needs."""
    if job.torch_threads:
        torch.set_num_threads(job.torch_threads)
    rng = jitter_at(job.rng_state, shard.start)
    kept = Kept.empty(job.plan)
    k = job.plan.n_classes
    images = ImagePool(job.images_path, job.shape, shard.rows)
    for at, probs, emb in scored_batches(images, job.model, k, job.batch_rows):
        kept = kept.add_batch(job.plan, shard.start + at, probs, emb, rng.random(len(at)))
    return kept


@task(
    name="score-pool",
    task_run_name="score-pool-shard-{shard.index}",
    cache_policy=NO_CACHE,
)
def score_pool_shard(job: ScoringJob, shard: PoolShard) -> Kept:
    """One shard of the train pool scored, as a Prefect task (mapped over the shards)."""
    return score_shard(job, shard)


def score_pool(
    cache: DecodedCache,
    rows: np.ndarray,
    model: Classifier,
    plan: KeepPlan,
    rng: np.random.Generator,
    sampling: SamplingConfig,
) -> Kept:
    """What `plan` keeps of the pool `rows` (cache rows), scored shard by shard on
    `sampling.runner` (here when the pool is one shard or there is one worker). `rng`
    is not advanced (see `tasks.sampling.candidates.finish`)."""
    shards = plan_shards(rows, sampling.shard_rows)
    workers = min(sampling.workers or cpus(), len(shards))
    state = rng.bit_generator.state
    path, shape = str(cache.images_path), cache.shape
    job = ScoringJob(path, shape, model, plan, state, sampling.batch_rows)
    kept = Kept.empty(plan)
    if workers <= 1:
        for shard in shards:
            kept = kept.merge(score_shard(job, shard))
        return kept
    # workers get the model on the CPU, and a share of the CPUs each
    cpu_model = copy.deepcopy(model).cpu() if sampling.runner != "threads" else model
    threads = max(1, cpus() // workers) if sampling.runner != "threads" else 0
    job = ScoringJob(path, shape, cpu_model, plan, state, sampling.batch_rows, threads)
    log.info(
        "scoring %d pool rows in %d shards on %d %s workers",
        len(rows),
        len(shards),
        workers,
        sampling.runner,
    )
    for part in _on_runner(sampling, shards, workers, job):
        kept = kept.merge(part)
    return kept


def shard_task_runner(sampling: SamplingConfig, workers: int) -> Any:
    """The Prefect task runner `sampling.runner` names, with `workers` workers."""
    return task_runner(
        sampling.runner,
        workers,
        sampling.dask_address,
        setting="sampling.runner",
        error=SamplingRunnerError,
    )


def _on_runner(
    sampling: SamplingConfig, shards: list[PoolShard], workers: int, job: ScoringJob
) -> Iterator[Kept]:
    """One mapped `score-pool` task per shard; yields their results as they finish."""
    from prefect import unmapped
    from prefect.futures import as_completed

    with worker_environment(), shard_task_runner(sampling, workers) as runner:
        futures = runner.map(score_pool_shard, {"shard": shards, "job": unmapped(job)})
        for future in as_completed(futures):
            yield future.result()
