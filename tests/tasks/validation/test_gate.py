"""The gate on hand-built evidence: every outcome, every rule, with hand-computed counts."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.schema import ConfigError, load_config
from tasks.validation import (
    GatePolicy,
    GateReport,
    GoldEvidence,
    Thresholds,
    decide,
    proportion_bounds,
)
from tasks.validation.reports import gate_markdown

TEN = tuple(str(i) for i in range(10))
DEFAULT = GatePolicy.from_config(load_config().gate)


def probs(y: np.ndarray, pred: np.ndarray, k: int, right: float = 0.95) -> np.ndarray:
    """Probabilities that predict `pred` with confidence `right` (wrong ones at 0.6)."""
    p = np.full((len(y), k), 0.0)
    conf = np.where(pred == y, right, 0.6)
    p[np.arange(len(y)), pred] = conf
    rest = (1 - conf) / (k - 1)
    p += (p == 0) * rest[:, None]
    return p


def evidence(y, pred, classes, champion_pred=None, slices=None) -> GoldEvidence:
    k = len(classes)
    y = np.asarray(y)
    return GoldEvidence(
        classes,
        y,
        probs(y, np.asarray(pred), k),
        None if champion_pred is None else probs(y, np.asarray(champion_pred), k),
        slices or {},
    )


def balanced(n: int, k: int) -> np.ndarray:
    return np.arange(n) % k


def with_errors(y: np.ndarray, k: int, rows) -> np.ndarray:
    pred = y.copy()
    pred[list(rows)] = (y[list(rows)] + 1) % k
    return pred


ACCURACY_ONLY = GatePolicy(
    min_gold_labels=1,
    floors=Thresholds(accuracy=0.9, macro_f1=None, ece=None),
    min_class_recall=None,
    max_regression=Thresholds(accuracy=0.01, macro_f1=None, ece=None),
    bootstrap_samples=200,
)


def test_the_issue_user_110_gold_labels_109_right_is_promoted_by_default():
    # 1,000 images, whole gold pool labeled: 110 gold test labels over 10 classes, one wrong.
    y = balanced(110, 10)
    report = decide(evidence(y, with_errors(y, 10, [0]), TEN), DEFAULT)
    assert report.verdict == "passed", report.summary()
    acc = next(c for c in report.checks if c.name == "accuracy_floor")
    assert (round(acc.value, 4), round(acc.low, 4)) == (0.9909, 0.9576)  # 109/110
    assert report.labels_needed == 0


def test_three_outcomes_on_the_accuracy_floor():
    y = balanced(1000, 2)
    passed = decide(evidence(y, with_errors(y, 2, range(50)), ("a", "b")), ACCURACY_ONLY)
    assert passed.verdict == "passed"  # 950/1000: lower bound 0.9375 >= 0.9
    rejected = decide(evidence(y, with_errors(y, 2, range(150)), ("a", "b")), ACCURACY_ONLY)
    assert rejected.verdict == "rejected"  # 850/1000: upper bound 0.867 < 0.9
    assert [c.name for c in rejected.violations] == ["accuracy_floor"]
    y50 = balanced(50, 2)
    thin = decide(evidence(y50, with_errors(y50, 2, range(4)), ("a", "b")), ACCURACY_ONLY)
    assert thin.verdict == "undecided"  # 46/50 = 0.92: bounds [0.826, 0.972] straddle 0.9
    check = thin.undecided[0]
    b = proportion_bounds(46, 50, 0.95)
    assert (check.low, check.high) == (b.low, b.high)
    # The bound is 0.92 - low from the estimate and must be 0.02: (width / gap)^2 x 50.
    assert check.labels_needed == math.ceil(50 * ((0.92 - b.low) / 0.02) ** 2)
    assert thin.labels_needed == check.labels_needed - 50
    assert f"about {thin.labels_needed} more gold test labels" in thin.summary()


def test_a_regression_counts_only_beyond_noise_and_a_tie_is_never_one():
    y = balanced(200, 2)
    champion = y.copy()
    # McNemar-style regression: the champion right on all, the candidate wrong on 15.
    worse = decide(evidence(y, with_errors(y, 2, range(15)), ("a", "b"), champion), ACCURACY_ONLY)
    assert worse.verdict == "rejected"
    assert [c.name for c in worse.violations] == ["accuracy_vs_champion"]
    assert worse.mcnemar_p == pytest.approx(2 * 0.5**15)
    # Noise: 3 gained, 5 lost. Not a regression; on 200 labels not shown fine either.
    champ = with_errors(y, 2, range(3))
    cand = with_errors(y, 2, range(100, 105))
    noisy = decide(evidence(y, cand, ("a", "b"), champ), ACCURACY_ONLY)
    assert not noisy.violations
    assert noisy.verdict == "undecided" and noisy.mcnemar_p == pytest.approx(186 / 256)
    # The same models agreeing everywhere on 500 labels: non-inferiority shown, passed.
    y5 = balanced(500, 2)
    same = decide(evidence(y5, y5, ("a", "b"), y5), ACCURACY_ONLY)
    assert same.verdict == "passed" and not same.significant_gain


def test_a_class_absent_from_gold_makes_the_gate_undecided_with_the_labels_needed():
    y = balanced(300, 2)  # class "c" has no gold test example
    report = decide(evidence(y, y, ("a", "b", "c")), DEFAULT)
    assert report.verdict == "undecided" and not report.violations
    names = {c.name for c in report.undecided}
    assert names == {"labels_per_class", "recall[c]"}
    per_class = next(c for c in report.checks if c.name == "labels_per_class")
    # 4 labels of "c" at a share of 1/3 (uniform), most likely (95%): the smallest x with
    # x/3 - 1.645 sqrt(2x/9) >= 4 is 24 (x = 23: 7.67 - 3.72 = 3.95; x = 24: 8 - 3.80 = 4.2).
    assert per_class.labels_needed == 300 + 24
    assert "too few: c" in per_class.rule
    assert report.labels_needed >= 24
    md = gate_markdown(report, "NEXT")
    assert "Classes with no gold test example: c" in md and "**Next step:** NEXT" in md


def test_a_slice_regression_blocks_while_the_overall_comparison_passes():
    n = 1000
    y = balanced(n, 2)
    source = np.array(["camera-a"] * 900 + ["camera-b"] * 100, dtype=object)
    champion = with_errors(y, 2, range(40))  # wrong on 40 of camera-a
    candidate = with_errors(y, 2, range(900, 930))  # wrong on 30 of camera-b
    policy = GatePolicy(**{**ACCURACY_ONLY.__dict__, "slices": ("source",)})
    report = decide(evidence(y, candidate, ("a", "b"), champion, {"source": source}), policy)
    overall = next(c for c in report.checks if c.name == "accuracy_vs_champion")
    assert overall.status == "pass" and overall.value == pytest.approx(0.01)
    assert report.verdict == "rejected"
    assert [c.name for c in report.violations] == ["slice[source=camera-b]_accuracy_vs_champion"]
    b = next(s for s in report.slices if s.group == "camera-b")
    assert b.blocked and b.n == 100 and b.vs_champion.value == pytest.approx(-0.3)
    assert "| source=camera-b | 100 |" in gate_markdown(report)


def test_every_violation_is_listed():
    y = balanced(2000, 2)
    champion = y.copy()
    cand = with_errors(y, 2, list(range(0, 1000, 2))[:400])  # class a: 400 of 1000 wrong
    report = decide(evidence(y, cand, ("a", "b"), champion), DEFAULT, "3")
    names = {c.name for c in report.violations}
    assert {"accuracy_floor", "macro_f1_floor", "accuracy_vs_champion"} <= names
    assert "macro_f1_vs_champion" in names
    md = gate_markdown(report)
    assert "REJECTED" in md and "v3" in md and md.count("**FAIL**") == len(report.violations)


def test_a_partial_gate_config_keeps_every_default_check(tmp_path):
    path = tmp_path / "tight.yaml"
    path.write_text("gate: {floors: {accuracy: 0.95}, max_regression: {accuracy: 0.02}}\n")
    policy = GatePolicy.from_config(load_config(path).gate)
    assert policy.floors == Thresholds(accuracy=0.95, macro_f1=0.9, ece=None)
    assert policy.max_regression == Thresholds(accuracy=0.02, macro_f1=0.01, ece=0.05)
    assert (policy.confidence, policy.min_labels_per_class, policy.slices) == (
        0.95,
        4,
        ("source",),
    )
    emptied = GatePolicy.from_config(load_config(overrides={"gate.floors": {}}).gate)
    assert emptied.floors == Thresholds(accuracy=0.9, macro_f1=0.9, ece=None)


def test_null_disables_one_check_and_the_report_says_so():
    cfg = load_config(
        overrides={
            "gate.floors.macro_f1": None,
            "gate.max_regression.macro_f1": None,
            "gate.max_regression.ece": None,
            "gate.min_class_recall": None,
        }
    )
    y = balanced(2000, 2)
    cand = with_errors(y, 2, list(range(0, 2000, 2))[:60])  # class a: 60 wrong
    policy = GatePolicy.from_config(cfg.gate)
    report = decide(evidence(y, cand, ("a", "b"), y), policy, "1")
    disabled = {c.name for c in report.disabled}
    assert {"macro_f1_floor", "macro_f1_vs_champion", "ece_vs_champion", "ece_ceiling"} <= disabled
    assert gate_markdown(report).count("| disabled |") == len(disabled)
    assert report.verdict == "rejected"  # 60 lost pairs of 2000: beyond the 0.01 allowed
    assert [c.name for c in report.violations] == ["accuracy_vs_champion"]


@pytest.mark.parametrize(
    "override",
    [
        {"gate.max_regression.accuracy": -0.01},
        {"gate.floors.accuracy": 1.5},
        {"gate.floors.ece": -0.1},
        {"monitor.tolerance.macro_f1": -0.02},
        {"gate.min_class_recall": 2},
        {"gate.confidence": 1.0},
        {"gate.confidence": 0.4},
    ],
)
def test_out_of_range_settings_are_config_errors(override):
    with pytest.raises(ConfigError, match=next(iter(override))):
        load_config(overrides=override)


def test_too_few_gold_labels_is_undecided_and_says_how_many():
    y = balanced(20, 2)
    report = decide(evidence(y, y, ("a", "b")), DEFAULT)
    assert report.verdict == "undecided"
    gold = next(c for c in report.checks if c.name == "gold_labels")
    assert gold.status == "undecided" and gold.labels_needed == 30


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 400),
    wrong=st.floats(0.0, 0.5),
    champ_wrong=st.floats(0.0, 0.5),
    has_champion=st.booleans(),
    floor=st.floats(0.5, 0.99),
    drop=st.floats(0.0, 0.1),
    seed=st.integers(0, 1000),
)
def test_a_pass_always_has_every_lower_bound_clear_of_its_floor(
    n, wrong, champ_wrong, has_champion, floor, drop, seed
):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    cand = np.where(rng.random(n) < wrong, 1 - y, y)
    champ = np.where(rng.random(n) < champ_wrong, 1 - y, y) if has_champion else None
    policy = GatePolicy(
        min_gold_labels=1,
        floors=Thresholds(floor, None, None),
        min_class_recall=floor,
        max_regression=Thresholds(drop, None, None),
        bootstrap_samples=100,
    )
    report: GateReport = decide(evidence(y, cand, ("a", "b"), champ), policy)
    acc = (cand == y).mean()
    if report.passed:
        assert proportion_bounds(int((cand == y).sum()), n, 0.95).low >= floor
        assert acc >= floor
        for c in (0, 1):
            k, m = int(((cand == y) & (y == c)).sum()), int((y == c).sum())
            assert m > 0 and proportion_bounds(k, m, 0.95).low >= floor
        if champ is not None:
            assert report.gain.low >= -drop
            assert acc - (champ == y).mean() >= -drop
    if report.verdict == "rejected":
        assert any(c.high < c.threshold for c in report.violations)
