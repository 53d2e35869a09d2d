"""Gold metrics against hand computation."""

import math

import numpy as np

from tasks.validation import expected_calibration_error, gold_metrics

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
