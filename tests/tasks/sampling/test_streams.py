"""Each stream's choice from its pool, on the decoded cache of a real store scored by a
real model: the train stream chooses exactly what `strategies.select` chooses on the
whole pool's arrays, for every strategy, however the pool is sharded; within its budget,
each example once, with the suggestion its stream allows (the model's class, none for
gold, the label under review); and the reason a short gold stream gives."""

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import torch

from configs.sampling import SamplingBudgetConfig, SamplingConfig
from tasks.sampling.pool import Pools, find_pools, score_rows
from tasks.sampling.review import find_label_issues
from tasks.sampling.scoring import NO_SCORER, Scorer
from tasks.sampling.strategies import STRATEGIES, select
from tasks.sampling.streams import choose_gold, choose_review, choose_train, gold_shortfall
from tasks.store import GoldSplit
from tasks.training.decoded_cache import decoded_cache
from tests.conftest import store_with_images

CLASSES = ("0", "1", "2")
SPLIT = GoldSplit(0.3, "gold-v1", 0.5)
NONE = pa.array([], pa.string())


def _plan(train=0, review=0, **more) -> SamplingConfig:
    return SamplingConfig(budget=SamplingBudgetConfig(train=train, review=review), **more)


@pytest.fixture
def pools(store_root, tmp_path) -> Pools:
    """40 real images in a store, decoded into a cache; the first six non-gold ones
    human-labeled (k-center's anchors), every non-gold one labeled by its class, but
    four labeled wrong."""
    store, ids = store_with_images(store_root, n=40)
    cache = decoded_cache(store, tmp_path / "cache", 28, 1)
    rest = [e for e, g in zip(ids, SPLIT.is_gold(ids), strict=True) if not g]
    truth = {e: str(i % 3) for i, e in enumerate(ids)}
    truth.update({e: str((int(truth[e]) + 1) % 3) for e in rest[6:22:4]})
    human = pa.array(rest[:6], pa.string())
    return find_pools(
        cache.example_ids,
        cache,
        split=SPLIT,
        human=human,
        labels=pa.table({"example_id": rest, "label": [truth[e] for e in rest]}),
        blocked={"train": human, "gold": NONE, "review": NONE},
        want_anchors=True,
        want_review=True,
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_train_stream_chooses_what_select_chooses_on_the_whole_pool(
    pools, small_model, strategy
):
    budget = 4
    # shards of 5 rows, in batches of 3, keeping 2 x budget candidates for kcenter and
    # cluster_margin (a sample of the pool: 8 of its rows)
    plan = _plan(train=budget, shard_rows=5, batch_rows=3, workers=1, candidates_per_pick=2)
    assert len(pools.train) > 2 * budget
    scorer = Scorer(small_model, "champ@v3")
    chosen = choose_train(pools, strategy, scorer, plan, CLASSES, np.random.default_rng(5))

    probs, emb = score_rows(pools.cache, pools.train, small_model, 3)  # the whole pool
    anchors = score_rows(pools.cache, pools.anchors, small_model, 3)[1]
    expected = select(
        strategy,
        probs,
        emb,
        budget,
        np.random.default_rng(5),
        anchors if strategy == "kcenter" else None,
        candidates_per_pick=2,
    )
    assert [r.example_id for r in chosen] == pools.example_ids(pools.train[expected.rows])
    assert [r.score for r in chosen] == pytest.approx(expected.scores.tolist(), abs=1e-6)
    assert [r.suggestion for r in chosen] == [CLASSES[c] for c in probs[expected.rows].argmax(1)]
    assert [r.suggestion_confidence for r in chosen] == pytest.approx(
        probs[expected.rows].max(1).tolist(), abs=1e-6
    )
    assert {(r.stream, r.strategy, r.model_version) for r in chosen} == {
        ("train", strategy, "champ@v3")
    }


def test_kcenter_scores_only_its_sample_and_margin_the_whole_pool(pools, small_model):
    seen = []  # images through the model's first layer
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    first = next(m for m in small_model.modules() if isinstance(m, layers))
    hook = first.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    plan = _plan(train=2, workers=1, candidates_per_pick=2)  # k-center: a sample of 4
    scorer, rng = Scorer(small_model, "v1"), np.random.default_rng(0)
    try:
        for strategy in ("kcenter", "margin"):
            seen.clear()
            assert len(choose_train(pools, strategy, scorer, plan, CLASSES, rng)) == 2
            scored = sum(seen)
            if strategy == "kcenter":  # the sample, and the anchors it starts from
                assert scored == 4 + len(pools.anchors) < len(pools.train)
            else:
                assert scored == len(pools.train)
    finally:
        hook.remove()


def test_the_train_stream_without_a_model_suggests_nothing_and_keeps_its_budget(pools):
    plan = _plan(train=4)
    chosen = choose_train(pools, "random", NO_SCORER, plan, CLASSES, np.random.default_rng(1))
    ids = [r.example_id for r in chosen]
    assert len(ids) == len(set(ids)) == 4 and set(ids) <= set(pools.example_ids(pools.train))
    assert all(r.suggestion is None and r.suggestion_confidence is None for r in chosen)
    assert all(r.model_version == "none" for r in chosen)
    again = choose_train(pools, "random", NO_SCORER, plan, CLASSES, np.random.default_rng(1))
    assert [r.example_id for r in again] == ids  # the same seed draws the same examples
    none = _plan(train=0)
    assert choose_train(pools, "random", NO_SCORER, none, CLASSES, np.random.default_rng(1)) == []


def test_the_gold_stream_draws_uniformly_without_a_suggestion(pools):
    gold = pools.gold.to_pylist()
    chosen = choose_gold(pools, 4, np.random.default_rng(0))
    ids = [r.example_id for r in chosen]
    assert len(set(ids)) == 4 and set(ids) <= set(gold)
    assert ids == [gold[i] for i in np.random.default_rng(0).permutation(len(gold))[:4]]
    assert {(r.stream, r.strategy, r.suggestion, r.model_version) for r in chosen} == {
        ("gold", "uniform", None, "none")
    }
    assert len(choose_gold(pools, 50, np.random.default_rng(0))) == len(gold)  # all there is
    assert choose_gold(pools, 0, np.random.default_rng(0)) == []


def test_the_review_stream_asks_about_the_labels_confident_learning_flags(pools, small_model):
    scorer = Scorer(small_model, "champ@v3")
    plan = _plan(review=5, batch_rows=4)
    rng = np.random.default_rng(9)
    chosen = choose_review(pools, scorer, plan, CLASSES, rng, seed=0)

    # the same, on the review pool's embeddings scored at once
    emb = score_rows(pools.cache, pools.review, small_model, 3)[1]
    given = pools.review_labels.to_pylist()
    labels = np.array([CLASSES.index(c) for c in given])
    issues = find_label_issues(emb, labels, 3, plan.review_folds, 0)
    expected = issues.rows[:5]
    assert [r.example_id for r in chosen] == pools.example_ids(pools.review[expected])
    assert [r.suggestion for r in chosen] == [given[i] for i in expected]  # the label
    assert [r.score for r in chosen] == sorted((r.score for r in chosen), reverse=True)
    assert chosen and {(r.stream, r.strategy, r.model_version) for r in chosen} == {
        ("review", "confident_learning", "champ@v3")
    }
    # a pool no larger than sampling.review_pool_max (20,000 by default, or exactly its
    # size) is considered whole: the same requests, and nothing drawn from the generator
    assert plan.review_pool_max == 20_000 > len(pools.review)
    exact = _plan(review=5, batch_rows=4, review_pool_max=len(pools.review))
    assert choose_review(pools, scorer, exact, CLASSES, rng, seed=0) == chosen
    assert rng.bit_generator.state == np.random.default_rng(9).bit_generator.state
    assert choose_review(pools, scorer, _plan(review=0), CLASSES, rng, seed=0) == []
    assert choose_review(pools, NO_SCORER, plan, CLASSES, rng, seed=0) == []


def _scored_rows(pools: Pools, model, run) -> tuple[object, np.ndarray]:
    """What `run()` returns, and the review-pool positions of every image the model
    scored meanwhile (counted at the classifier's head, matched by embedding)."""
    seen: list[torch.Tensor] = []
    hook = model.net.head.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        out = run()
    finally:
        hook.remove()
    every = score_rows(pools.cache, pools.review, model, 3)[1]  # (N, D), after the hook
    z = torch.cat(seen).numpy() if seen else np.zeros((0, every.shape[1]), np.float32)
    dist = ((z[:, None, :] - every[None, :, :]) ** 2).sum(-1)  # (scored, N)
    at = dist.argmin(1)
    assert np.allclose(z, every[at], atol=1e-5)  # each scored image is one of the pool's
    return out, at


def test_the_review_stream_scores_at_most_review_pool_max_rows_reproducibly(pools, small_model):
    scorer = Scorer(small_model, "champ@v3")
    n, cap = len(pools.review), 12
    assert n > cap >= 2 * len(CLASSES)
    plan = _plan(review=3, batch_rows=5, review_pool_max=cap)

    def review(seed):
        return choose_review(pools, scorer, plan, CLASSES, np.random.default_rng(seed), seed=0)

    chosen, scored = _scored_rows(pools, small_model, lambda: review(4))
    assert len(scored) == cap == len(set(scored.tolist()))  # cap rows, each once, in order
    assert scored.tolist() == sorted(scored.tolist())
    again, scored_again = _scored_rows(pools, small_model, lambda: review(4))
    assert again == chosen and np.array_equal(scored_again, scored)  # the same seed
    _, other = _scored_rows(pools, small_model, lambda: review(5))
    assert len(other) == cap and not np.array_equal(other, scored)  # another batch's sample

    # confident learning over exactly the rows scored: what the whole of a pool of
    # those rows alone gives
    sub = replace(
        pools, review=pools.review[scored], review_labels=pools.review_labels.take(pa.array(scored))
    )
    whole = choose_review(
        sub, scorer, _plan(review=3, batch_rows=5), CLASSES, np.random.default_rng(0), seed=0
    )
    assert chosen and chosen == whole
    assert {r.example_id for r in chosen} <= set(pools.example_ids(pools.review[scored]))


def _gold_only(**more) -> Pools:
    none = np.zeros(0, np.int64)
    return Pools(NONE, None, none, none, none, NONE, gold=more.pop("gold", NONE), **more)


def test_a_short_gold_stream_says_why_and_what_to_do():
    nothing = _gold_only(gold_total=0)
    assert gold_shortfall(10, 0, nothing, 0.2) == (
        "gold: none of the 10 asked for: the store has no gold examples (gold is 0.2 of "
        "the ingested images, by id hash); ingest images first"
    )
    all_labeled = _gold_only(gold_total=8, gold_skipped={"labeled": 8, "requested": 0})
    assert gold_shortfall(10, 0, all_labeled, 0.2) == (
        "gold: 0 of the 10 asked for; of the 8 gold examples, every one already has a human "
        "label: to grow gold, ingest more images (a share of 0.2 of new ones joins gold)"
    )
    some_open = _gold_only(
        gold=pa.array(["g"]), gold_total=8, gold_skipped={"labeled": 5, "requested": 2}
    )
    assert gold_shortfall(10, 1, some_open, 0.2) == (
        "gold: 1 of the 10 asked for; of the 8 gold examples, 5 already have a human label "
        "and 2 have a request still open (answer or import those first: `semilabel annotate "
        "import --file ...`)"
    )
