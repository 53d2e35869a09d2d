"""The monitor's comparison of the champion now with the champion at its gate: a drop is a
regression only beyond its tolerance and beyond noise; and what each outcome leaves."""

import math

import pytest

from configs.schema import load_config
from tasks.validation import Bounds, MonitorReport, regressions_since_gate

MONITOR = load_config().monitor  # tolerance: accuracy 0.02, macro-F1 0.02, ECE off
BASELINE = {"accuracy": 0.95, "macro_f1": 0.94, "ece": 0.03}


def test_a_drop_beyond_tolerance_and_noise_is_a_regression_in_words():
    now = {"accuracy": Bounds(0.85, 0.82, 0.88), "macro_f1": Bounds(0.93, 0.90, 0.96)}
    assert regressions_since_gate(now, BASELINE, MONITOR) == [
        "accuracy 0.9500 -> 0.8500 [0.8200, 0.8800]: worse by 0.1000, beyond the tolerance "
        "0.02 and beyond noise (upper bound 0.8800 < 0.9300)"
    ]


def test_a_drop_within_the_bounds_is_noise_however_large_the_estimate():
    # The estimate is 0.1 under the gate, but the upper bound still reaches 0.95 - 0.02.
    now = {"accuracy": Bounds(0.85, 0.70, 0.93), "macro_f1": Bounds(0.94, 0.90, 0.97)}
    assert regressions_since_gate(now, BASELINE, MONITOR) == []


def test_no_value_counts_as_worse_and_a_metric_without_baseline_or_tolerance_is_skipped():
    now = {
        "accuracy": Bounds(math.nan, 0.0, 1.0),
        "macro_f1": Bounds(0.2, 0.1, 0.3),
        "ece": Bounds(0.5, 0.4, 0.6),  # ECE's tolerance is off by default
    }
    found = regressions_since_gate(now, {"accuracy": 0.95}, MONITOR)  # no macro-F1 baseline
    assert [r.split(" ")[0] for r in found] == ["accuracy"]


def test_ece_regresses_when_its_lower_bound_rises_past_the_tolerance():
    cfg = load_config(overrides={"monitor.tolerance.ece": 0.05}).monitor
    worse = {"ece": Bounds(0.2, 0.15, 0.25)}
    within = {"ece": Bounds(0.1, 0.05, 0.15)}  # lower bound 0.05 under 0.03 + 0.05
    assert regressions_since_gate(worse, BASELINE, cfg) == [
        "ece 0.0300 -> 0.2000 [0.1500, 0.2500]: worse by 0.1700, beyond the tolerance 0.05 "
        "and beyond noise (lower bound 0.1500 > 0.0800)"
    ]
    assert regressions_since_gate(within, BASELINE, cfg) == []


def _report(action: str, **kw) -> MonitorReport:
    return MonitorReport("digits", "3", action, 150, {}, BASELINE, [], **kw)


@pytest.mark.parametrize(
    ("action", "healthy", "settled"),
    [
        ("ok", True, True),
        ("no_champion", False, True),
        ("rolled_back", False, True),
        ("champion_moved", False, True),
        ("gold_shifted", False, False),
        ("no_baseline", False, False),
        ("insufficient_gold", False, False),
        ("regressed_no_rollback", False, False),
    ],
)
def test_only_ok_vouches_for_the_champion_and_only_what_needs_no_person_is_settled(
    action, healthy, settled
):
    report = _report(action)
    assert (report.healthy, report.settled) == (healthy, settled)


def test_the_state_message_names_the_champion_the_run_leaves():
    assert _report("no_champion").state_message() == (
        "digits: no champion yet; nothing to monitor until a retrain promotes one"
    )
    rolled = MonitorReport(
        "digits", "3", "rolled_back", 150, {}, BASELINE, ["accuracy fell"], rolled_back_to="2"
    )
    assert rolled.state_message() == (
        "digits v3 regressed (accuracy fell); rolled back: the champion is now v2"
    )
    assert _report("ok").state_message() == "digits v3: ok"
    assert _report("no_baseline", detail="no gate tags").state_message() == (
        "digits v3: no_baseline: no gate tags"
    )
