import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.schema import ConfigError, load_config
from tasks.reports import gate_markdown
from tasks.validation import (
    GatePolicy,
    GoldMetrics,
    Thresholds,
    decide,
    expected_calibration_error,
    gold_metrics,
)

CLASSES = ("a", "b")


def test_gold_metrics_match_hand_computation():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    y = np.array([0, 1, 1, 0])  # predictions: a, a, b, a -> 3 of 4 right
    m = gold_metrics(probs, y, CLASSES)
    assert m.n == 4 and m.accuracy == 0.75
    assert m.confusion == [[2, 0], [1, 1]]
    assert m.per_class_recall == {"a": 1.0, "b": 0.5}
    assert m.per_class_precision == {"a": 2 / 3, "b": 1.0}
    f1_a, f1_b = 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5
    assert math.isclose(m.macro_f1, (f1_a + f1_b) / 2)
    # Bins (15): 0.9 -> bin 13, 0.6 -> bin 8, 0.7 -> bin 10, 0.8 -> bin 11; each alone.
    expected_ece = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8)) / 4
    assert math.isclose(m.ece, expected_ece)
    assert math.isclose(expected_calibration_error(probs, y), expected_ece)


def _metrics(
    acc: float, f1: float, ece: float = 0.02, recall: float = 0.95, n: int = 500
) -> GoldMetrics:
    return GoldMetrics(
        n, acc, f1, ece, {"a": recall, "b": 0.99}, {"a": 1.0, "b": 1.0}, [[1, 0], [0, 1]]
    )


POLICY = GatePolicy(
    min_gold_labels=200,
    floors=Thresholds(accuracy=0.9, macro_f1=0.9, ece=None),
    min_class_recall=0.8,
    max_regression=Thresholds(accuracy=0.01, macro_f1=None, ece=0.05),
)


def test_first_run_is_judged_on_floors_alone():
    report = decide(_metrics(0.93, 0.92), None, POLICY)
    assert report.passed and report.champion is None
    assert not any(c.name.endswith("_vs_champion") for c in report.checks)


def test_too_few_gold_labels_refuses_even_a_perfect_model():
    report = decide(_metrics(1.0, 1.0, n=150), None, POLICY)
    assert not report.passed
    assert [c.name for c in report.violations] == ["gold_labels"]
    assert "too few" in report.summary()


def test_every_violation_is_listed():
    champion = _metrics(0.97, 0.97, ece=0.01)
    report = decide(_metrics(0.85, 0.80, ece=0.2, recall=0.5), champion, POLICY, "3")
    names = {c.name for c in report.violations}
    assert names == {
        "accuracy_floor",
        "macro_f1_floor",
        "recall[a]",
        "accuracy_vs_champion",
        "ece_vs_champion",
    }
    md = gate_markdown(report)
    assert "REJECTED" in md and "v3" in md and md.count("**FAIL**") == 5


def test_small_drop_within_tolerance_passes():
    assert decide(_metrics(0.965, 0.95), _metrics(0.97, 0.97), POLICY).passed


def test_nan_metric_fails_closed():
    assert not decide(_metrics(float("nan"), 0.95), None, POLICY).passed


unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    acc=unit,
    f1=unit,
    ece=unit,
    recall=unit,
    n=st.integers(0, 2000),
    champ_acc=unit,
    champ_ece=unit,
    has_champion=st.booleans(),
    floor=unit,
    drop=st.floats(0.0, 0.2),
    rec_floor=unit,
    min_gold=st.integers(1, 1000),
)
def test_gate_never_passes_below_a_floor_or_beyond_a_drop(
    acc, f1, ece, recall, n, champ_acc, champ_ece, has_champion, floor, drop, rec_floor, min_gold
):
    policy = GatePolicy(
        min_gold_labels=min_gold,
        floors=Thresholds(accuracy=floor, macro_f1=floor, ece=None),
        min_class_recall=rec_floor,
        max_regression=Thresholds(accuracy=drop, macro_f1=None, ece=drop),
    )
    champion = _metrics(champ_acc, 0.9, ece=champ_ece) if has_champion else None
    report = decide(_metrics(acc, f1, ece=ece, recall=recall, n=n), champion, policy)
    if report.passed:
        assert n >= min_gold
        assert acc >= floor and f1 >= floor
        assert recall >= rec_floor and rec_floor <= 0.99
        if champion is not None:
            assert champ_acc - acc <= drop + 1e-12
            assert ece - champ_ece <= drop + 1e-12


