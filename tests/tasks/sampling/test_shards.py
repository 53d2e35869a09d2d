"""The train pool scored in shards: consecutive runs of rows that cover the pool once,
and the same kept candidates whether scored here or on a Prefect task runner
(processes and Dask against the whole stage: tests/tasks/sampling/test_run.py)."""

import numpy as np
import pytest

from configs.sampling import SamplingConfig
from tasks.sampling.candidates import KeepPlan
from tasks.sampling.shards import plan_shards, score_pool
from tasks.training.decoded_cache import decoded_cache
from tests.conftest import store_with_images


def test_shards_cover_the_pool_once_in_order():
    rows = np.array([3, 5, 8, 9, 12, 20, 21], np.int64)
    shards = plan_shards(rows, 3)
    assert [s.index for s in shards] == [0, 1, 2]
    assert [s.start for s in shards] == [0, 3, 6]
    assert np.array_equal(np.concatenate([s.rows for s in shards]), rows)
    assert plan_shards(rows[:0], 3) == []


@pytest.mark.parametrize("strategy", ["margin", "kcenter"])
def test_a_thread_runner_keeps_what_the_process_itself_keeps(
    prefect_api, store_root, tmp_path, small_model, strategy
):
    store, _ = store_with_images(store_root, n=30)
    cache = decoded_cache(store, tmp_path / "cache", 28, 1)
    rows = np.arange(len(cache.example_ids))
    plan = KeepPlan(strategy, 4, 3, len(rows), candidates_per_pick=2)
    here = SamplingConfig(shard_rows=7, batch_rows=3, workers=1)
    threads = SamplingConfig(shard_rows=7, batch_rows=3, workers=2, runner="threads")

    a = score_pool(cache, rows, small_model, plan, np.random.default_rng(3), here)
    b = score_pool(cache, rows, small_model, plan, np.random.default_rng(3), threads)
    assert a.seen == b.seen == 30
    (best_a,), (best_b,) = a.best, b.best
    assert np.array_equal(best_a.pos, best_b.pos)
    assert len(best_a.pos) == (8 if strategy == "kcenter" else 4)  # 2 x budget, or budget
    assert np.array_equal(best_a.jitter, best_b.jitter)
    assert np.allclose(best_a.probs, best_b.probs)
