"""Each flow's latest SLI rows: replaced by newer computations only, derived once from
the history when a store has none, and read without touching the history."""

from datetime import timedelta
from pathlib import Path

import pyarrow as pa

from tasks.slis.latest import read_latest, rebuild_latest, write_latest
from tasks.store import SCHEMAS, SLIS, Store, utcnow

T0 = utcnow()


def rows(flow: str, run: str, at_s: float, **values: float) -> pa.Table:
    """One computation of `flow`: a row per metric, all at T0 + at_s."""
    return pa.Table.from_pylist(
        [
            {"run_id": run, "flow": flow, "computed_at": T0 + timedelta(seconds=at_s)}
            | {"metric": m, "labels": "{}", "value": v, "threshold": None, "breached": None}
            for m, v in values.items()
        ],
        schema=SCHEMAS[SLIS],
    )


def _values(table: pa.Table) -> dict[tuple[str, str], float]:
    return {(r["flow"], r["metric"]): r["value"] for r in table.to_pylist()}


def test_a_newer_computation_replaces_a_flows_latest_and_an_older_one_does_not(tmp_path):
    store = Store(str(tmp_path / "store"))
    assert read_latest(store).num_rows == 0 and read_latest(store).schema == SCHEMAS[SLIS]
    write_latest(store, "retrain", rows("retrain", "r1", 10, label_coverage_ratio=0.5))
    write_latest(store, "monitor", rows("monitor", "m1", 0, gold_shift=0.0))
    write_latest(store, "retrain", rows("retrain", "r2", 20, label_sources=3.0))  # newer
    write_latest(store, "retrain", rows("retrain", "r0", 0, label_coverage_ratio=0.1))  # late
    assert _values(read_latest(store)) == {
        ("monitor", "gold_shift"): 0.0,
        ("retrain", "label_sources"): 3.0,
    }
    assert sorted(p.name for p in (Path(store.base) / "slis_latest").iterdir()) == [
        "flow=monitor.parquet",
        "flow=retrain.parquet",
    ]


def test_a_flow_name_is_quoted_in_its_file_name(tmp_path):
    store = Store(str(tmp_path / "store"))
    write_latest(store, "team/a b", rows("team/a b", "x", 0, run_success=1.0))
    assert [p.name for p in (Path(store.base) / "slis_latest").iterdir()] == [
        "flow=team%2Fa%20b.parquet"
    ]
    assert _values(read_latest(store)) == {("team/a b", "run_success"): 1.0}


def test_the_history_of_an_older_store_gives_each_flows_newest_run_once(tmp_path):
    store = Store(str(tmp_path / "store"))
    store.write(SLIS, rows("retrain", "r1", 0, label_coverage_ratio=0.2, label_sources=2.0))
    store.write(SLIS, rows("retrain", "r2", 10, label_coverage_ratio=0.4))
    store.write(SLIS, rows("monitor", "m1", 5, gold_shift=1.0))
    want = {("retrain", "label_coverage_ratio"): 0.4, ("monitor", "gold_shift"): 1.0}
    assert _values(rebuild_latest(store)) == want
    assert _values(read_latest(store)) == want
    store.fs.move(store.path(SLIS), f"{store.base}/history-moved-away")
    assert _values(read_latest(store)) == want  # from the files derived


def test_the_first_write_on_an_older_store_keeps_the_other_flows_latest(tmp_path):
    store = Store(str(tmp_path / "store"))
    store.write(SLIS, rows("monitor", "m1", 5, gold_shift=1.0))
    write_latest(store, "retrain", rows("retrain", "r1", 10, label_sources=1.0))
    store.fs.move(store.path(SLIS), f"{store.base}/history-moved-away")
    assert _values(read_latest(store)) == {
        ("monitor", "gold_shift"): 1.0,
        ("retrain", "label_sources"): 1.0,
    }
