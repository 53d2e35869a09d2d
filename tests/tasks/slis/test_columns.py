"""The store's label state as Arrow columns, on the hand-built store of `conftest`."""

import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.schema import load_config
from configs.train import LabelsConfig
from tasks.slis.columns import (
    LabelColumns,
    last_per_key,
    latest_label_matrix,
    seconds_between,
    value_counts,
)
from tasks.store import EXAMPLES, SCHEMAS, Store
from tests.tasks.slis.conftest import NOW

H = 3600.0


@pytest.fixture
def columns(hand_store):
    store, a, g = hand_store
    data = load_config(overrides={"store.root": store.uri, "taxonomy.classes": ["0", "1"]})
    return LabelColumns.read(store, data.data_spec(), LabelsConfig(max_model_share=0.5)), a, g


def test_the_label_state_of_the_hand_store(columns):
    cols, a, g = columns
    assert cols.examples.num_rows == 12
    parts = cols.human.select(["example_id", "part"]).to_pylist()
    assert {r["example_id"]: r["part"] for r in parts} == {
        **{e: "" for e in a[:4]},
        **{e: "dev" for e in g},
    }
    assert sorted(cols.resolved.column("example_id").to_pylist()) == sorted(a[:6])
    assert sorted(cols.gold_human_ids.to_pylist()) == sorted(g)
    truth = {r["example_id"]: r["label"] for r in cols.gold_dev.to_pylist()}
    assert truth == {g[0]: "0", g[1]: "1"} and cols.gold_dev.num_rows == 2
    assert sorted(cols.labeled_ids().to_pylist()) == sorted(a[:6] + g)
    assert cols.labeled_by_kind() == {"human": 6, "label_model": 2}
    assert value_counts(cols.resolved.column("label")) == {"0": 3, "1": 3}


def test_times_ages_and_lags(columns):
    cols, _, _ = columns
    created = cols.created_at(pa.array(["h0", "no-such-event", "lm4"]))
    assert seconds_between(NOW, created).tolist() == [24 * H, 12 * H]
    # the gold labels came 1 h before ingest (bob's): counted 0
    lags = sorted(cols.ingest_to_first_label_s().tolist())
    assert lags == [0.0, 0.0, *[24 * H] * 4, 36 * H, 36 * H]


def test_answers_on_gold_dev_and_its_classes(columns):
    cols, a, g = columns
    # folder right on g0 and g1, bob right on g0 and wrong on g1
    assert sorted(cols.human_answers_right().tolist()) == [False, True, True, True]
    classes = cols.gold_dev_classes(pa.array([g[0], a[0], g[1], "unknown"]), ("0", "1"))
    assert classes.tolist() == [0, -1, 1, -1]


def test_an_example_stored_twice_counts_once_at_its_last_ingest(hand_store):
    store, a, _ = hand_store
    again = {"example_id": a[0], "image": b"x", "height": 1, "width": 1, "channels": 1}
    later = NOW - timedelta(hours=1)
    store.write(
        EXAMPLES,
        pa.Table.from_pylist([{**again, "ingested_at": later}], schema=SCHEMAS[EXAMPLES]),
    )
    cfg = load_config(overrides={"store.root": store.uri, "taxonomy.classes": ["0", "1"]})
    cols = LabelColumns.read(store, cfg.data_spec(), cfg.labels)
    assert cols.examples.num_rows == 12
    (row,) = cols.examples.filter(pa.compute.field("example_id") == a[0]).to_pylist()
    assert row["ingested_at"] == later


def test_last_per_key_keeps_each_keys_last_row_in_storage_order():
    t = pa.table({"k": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5]})
    assert last_per_key(t, "k").to_pydict() == {"k": ["a", "c", "b"], "v": [3, 4, 5]}
    unique = pa.table({"k": ["x", "y"], "v": [1, 2]})
    assert last_per_key(unique, "k") == unique


def test_seconds_between_arrays_and_a_time():
    ts = pa.array([NOW - timedelta(seconds=1.5), NOW], pa.timestamp("us", tz="UTC"))
    assert seconds_between(NOW, ts).tolist() == [1.5, 0.0]
    later = pa.array([NOW, NOW + timedelta(microseconds=1)], pa.timestamp("us", tz="UTC"))
    assert seconds_between(later, ts).tolist() == [1.5, 1e-6]
    assert np.asarray(seconds_between(NOW, ts[:0])).shape == (0,)


def test_the_latest_label_matrix_is_the_newest_runs(store_root):
    store = Store(store_root)
    assert latest_label_matrix(store) is None
    base = Path(store.base) / "label_matrices"
    for run, votes, age_s in (("run=old", [0], 100), ("run=new", [1], 0)):
        (base / run).mkdir(parents=True)
        pq.write_table(
            pa.table({"example_id": ["e"], "lf": pa.array(votes, pa.int16())}),
            base / run / "part-00000.parquet",
        )
        t = NOW.timestamp() - age_s
        os.utime(base / run, (t, t))
    assert latest_label_matrix(store).to_pydict() == {"example_id": ["e"], "lf": [1]}
