"""Each stream's choice from its pool: within its budget, each example once, with the
suggestion its stream allows (the model's class, none for gold, the label under review),
and the reason a short gold stream gives."""

import numpy as np
import pytest

from tasks.sampling.pool import Pools, Scored
from tasks.sampling.scoring import NO_SCORER, Scorer
from tasks.sampling.streams import choose_gold, choose_review, choose_train, gold_shortfall

CLASSES = ("cat", "dog", "fox")


def _scored(ids: list[str], probs: np.ndarray, emb: np.ndarray) -> Scored:
    pool = Scored()
    pool.add(ids, probs.astype(np.float32), emb.astype(np.float32))
    return pool


def _pools(train: Scored | None = None, review: Scored | None = None, gold=(), **more) -> Pools:
    return Pools(train or Scored(), Scored(), review or Scored(), list(gold), **more)


def _train_pool() -> Scored:
    """Six examples; t2 and t4 are the ones the model is least sure of."""
    probs = np.array(
        [
            [0.90, 0.05, 0.05],
            [0.10, 0.80, 0.10],
            [0.40, 0.45, 0.15],  # t2: a near tie between dog and cat
            [0.05, 0.05, 0.90],
            [0.34, 0.33, 0.33],  # t4: the nearest tie
            [0.70, 0.20, 0.10],
        ]
    )
    return _scored([f"t{i}" for i in range(6)], probs, np.eye(6))


def test_the_train_stream_suggests_the_models_class_for_its_least_sure_examples(small_model):
    pools = _pools(train=_train_pool())
    scorer = Scorer(small_model, "champ@v3")  # the model whose scores the pool holds
    chosen = choose_train(pools, "margin", scorer, 2, CLASSES, np.random.default_rng(0))
    assert [r.example_id for r in chosen] == ["t4", "t2"]
    assert [(r.suggestion, r.suggestion_confidence) for r in chosen] == [
        ("cat", pytest.approx(0.34)),
        ("dog", pytest.approx(0.45)),
    ]
    assert {(r.stream, r.strategy, r.model_version) for r in chosen} == {
        ("train", "margin", "champ@v3")
    }
    assert chosen[0].score == pytest.approx(1 - (0.34 - 0.33))


def test_the_train_stream_without_a_model_suggests_nothing_and_keeps_its_budget():
    pools = _pools(train=_train_pool())
    chosen = choose_train(pools, "random", NO_SCORER, 4, CLASSES, np.random.default_rng(1))
    ids = [r.example_id for r in chosen]
    assert len(ids) == len(set(ids)) == 4 and set(ids) <= {f"t{i}" for i in range(6)}
    assert all(r.suggestion is None and r.suggestion_confidence is None for r in chosen)
    assert all(r.model_version == "none" for r in chosen)
    again = choose_train(pools, "random", NO_SCORER, 4, CLASSES, np.random.default_rng(1))
    assert [r.example_id for r in again] == ids  # the same seed draws the same examples
    assert choose_train(pools, "random", NO_SCORER, 0, CLASSES, np.random.default_rng(1)) == []
    assert choose_train(_pools(), "random", NO_SCORER, 4, CLASSES, np.random.default_rng(1)) == []


def test_the_gold_stream_draws_uniformly_without_a_suggestion():
    pools = _pools(gold=[f"g{i}" for i in range(10)])
    chosen = choose_gold(pools, 4, np.random.default_rng(0))
    ids = [r.example_id for r in chosen]
    assert len(set(ids)) == 4 and set(ids) <= set(pools.gold)
    assert ids == [pools.gold[i] for i in np.random.default_rng(0).permutation(10)[:4]]
    assert {(r.stream, r.strategy, r.suggestion, r.model_version) for r in chosen} == {
        ("gold", "uniform", None, "none")
    }
    assert len(choose_gold(pools, 50, np.random.default_rng(0))) == 10  # all there is
    assert choose_gold(pools, 0, np.random.default_rng(0)) == []


def test_the_review_stream_finds_the_labels_that_contradict_their_neighbours(small_model):
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10  # three well separated clusters, one per class
    truth = np.repeat(np.arange(3), 20)
    emb = centres[truth] + rng.normal(0, 1, (60, 3))
    ids = [f"r{i}" for i in range(60)]
    label_of = {e: CLASSES[c] for e, c in zip(ids, truth, strict=True)}
    flipped = {"r3": "fox", "r27": "cat"}  # two labels planted wrong
    label_of.update(flipped)
    pools = _pools(review=_scored(ids, np.full((60, 3), 1 / 3), emb))
    scorer = Scorer(small_model, "champ@v3")
    chosen = choose_review(pools, label_of, scorer, 5, CLASSES, folds=5, seed=0)
    assert {r.example_id for r in chosen[:2]} == set(flipped)  # most likely wrong first
    assert len(chosen) <= 5
    assert [r.score for r in chosen] == sorted((r.score for r in chosen), reverse=True)
    first = {r.example_id: r for r in chosen}
    assert first["r3"].suggestion == "fox"  # the label under review, to be checked
    assert {(r.stream, r.strategy, r.model_version) for r in chosen} == {
        ("review", "confident_learning", "champ@v3")
    }
    assert choose_review(pools, label_of, scorer, 0, CLASSES, folds=5, seed=0) == []


def test_a_short_gold_stream_says_why_and_what_to_do():
    nothing = _pools(gold_total=0)
    assert gold_shortfall(10, 0, nothing, 0.2) == (
        "gold: none of the 10 asked for: the store has no gold examples (gold is 0.2 of "
        "the ingested images, by id hash); ingest images first"
    )
    all_labeled = _pools(gold_total=8, gold_skipped={"labeled": 8, "requested": 0})
    assert gold_shortfall(10, 0, all_labeled, 0.2) == (
        "gold: 0 of the 10 asked for; of the 8 gold examples, every one already has a human "
        "label: to grow gold, ingest more images (a share of 0.2 of new ones joins gold)"
    )
    some_open = _pools(gold=["g"], gold_total=8, gold_skipped={"labeled": 5, "requested": 2})
    assert gold_shortfall(10, 1, some_open, 0.2) == (
        "gold: 1 of the 10 asked for; of the 8 gold examples, 5 already have a human label "
        "and 2 have a request still open (answer or import those first: `semilabel annotate "
        "import --file ...`)"
    )
