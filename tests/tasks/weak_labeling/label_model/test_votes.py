"""The vote-level label-matrix math: majority vote, per-function statistics, the
synthetic generator, and the matrix contract checked a chunk at a time."""

import math

import numpy as np
import pytest

from tasks.weak_labeling.label_model import (
    ABSTAIN,
    LabelMatrixError,
    lf_summary,
    majority_vote,
    one_rule_per_class_matrix,
    synthetic_label_matrix,
)

A = ABSTAIN

# 6 rows, 4 functions, k = 3; function 3 never votes, row 3 has no vote at all.
HAND = np.array(
    [
        [0, 0, A, A],
        [1, A, A, A],
        [0, 1, 2, A],
        [A, A, A, A],
        [2, A, 2, A],
        [A, 1, 0, A],
    ]
)


# --- majority vote -----------------------------------------------------------------------


def test_majority_vote_hand_cases_with_ties():
    assert majority_vote(HAND, 3).tolist() == [0, 1, A, A, 2, A]  # rows 2, 5 tie
    assert majority_vote(HAND, 3, tie_break="lowest").tolist() == [0, 1, 0, A, 2, 0]
    L = np.array([[2, 2, 1], [1, 2, 1], [A, 0, A], [0, 1, A], [1, 1, 0]])
    assert majority_vote(L, 3).tolist() == [2, 1, 0, A, 1]


def test_majority_vote_rejects_out_of_range_votes():
    with pytest.raises(LabelMatrixError, match="L\\[1, 0\\] = 3"):
        majority_vote(np.array([[0], [3]]), 3)
    with pytest.raises(LabelMatrixError, match="integer"):
        majority_vote(np.array([[0.0, 1.0]]), 3)
    with pytest.raises(ValueError, match="tie_break"):
        majority_vote(HAND, 3, tie_break="random")


# --- lf_summary ----------------------------------------------------------------------------


def test_lf_summary_hand_computed():
    y = np.array([0, 0, 1, 2, 2, 1])
    gold = np.array([True, True, True, True, False, False])  # rows 4 and 5 are not gold
    stats = lf_summary(HAND, 3, y_gold=y, gold_mask=gold)
    got = [
        (s["coverage"], s["overlap"], s["conflict"], s["polarity"], s["gold_covered"])
        for s in stats
    ]
    assert got == [
        # votes rows 0,1,2,4; others vote too on 0,2,4; a different class only on row 2
        (4 / 6, 3 / 6, 1 / 6, [0, 1, 2], 3),
        # rows 0,2,5; others on all three; different on rows 2 (0 and 2) and 5 (0)
        (3 / 6, 3 / 6, 2 / 6, [0, 1], 2),
        # rows 2,4,5; different on rows 2 and 5; row 4 agrees with function 0
        (3 / 6, 3 / 6, 2 / 6, [0, 2], 1),
        (0.0, 0.0, 0.0, [], 0),
    ]
    acc = [s["gold_accuracy"] for s in stats]
    # f0 on gold rows 0,1,2 votes 0,1,0 vs 0,0,1; f1 on rows 0,2: 0,1 right; f2 on row 2: 2≠1
    assert acc[:3] == [1 / 3, 1.0, 0.0]
    assert math.isnan(acc[3])
    assert [s["index"] for s in stats] == [0, 1, 2, 3]


def test_lf_summary_without_gold_and_gold_from_non_abstain():
    stats = lf_summary(HAND, 3)
    assert all(math.isnan(s["gold_accuracy"]) and s["gold_covered"] == 0 for s in stats)
    # without a mask, the gold rows are those with a label: rows 0 and 2 only
    stats = lf_summary(HAND, 3, y_gold=np.array([0, A, 0, A, A, A]))
    assert [s["gold_covered"] for s in stats] == [2, 2, 1, 0]
    assert [s["gold_accuracy"] for s in stats][:3] == [1.0, 0.5, 0.0]
    with pytest.raises(LabelMatrixError, match="not a class"):
        lf_summary(HAND, 3, y_gold=np.array([0, A, 0, A, A, A]), gold_mask=np.ones(6, bool))


# --- the generator -------------------------------------------------------------------------


def test_one_rule_per_class_matrix_fires_as_asked():
    L, y = one_rule_per_class_matrix(50_000, 5, 0.6, 0.03, seed=3)
    np.testing.assert_array_equal(L, one_rule_per_class_matrix(50_000, 5, 0.6, 0.03, seed=3)[0])
    assert L.shape == (50_000, 5)
    for c in range(5):
        assert set(np.unique(L[:, c])) == {A, c}  # rule c says c or nothing
        fires = L[:, c] == c
        assert fires[y == c].mean() == pytest.approx(0.6, abs=0.02)
        assert fires[y != c].mean() == pytest.approx(0.03, abs=0.005)
    with pytest.raises(ValueError, match="hit"):
        one_rule_per_class_matrix(10, 2, 1.5, 0.0, seed=0)


def test_synthetic_matrix_is_deterministic_and_matches_its_parameters():
    args = (50_000, 4, [0.9, 0.6], [0.8, 0.3], [0.4, 0.3, 0.2, 0.1])
    L, y = synthetic_label_matrix(*args, seed=7, copies=(1,))
    L2, y2 = synthetic_label_matrix(*args, seed=7, copies=(1,))
    np.testing.assert_array_equal(L, L2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(synthetic_label_matrix(*args, seed=8)[1], y)
    assert L.shape == (50_000, 3)
    np.testing.assert_array_equal(L[:, 2], L[:, 1])
    np.testing.assert_allclose(np.bincount(y) / len(y), [0.4, 0.3, 0.2, 0.1], atol=0.01)
    stats = lf_summary(L[:, :2], 4, y_gold=y)
    np.testing.assert_allclose([s["coverage"] for s in stats], [0.8, 0.3], atol=0.01)
    np.testing.assert_allclose([s["gold_accuracy"] for s in stats], [0.9, 0.6], atol=0.01)
    wrong = (L[:, 1] >= 0) & (L[:, 1] != y)
    # wrong votes spread evenly over the 3 other classes: shift (vote - y) mod 4 in {1, 2, 3}
    shares = np.bincount((L[wrong, 1] - y[wrong]) % 4, minlength=4) / wrong.sum()
    np.testing.assert_allclose(shares, [0, 1 / 3, 1 / 3, 1 / 3], atol=0.02)


# --- chunked work over large matrices ------------------------------------------------------


def test_an_entry_out_of_range_is_reported_at_its_row_in_a_later_chunk(monkeypatch):
    # the global `_chunks` reads, in the module that defines it
    import tasks.weak_labeling.label_model.votes as votes

    monkeypatch.setattr(votes, "CHUNK_ROWS", 4)
    L = np.zeros((10, 2), dtype=np.int16)
    L[6, 1], L[9, 0] = 5, 7
    with pytest.raises(LabelMatrixError, match=r"^2 entries .* first L\[6, 1\] = 5$"):
        majority_vote(L, 3)
