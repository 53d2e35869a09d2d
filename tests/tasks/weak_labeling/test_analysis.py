"""Weak-labeling analysis: which rows are gold, functions judged on them, votes combined
(a chunk of rows at a time), and the whole analysis on a real store."""

import numpy as np
import pyarrow.compute as pc

from tasks.weak_labeling import labeling_function
from tasks.weak_labeling.label_model import ABSTAIN
from tests.tasks.weak_labeling.conftest import store_overrides


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


def _lf(name, floor=None, model_backed=False):
    from tasks.weak_labeling import LabelingFunction

    return LabelingFunction(name, lambda b: None, accuracy_floor=floor, model_backed=model_backed)


def _stats(acc: float, covered: int) -> dict:
    return {
        "coverage": 0.5,
        "overlap": 0.25,
        "conflict": 0.125,
        "polarity": [0, 2],
        "gold_accuracy": acc,
        "gold_covered": covered,
    }


def test_a_function_below_its_floor_on_enough_gold_is_quarantined():
    from configs.weak_labeling import WeakLabelingConfig
    from tasks.weak_labeling.analysis import judge_functions

    wl = WeakLabelingConfig(accuracy_floor=0.6, min_gold_covered=20)
    functions = [_lf("good"), _lf("bad"), _lf("unjudged"), _lf("strict", floor=0.95)]
    stats = [_stats(0.9, 30), _stats(0.5, 30), _stats(0.1, 19), _stats(0.9, 20)]
    good, bad, unjudged, strict = judge_functions(functions, stats, ("a", "b", "c"), wl)
    assert (good.quarantined, good.reason) == (False, "")
    assert (good.coverage, good.overlap, good.conflict) == (0.5, 0.25, 0.125)
    assert good.polarity == ["a", "c"] and (good.gold_accuracy, good.gold_covered) == (0.9, 30)
    assert bad.quarantined and bad.reason == (
        "gold accuracy 0.500 on 30 gold rows is below its floor 0.6"
    )
    assert not unjudged.quarantined
    assert unjudged.reason == "only 19 gold rows covered: accuracy not judged"
    assert strict.quarantined and "below its floor 0.95" in strict.reason  # its own floor


def test_the_source_name_changes_with_the_functions_used_and_their_influence():
    from tasks.weak_labeling.analysis import label_source_name

    functions = [_lf("a"), _lf("b"), _lf("c")]
    name = label_source_name("dawid_skene", functions, [0, 2])
    assert name.startswith("dawid_skene:") and len(name) == len("dawid_skene:") + 8
    assert name == label_source_name("dawid_skene", [_lf("a"), _lf("x"), _lf("c")], [0, 2])
    assert name != label_source_name("dawid_skene", functions, [0, 1, 2])
    backed = [_lf("a"), _lf("b"), _lf("c", model_backed=True)]
    assert name != label_source_name("dawid_skene", backed, [0, 2])
    assert name.split(":")[1] == label_source_name("majority_vote", functions, [0, 2]).split(":")[1]


def test_majority_vote_is_judged_on_the_gold_rows_it_covers():
    from tasks.weak_labeling.analysis import majority_gold_accuracy

    L = np.array([[0, 0], [1, 1], [2, 0], [1, -1], [2, 2]], np.int16)
    y_gold = np.array([0, 0, 2, ABSTAIN, 2], np.int8)  # row 3 is not dev gold
    # rows 0, 1, 4 covered (row 2 ties): right on 0 and 4, wrong on 1
    assert majority_gold_accuracy(L, [0, 1], 3, y_gold) == 2 / 3
    assert majority_gold_accuracy(L, [0], 3, y_gold) == 3 / 4
    assert np.isnan(majority_gold_accuracy(L, [], 3, y_gold))


def test_combined_labels_leave_gold_out_and_say_where_a_model_voted(monkeypatch):
    import tasks.weak_labeling.analysis as analysis
    from tasks.weak_labeling.analysis import Combiner

    monkeypatch.setattr(analysis, "CHUNK_ROWS", 2)  # rows combined two at a time
    L = np.array([[0, 0, -1], [1, -1, 1], [2, 2, -1], [-1, -1, 0], [1, 1, 1]], np.int16)
    is_gold = np.array([False, True, False, False, True])
    y_gold = np.array([ABSTAIN, 1, ABSTAIN, ABSTAIN, 0], np.int8)
    combined = Combiner(keep=[0, 2], backed=[2], k=3, model=None).combine(L, is_gold, y_gold)
    np.testing.assert_array_equal(combined.rows, [0, 2, 3])  # gold rows 1 and 4 left out
    np.testing.assert_array_equal(combined.labels, [0, 2, 0])
    np.testing.assert_allclose(combined.conf, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(combined.influenced, [False, False, True])
    assert combined.non_gold_covered == 3
    assert (combined.gold_hits, combined.gold_judged) == (1, 2)  # right on 1, wrong on 4
    assert combined.gold_accuracy == 0.5

    nothing = Combiner(keep=[], backed=[], k=3, model=None).combine(L, is_gold, y_gold)
    assert len(nothing.rows) == 0 and nothing.rows.dtype == np.int64
    assert nothing.non_gold_covered == 0 and np.isnan(nothing.gold_accuracy)


@labeling_function(name="bar")
def _bar(batch):
    from tests.tasks.weak_labeling.test_run import bar_position

    return bar_position(batch)


@labeling_function(name="zero")
def _zero(batch):
    return np.zeros(len(batch), np.int16)


def test_analysing_a_real_store_writes_the_majority_vote_on_non_gold_rows(store_cfg):
    from configs.schema import load_config
    from tasks.store import LABELS, GoldSplit, Store
    from tasks.weak_labeling.analysis import analyse_and_combine, label_source_name
    from tasks.weak_labeling.applier import apply_in_shards

    cfg = load_config(
        overrides={
            **store_overrides(store_cfg),
            "weak_labeling.label_model": "majority_vote",
            "weak_labeling.min_gold_covered": 5,
            "weak_labeling.workers": 1,
        }
    )
    store, data = Store(cfg.store.root), cfg.data_spec()
    matrix = apply_in_shards(store, data, cfg.weak_labeling, [_bar, _zero], "m")
    summary = analyse_and_combine(store, data, cfg.weak_labeling, matrix, [_bar, _zero], "m")
    bar, zero = summary.functions
    assert not bar.quarantined and bar.gold_accuracy == 1.0
    assert zero.quarantined and zero.gold_accuracy < 0.6
    assert summary.label_model == "majority_vote" and summary.n_rows == 240
    assert summary.coverage == 1.0
    assert summary.gold_accuracy == summary.gold_accuracy_majority == 1.0

    events = store.read(LABELS).filter(pc.field("run_id") == "m").to_pylist()
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    non_gold = [
        e
        for e, g in zip(matrix.example_ids, split.is_gold(list(matrix.example_ids)), strict=True)
        if not g
    ]
    assert sorted(e["example_id"] for e in events) == sorted(non_gold)
    assert summary.events_written == len(events) and summary.labels_withdrawn == 0
    votes = dict(zip(matrix.example_ids, matrix.votes[:, 0], strict=True))
    assert all(e["label"] == str(votes[e["example_id"]]) for e in events)
    assert {e["confidence"] for e in events} == {1.0}  # one function: all its votes agree
    assert {e["source_name"] for e in events} == {
        label_source_name("majority_vote", [_bar, _zero], [0])
    }
