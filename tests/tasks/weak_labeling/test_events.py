"""Writing label-model events on a real store: a new event only where the word changed."""

import numpy as np
import pyarrow.compute as pc

from configs.schema import load_config
from tasks.store import LABELS, Store
from tasks.weak_labeling.events import RunLabels, write_label_model_events


def _straddling(n: int) -> np.ndarray:
    """Confidences whose float32 copy (what the log stores) and float64 value fall on either
    side of a 4th-place rounding boundary: x.xxxx5 less a hair."""
    cand = (np.arange(1000, 9000, 37) + 0.5) / 10_000 - 1e-12
    hit = [c for c in cand if round(float(np.float32(c)), 4) != round(float(c), 4)]
    assert len(hit) >= n
    return np.array(hit[:n])


def test_a_rerun_on_unchanged_data_writes_nothing_whatever_the_float_rounding(store_root):
    cfg = load_config(overrides={"store.root": store_root, "taxonomy.classes": ["a", "b", "c"]})
    store = Store(store_root)
    rng = np.random.default_rng(0)
    conf = np.concatenate([_straddling(5), rng.uniform(0.3, 1.0, 2000)])  # float64, as EM gives
    ids = [f"ex{i}" for i in range(len(conf))]
    labels = rng.integers(0, 3, len(conf))
    influenced = np.zeros(len(conf), bool)
    said = RunLabels(ids, labels, conf, influenced)
    first = write_label_model_events(store, cfg.taxonomy, "ds:abc", "r1", said)
    assert first.written == len(ids)
    again = write_label_model_events(store, cfg.taxonomy, "ds:abc", "r2", said)
    assert (again.written, again.unchanged) == (0, len(ids))
    assert store.read(LABELS, filter=pc.field("run_id") == "r2").num_rows == 0
    # a real change of confidence is still a new event
    moved = conf.copy()
    moved[:3] += 0.01
    moved_said = RunLabels(ids, labels, moved, influenced)
    third = write_label_model_events(store, cfg.taxonomy, "ds:abc", "r3", moved_said)
    assert (third.written, third.unchanged) == (3, len(ids) - 3)


def test_a_run_withdraws_the_weak_labels_it_does_not_give(store_root):
    cfg = load_config(overrides={"store.root": store_root, "taxonomy.classes": ["a", "b", "c"]})
    store = Store(store_root)
    ids = ["x", "y", "z"]
    labels, conf, infl = np.array([0, 1, 2]), np.array([0.9, 0.9, 0.9]), np.zeros(3, bool)
    write_label_model_events(
        store, cfg.taxonomy, "ds:old", "r1", RunLabels(ids, labels, conf, infl)
    )
    # Another set of functions labels x alike and y otherwise, and abstains on z.
    new = RunLabels(ids[:2], np.array([0, 2]), conf[:2], infl[:2])
    got = write_label_model_events(store, cfg.taxonomy, "ds:new", "r2", new)
    assert (got.written, got.unchanged, got.withdrawn) == (3, 0, 1)
    rows = store.read(LABELS, filter=pc.field("run_id") == "r2").to_pylist()
    by_id = {r["example_id"]: (r["label"], r["source_name"], r["confidence"] > 0) for r in rows}
    # x too: its label now comes from other functions (provenance is part of the word)
    assert by_id == {
        "x": ("a", "ds:new", True),
        "y": ("c", "ds:new", True),
        "z": (None, "ds:new", False),  # withdrawn: no label, confidence 0
    }
    again = write_label_model_events(store, cfg.taxonomy, "ds:new", "r3", new)
    assert (again.written, again.unchanged, again.withdrawn) == (0, 2, 0)
