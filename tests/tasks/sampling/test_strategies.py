"""Each strategy picks the rows it should on hand-built probabilities and embeddings."""

import numpy as np
import pytest

from tasks.sampling.strategies import STRATEGIES, select

# Four rows over three classes, built so the three uncertainty measures disagree:
#   row 0: confident; row 1: two-way tie (smallest margin);
#   row 2: nearly flat over three classes (highest entropy, least confident);
#   row 3: one strong class and two weak ones.
P = np.array(
    [
        [0.98, 0.01, 0.01],
        [0.50, 0.49, 0.01],
        [0.36, 0.32, 0.32],
        [0.60, 0.20, 0.20],
    ]
)
EMB = np.eye(4)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("least_confidence", [2, 1, 3, 0]),  # 1 - max p: .64, .50, .40, .02
        ("margin", [1, 2, 3, 0]),  # top1 - top2: .01, .04, .40, .97
        ("entropy", [2, 3, 1, 0]),
    ],
)
def test_uncertainty_strategies_rank_by_their_measure(strategy, expected):
    sel = select(strategy, P, EMB, 4, np.random.default_rng(0))
    assert sel.rows.tolist() == expected
    assert list(sel.scores) == sorted(sel.scores, reverse=True)


def test_margin_prefers_the_two_way_tie_to_the_flat_row():
    probs = np.array([[0.5, 0.49, 0.01], [0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])
    sel = select("margin", probs, np.eye(3), 1, np.random.default_rng(0))
    assert sel.rows.tolist() == [0]  # margin .01 beats .10
    assert select("entropy", probs, np.eye(3), 1, np.random.default_rng(0)).rows.tolist() == [1]


def _blobs(n_per: int = 40, centers: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, 8)) * 20
    which = np.repeat(np.arange(centers), n_per)
    return c[which] + rng.normal(size=(len(which), 8)), which


def test_kcenter_covers_every_cluster_before_any_twice():
    emb, which = _blobs()
    probs = np.full((len(emb), 3), 1 / 3)
    sel = select("kcenter", probs, emb, 5, np.random.default_rng(1))
    assert sorted(which[sel.rows].tolist()) == [0, 1, 2, 3, 4]
    # With labeled anchors in clusters 0 and 1, the first picks go to the other three.
    anchors = emb[[0, 40]]
    sel = select("kcenter", probs, emb, 3, np.random.default_rng(1), anchors=anchors)
    assert sorted(which[sel.rows].tolist()) == [2, 3, 4]


def test_class_balanced_gives_every_predicted_class_its_share():
    rng = np.random.default_rng(0)
    pred = np.array([0] * 90 + [1] * 8 + [2] * 2)  # class 2 is rarely predicted
    probs = np.full((100, 3), 0.05)
    probs[np.arange(100), pred] = 0.9
    probs += rng.uniform(0, 0.01, probs.shape)
    sel = select("class_balanced", probs, np.eye(100), 6, rng)
    assert sorted(probs[sel.rows].argmax(1).tolist()) == [0, 0, 1, 1, 2, 2]


def test_cluster_margin_picks_uncertain_examples_from_different_clusters():
    emb, which = _blobs(n_per=40, centers=4)
    rng = np.random.default_rng(3)
    probs = np.tile([0.98, 0.01, 0.01], (len(emb), 1))
    # blob 0 holds the 25 most uncertain examples; blobs 1-3 five each, a little less so
    probs[:25] = [0.500, 0.490, 0.010]  # margin 0.01
    rest = [i for b in (1, 2, 3) for i in range(40 * b, 40 * b + 5)]
    probs[rest] = [0.500, 0.480, 0.020]  # margin 0.02
    sel = select("cluster_margin", probs, emb, 4, rng)  # 10 x 4 = these 40 candidates
    assert set(sel.rows.tolist()) <= set(range(25)) | set(rest)
    assert sorted(which[sel.rows].tolist()) == [0, 1, 2, 3]  # one per cluster
    # plain margin takes all four from blob 0: uncertain, and redundant
    assert set(which[select("margin", probs, emb, 4, rng).rows].tolist()) == {0}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_is_reproducible_and_picks_distinct_rows(strategy):
    emb, _ = _blobs()
    probs = np.random.default_rng(5).dirichlet(np.ones(3), len(emb))
    a = select(strategy, probs, emb, 17, np.random.default_rng(9))
    b = select(strategy, probs, emb, 17, np.random.default_rng(9))
    assert a.rows.tolist() == b.rows.tolist() and len(set(a.rows.tolist())) == 17
    assert len(select(strategy, probs[:5], emb[:5], 17, np.random.default_rng(9))) == 5
