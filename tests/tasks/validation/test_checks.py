"""The check builders on bounds given by hand: what each outcome's rule says."""

import numpy as np

from tasks.validation.checks import class_counts_check, floor_check, slice_results
from tasks.validation.evidence import Bounds


def test_a_floor_check_says_which_bound_decided_it():
    passed = floor_check("accuracy_floor", Bounds(0.95, 0.92, 0.97), 0.9, True, 500)
    failed = floor_check("accuracy_floor", Bounds(0.85, 0.82, 0.88), 0.9, True, 500)
    waiting = floor_check("accuracy_floor", Bounds(0.92, 0.83, 0.97), 0.9, True, 50)
    assert (passed.status, passed.rule) == ("pass", "lower bound >= 0.9")
    assert (failed.status, failed.rule) == ("FAIL", "upper bound < 0.9")
    assert (waiting.status, waiting.rule) == ("undecided", "needs lower bound >= 0.9")
    assert waiting.labels_needed == 1013  # ceil(50 x (0.09 / 0.02)^2)
    # a ceiling (ECE) the other way round
    ece = floor_check("ece_ceiling", Bounds(0.02, 0.01, 0.04), 0.05, False, 500)
    assert (ece.status, ece.rule) == ("pass", "upper bound <= 0.05")
    # one class's recall: its own labels scale up to gold test labels in all
    cls = floor_check("recall[a]", Bounds(0.92, 0.83, 0.97), 0.9, True, 500, per=50)
    assert cls.labels_needed == 1013 * 500 // 50


def test_the_class_minimum_names_the_short_classes():
    y = np.array([0] * 10 + [1] * 3)
    check = class_counts_check(y, ("a", "b", "c"), 4, 0.95)
    assert check.status == "undecided" and check.value == 0
    assert check.rule == "needs >= 4 gold test labels of every class (too few: b, c)"


def test_a_slice_blocks_only_when_significantly_worse_and_is_never_undecided():
    groups = np.array(["x"] * 50 + ["y"] * 50, dtype=object)
    champ_ok = np.ones(100, bool)
    cand_ok = np.ones(100, bool)
    cand_ok[50:52] = False  # 2 of 50 lost on y: within noise
    results, checks = slice_results({"site": groups}, ("site",), cand_ok, champ_ok, 0.95, 0.01)
    assert [c.status for c in checks] == ["pass", "pass"]
    assert [r.group for r in results] == ["x", "y"] and not any(r.blocked for r in results)
    cand_ok[50:70] = False  # 20 of 50 lost on y: significantly worse
    results, checks = slice_results({"site": groups}, ("site",), cand_ok, champ_ok, 0.95, 0.01)
    assert [c.status for c in checks] == ["pass", "FAIL"] and results[1].blocked
    # no champion: the slices are reported, nothing is checked
    results, checks = slice_results({"site": groups}, ("site",), cand_ok, None, 0.95, 0.01)
    assert checks == [] and results[1].accuracy.value == 0.6
