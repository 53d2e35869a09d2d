"""Collapse report: each class's late share of pseudo-label weight against its prior."""

import pytest

from models.collapse import pseudo_label_shares


def _rows(per_class: list[list[float]]) -> list[dict[str, float]]:
    return [{f"pseudo_labels_class_{c}": v for c, v in enumerate(row)} for row in per_class]


def test_a_class_that_stops_being_predicted_is_collapsed_and_one_that_swallows_is_exploded():
    teacher = [{"loss_sup": 1.0}]  # teacher rows carry no pseudo-label counts
    early = _rows([[10, 10, 10, 10]] * 6)  # balanced early on: not in the last quarter
    late = _rows([[30, 8, 2, 0]] * 2)  # the last 2 of 8 student rows
    shares = pseudo_label_shares(teacher + early + late, [1, 1, 1, 1])
    assert [round(s.share, 4) for s in shares] == [0.75, 0.2, 0.05, 0.0]
    assert [s.expected for s in shares] == [0.25] * 4
    # collapsed below 0.25 / 3 = 0.0833; exploded above 0.75 (0.75 itself is not)
    assert [s.state for s in shares] == ["ok", "ok", "collapsed", "collapsed"]
    more = pseudo_label_shares(_rows([[31, 7, 2, 0]] * 4), [1, 1, 1, 1])
    assert more[0].state == "exploded" and more[0].share == pytest.approx(0.775)


def test_the_expected_share_is_the_labeled_prior_and_no_counts_say_nothing():
    shares = pseudo_label_shares(_rows([[10, 80, 10]]), [8, 1, 1])  # prior (0.8, 0.1, 0.1)
    assert [s.state for s in shares] == ["collapsed", "exploded", "ok"]
    assert [s.expected for s in shares] == pytest.approx([0.8, 0.1, 0.1])
    assert pseudo_label_shares(_rows([[0, 0, 0]]), [1, 1, 1]) == []
    assert pseudo_label_shares([{"loss_sup": 1.0}], [1, 1, 1]) == []
