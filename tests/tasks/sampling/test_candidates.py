"""What a strategy keeps of a pool scored in batches and shards finishes into exactly the
choice `strategies.select` makes on the whole pool's arrays with the same generator,
whatever the batch size and the order the shards finish in; and it stays bounded."""

import numpy as np
import pytest

from tasks.sampling.candidates import KeepPlan, Kept, finish, jitter_at, sampled, uniform_sample
from tasks.sampling.strategies import STRATEGIES, select

SCORED = [s for s in STRATEGIES if s != "random"]  # random keeps nothing: nothing scored


def _pool(n: int = 300, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities with exact ties (every fifth row repeats the one before) and
    clustered embeddings, as float32 like a model's."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k) * 0.5, n).astype(np.float32)
    probs[5::5] = probs[4::5][: len(probs[5::5])]
    centres = rng.normal(size=(6, 8)) * 10
    emb = (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, 8))).astype(np.float32)
    return probs, emb


def _streamed(plan, probs, emb, rng, anchors=None, shard_rows=70, batch=16, reverse=True):
    """Score the pool in shards of `shard_rows`, batches of `batch`, merge the shards
    (last first, as a runner may finish them), and finish."""
    state = rng.bit_generator.state
    parts = []
    for start in range(0, len(probs), shard_rows):
        draws = jitter_at(state, start)
        kept = Kept.empty(plan)
        for b in range(start, min(start + shard_rows, len(probs)), batch):
            end = min(b + batch, start + shard_rows, len(probs))
            pos = np.arange(b, end)
            kept = kept.add_batch(plan, pos, probs[pos], emb[pos], draws.random(len(pos)))
        parts.append(kept)
    merged = Kept.empty(plan)
    for part in reversed(parts) if reverse else parts:
        merged = merged.merge(part)
    return finish(plan, merged, rng, anchors), merged


@pytest.mark.parametrize("strategy", SCORED)
@pytest.mark.parametrize(("budget", "per_pick"), [(12, 3), (12, 30), (1, 10)])
def test_streamed_choice_equals_select_on_the_whole_pool(strategy, budget, per_pick):
    probs, emb = _pool()
    anchors = emb[:3] + 0.5 if strategy == "kcenter" else None
    plan = KeepPlan(strategy, budget, probs.shape[1], len(probs), per_pick)

    whole_rng, stream_rng = np.random.default_rng(7), np.random.default_rng(7)
    expected = select(
        strategy, probs, emb, budget, whole_rng, anchors, candidates_per_pick=per_pick
    )
    picked, kept = _streamed(plan, probs, emb, stream_rng, anchors)

    assert picked.selection.rows.tolist() == expected.rows.tolist()
    assert np.allclose(picked.selection.scores, expected.scores)
    assert np.array_equal(picked.probs, probs[expected.rows])
    # the generator is left where select leaves it: later streams draw the same
    assert stream_rng.random() == whole_rng.random()
    # bounded: at most the budget (per class), or candidates_per_pick x budget
    most = min(len(probs), per_pick * budget if plan.with_embeddings else budget)
    assert all(len(b.pos) <= most for b in kept.best)
    assert all((b.emb is not None) == plan.with_embeddings for b in kept.best if len(b.pos))


def test_the_batch_size_and_the_order_shards_finish_in_change_nothing():
    probs, emb = _pool(seed=3)
    plan = KeepPlan("cluster_margin", 9, probs.shape[1], len(probs), 4)
    runs = [
        _streamed(plan, probs, emb, np.random.default_rng(1), shard_rows=s, batch=b, reverse=r)[0]
        for s, b, r in [(300, 300, False), (50, 7, True), (1, 1, False), (128, 64, True)]
    ]
    assert all(r.selection.rows.tolist() == runs[0].selection.rows.tolist() for r in runs)


def test_kcenter_on_a_sample_keeps_a_uniform_sample_and_on_a_small_pool_all_of_it():
    probs, emb = _pool(n=300)
    sample = KeepPlan("kcenter", 5, probs.shape[1], 300, 10)  # 50 of 300
    whole = KeepPlan("kcenter", 5, probs.shape[1], 40, 10)  # 50 >= 40: every row
    assert (sample.keep, sample.draws) == (50, True)
    assert (whole.keep, whole.draws) == (40, False)
    _, kept = _streamed(sample, probs, emb, np.random.default_rng(0))
    assert len(kept.best[0].pos) == 50 and len(set(kept.best[0].pos.tolist())) == 50
    _, kept = _streamed(whole, probs[:40], emb[:40], np.random.default_rng(0))
    assert sorted(kept.best[0].pos.tolist()) == list(range(40))


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_kcenters_sample_drawn_before_scoring_is_what_the_scored_pool_keeps(chunk):
    probs, emb = _pool(n=300)
    plan = KeepPlan("kcenter", 5, probs.shape[1], 300, 10)  # a sample of 50
    anchors = emb[:3] + 0.5
    scored_rng, drawn_rng = np.random.default_rng(4), np.random.default_rng(4)
    picked, kept = _streamed(plan, probs, emb, scored_rng, anchors)

    pos, jitter = uniform_sample(plan, drawn_rng, chunk=chunk)
    assert drawn_rng.random() == np.random.default_rng(4).random()  # rng not advanced
    drawn_rng = np.random.default_rng(4)
    pos, jitter = uniform_sample(plan, drawn_rng, chunk=chunk)
    best = kept.best[0]
    assert pos.tolist() == sorted(best.pos.tolist()) and len(pos) == 50
    assert np.array_equal(jitter, best.jitter[np.argsort(best.pos)])
    from_sample = finish(plan, sampled(plan, pos, jitter, probs[pos], emb[pos]), drawn_rng, anchors)
    assert from_sample.selection.rows.tolist() == picked.selection.rows.tolist()
    assert np.array_equal(from_sample.probs, picked.probs)
    assert drawn_rng.random() == scored_rng.random()


def test_a_missing_shard_is_an_error_not_a_smaller_pool():
    probs, emb = _pool(n=50)
    plan = KeepPlan("margin", 5, probs.shape[1], 60, 10)  # the pool had 60 rows
    with pytest.raises(ValueError, match="kept 50 rows of a pool of 60"):
        _streamed(plan, probs, emb, np.random.default_rng(0))


def test_a_shards_random_numbers_are_the_pools_from_its_offset():
    rng = np.random.default_rng(42)
    whole = np.random.default_rng(42).random(100)
    assert np.array_equal(jitter_at(rng.bit_generator.state, 37).random(63), whole[37:])
