"""Weak-labeling analysis without a store: which rows are gold, and votes combined
without a label model."""

import numpy as np

from tasks.weak_labeling.label_model import ABSTAIN


def test_gold_rows_and_labels_keep_only_dev_gold_human_labels():
    from tasks.store import DEV, TEST, GoldSplit
    from tasks.weak_labeling.analysis import gold_rows_and_labels
    from tasks.weak_labeling.applier import ExampleIds

    split = GoldSplit(0.5, "salt", 0.5)
    ids = [f"ex{i}" for i in range(40)]
    part = split.parts(ids)
    assert {DEV, TEST, ""} <= set(part)
    human = {e: i % 3 for i, e in enumerate(ids) if i % 4}  # some rows unlabeled
    is_gold, y = gold_rows_and_labels(ExampleIds(ids), split, human, 3)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(is_gold, part != "")
    dev = [p == DEV for p in part]
    expected = [human.get(e, ABSTAIN) if d else ABSTAIN for e, d in zip(ids, dev, strict=True)]
    np.testing.assert_array_equal(y, expected)


def test_combine_votes_without_a_model_is_the_majority_and_its_share():
    from tasks.weak_labeling.analysis import combine_votes

    used = np.array([[0, 0, 1], [2, -1, -1], [0, 1, -1], [-1, -1, -1]], np.int16)
    pred, conf = combine_votes(used, 3, None)
    np.testing.assert_array_equal(pred, [0, 2, ABSTAIN, ABSTAIN])
    np.testing.assert_allclose(conf, [2 / 3, 1.0, 0.5, 0.0])
    pred, conf = combine_votes(used[:, :0], 3, None)
    np.testing.assert_array_equal(pred, [ABSTAIN] * 4)
    np.testing.assert_array_equal(conf, [0.0] * 4)