def test_a_partial_gate_config_keeps_every_default_check(tmp_path):
    # A user tightens one number: every other check keeps its default.
    path = tmp_path / "tight.yaml"
    path.write_text("gate: {floors: {accuracy: 0.95}, max_regression: {accuracy: 0.02}}\n")
    policy = GatePolicy.from_config(load_config(path).gate)
    assert policy.floors == Thresholds(accuracy=0.95, macro_f1=0.9, ece=None)
    assert policy.max_regression == Thresholds(accuracy=0.02, macro_f1=0.01, ece=0.05)
    # ...so a candidate with a poor macro-F1 and a calibration collapse is still caught.
    report = decide(_metrics(0.97, 0.85, ece=0.2), _metrics(0.97, 0.97, ece=0.01), policy, "2")
    assert {c.name for c in report.violations} == {
        "macro_f1_floor",
        "macro_f1_vs_champion",
        "ece_vs_champion",
    }
    # An empty mapping on the command line is no way to drop checks either.
    emptied = GatePolicy.from_config(load_config(overrides={"gate.floors": {}}).gate)
    assert emptied.floors == Thresholds(accuracy=0.9, macro_f1=0.9, ece=None)


def test_null_disables_one_check_and_the_report_says_so():
    cfg = load_config(
        overrides={
            "gate.floors.macro_f1": None,
            "gate.max_regression.macro_f1": None,
            "gate.max_regression.ece": None,
        }
    )
    policy = GatePolicy.from_config(cfg.gate)
    champion = _metrics(0.95, 0.95, ece=0.01)
    report = decide(_metrics(0.95, 0.10, ece=0.5), champion, policy, "1")
    assert report.passed  # every check it would fail was switched off on purpose
    disabled = {c.name for c in report.disabled}
    assert disabled == {"macro_f1_floor", "macro_f1_vs_champion", "ece_vs_champion", "ece_ceiling"}
    assert gate_markdown(report).count("| disabled |") == 4
    assert "4 disabled by config" in report.summary()
    # with the defaults, the same candidate is rejected on exactly those checks
    strict = decide(
        _metrics(0.95, 0.10, ece=0.5), champion, GatePolicy.from_config(load_config().gate)
    )
    assert {c.name for c in strict.violations} == {
        "macro_f1_floor",
        "macro_f1_vs_champion",
        "ece_vs_champion",
    }


@pytest.mark.parametrize(
    "override",
    [
        {"gate.max_regression.accuracy": -0.01},
        {"gate.floors.accuracy": 1.5},
        {"gate.floors.ece": -0.1},
        {"monitor.tolerance.macro_f1": -0.02},
        {"gate.min_class_recall": 2},
    ],
)
def test_negative_tolerances_and_floors_outside_0_1_are_config_errors(override):
    with pytest.raises(ConfigError, match=next(iter(override))):
        load_config(overrides=override)


def test_a_class_absent_from_gold_fails_the_gate_and_is_named():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]] * 150)
    y = np.array([0, 1] * 150)  # class "c" has no gold example
    m = gold_metrics(probs, y, ("a", "b", "c"))
    assert m.absent_classes == ("c",)
    report = decide(m, None, POLICY)
    assert [c.name for c in report.violations] == ["recall[c]"]
    assert "absent from the gold test set" in report.violations[0].rule
    assert "Classes with no gold test example: c" in gate_markdown(report)


def test_too_few_gold_labels_says_how_many_more_are_needed():
    report = decide(_metrics(1.0, 1.0, n=150), None, POLICY)
    assert report.gold_labels_missing == 50
    assert "50 more human labels" in gate_markdown(report)
