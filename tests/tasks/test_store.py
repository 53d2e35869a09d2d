import hashlib
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.store import (
    EXAMPLES,
    LABELS,
    SCHEMAS,
    Store,
    gold_mask,
    resolve_labels,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(rows: list[tuple]) -> pa.Table:
    """rows: (event_id, example_id, label, kind, name, confidence, minutes after T0)."""
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "event_id": cols[0],
            "example_id": cols[1],
            "label": cols[2],
            "source_kind": cols[3],
            "source_name": cols[4],
            "confidence": pa.array(cols[5], pa.float32()),
            "created_at": [T0 + timedelta(minutes=m) for m in cols[6]],
            "run_id": ["r"] * len(rows),
            "taxonomy_version": ["v1"] * len(rows),
        },
        schema=SCHEMAS[LABELS],
    )


def test_write_is_atomic_and_hive_partitioned(store_root: str):
    store = Store(store_root)
    path = store.write(EXAMPLES, _examples(3), when=T0)
    assert path is not None and "/examples/date=2026-01-01/part-" in path
    folder = Path(path).parent
    assert [p.name for p in folder.iterdir()] == [Path(path).name]  # no temp file left
    assert store.count(EXAMPLES) == 3
    assert (
        store.read(EXAMPLES, ["example_id", "date"]).column("date").to_pylist()
        == ["2026-01-01"] * 3
    )


def test_readers_skip_temp_files_and_cleanup_spares_live_writers(store_root: str):
    store = Store(store_root)
    store.write(EXAMPLES, _examples(2), when=T0)
    folder = Path(store.path(EXAMPLES)) / "date=2026-01-01"
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    partial = folder / f".tmp-{host}-{dead}-part-x.parquet"  # its writer has exited
    live = folder / f".tmp-{host}-{os.getppid()}-part-y.parquet"  # a running process
    unnamed = folder / ".tmp-part-z.parquet"  # no writer recorded: stale
    for f in (partial, live, unnamed):
        f.write_bytes(b"PAR1 half a file")
    assert store.count(EXAMPLES) == 2
    assert all(".tmp-" not in f for f in store.files(EXAMPLES))
    assert store.remove_stale_temp_files() == 2
    assert not partial.exists() and not unnamed.exists() and live.exists()
    assert store.remove_stale_temp_files(max_age_s=0.0) == 1  # old enough: gone too
    assert not live.exists()


def test_empty_store_reads_as_empty(store_root: str):
    store = Store(store_root)
    assert store.counts().examples == 0
    assert list(store.iter_batches(LABELS)) == []
    assert store.write(EXAMPLES, _examples(0)) is None


def test_iter_batches_streams_in_bounded_batches(store_root: str):
    store = Store(store_root)
    for i in range(4):
        store.write(EXAMPLES, _examples(500, offset=500 * i), when=T0)
    sizes = [b.num_rows for b in store.iter_batches(EXAMPLES, ["example_id"], batch_size=128)]
    assert sum(sizes) == 2000
    assert max(sizes) <= 128


def test_gold_membership_stable_and_matches_fraction():
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    first = gold_mask(ids, 0.2, "gold-v1")
    again = gold_mask(list(reversed(ids)), 0.2, "gold-v1")[::-1]
    assert np.array_equal(first, again)
    assert abs(first.mean() - 0.2) <= 0.02
    # Raising the fraction only adds members; a different salt draws a different set.
    assert np.all(gold_mask(ids, 0.3, "gold-v1")[first])
    assert (gold_mask(ids, 0.2, "other") != first).sum() > 500


def test_latest_human_label_wins_over_everything(store_root: str):
    store = Store(store_root)
    store.write(
        LABELS,
        _events(
            [
                ("e1", "x", "3", "human", "alice", 1.0, 0),
                ("e2", "x", "5", "human", "bob", 1.0, 10),  # a later correction
                ("e3", "x", "7", "label_model", "lm", 0.99, 20),
                ("e4", "y", "1", "label_model", "lm", 0.95, 0),
                ("e5", "z", "2", "label_model", "lm", 0.50, 0),  # below the floor
                ("e6", "w", "4", "rule", "lf_thin", 1.0, 0),  # raw rule votes are not labels
            ]
        ),
    )
    got = resolve_labels(store, confidence_floor=0.8, max_model_share=0.2).to_pylist()
    by_id = {r["example_id"]: r for r in got}
    assert set(by_id) == {"x", "y"}
    assert (by_id["x"]["label"], by_id["x"]["source_name"], by_id["x"]["event_id"]) == (
        "5",
        "bob",
        "e2",
    )
    assert (by_id["y"]["label"], by_id["y"]["source_kind"]) == ("1", "label_model")


def test_model_originated_labels_are_capped_most_confident_first(store_root: str):
    store = Store(store_root)
    rows = [(f"h{i}", f"h{i}", "0", "human", "ann", 1.0, 0) for i in range(8)]
    rows += [(f"m{i}", f"m{i}", "1", "model", "clf@3", 0.90 + i / 100, 0) for i in range(6)]
    store.write(LABELS, _events(rows))
    got = resolve_labels(store, confidence_floor=0.8, max_model_share=0.2)
    kinds = got.column("source_kind").to_pylist()
    assert kinds.count("human") == 8
    # share <= 0.2 -> at most 0.25 * 8 = 2 model labels: the two most confident.
    model_ids = sorted(
        i for i, k in zip(got.column("example_id").to_pylist(), kinds, strict=True) if k == "model"
    )
    assert model_ids == ["m4", "m5"]


def test_snapshot_id_depends_only_on_contents(store_root: str):
    store = Store(store_root)
    a = store.write_snapshot(["b", "a"], ["e1"], purpose="train", run_id="r1")
    b = store.write_snapshot(["a", "b", "a"], ["e1"], purpose="train", run_id="r2")
    c = store.write_snapshot(["a"], ["e1"], purpose="train", run_id="r3")
    assert a == b != c
    assert store.count_snapshot(a) == 3  # written once: 2 examples + 1 event
    assert store.count_snapshot(c) == 2


def test_every_file_is_valid_parquet_with_the_declared_schema(store_root: str):
    store = Store(store_root)
    store.write(EXAMPLES, _examples(5))
    (path,) = store.files(EXAMPLES)
    assert pq.read_schema(path).remove_metadata() == SCHEMAS[EXAMPLES]


def test_bad_uri_fails_with_the_uri_named():
    with pytest.raises(Exception, match="nosuchscheme://x"):
        Store("nosuchscheme://x")


def _examples(n: int, offset: int = 0) -> pa.Table:
    ids = [hashlib.sha256(str(offset + i).encode()).hexdigest() for i in range(n)]
    return pa.table(
        {
            "example_id": ids,
            "image": [b"img"] * n,
            "height": [28] * n,
            "width": [28] * n,
            "channels": [1] * n,
            "source": ["test"] * n,
            "source_uri": [f"mem://{i}" for i in ids],
            "ingested_at": [T0] * n,
        },
        schema=SCHEMAS[EXAMPLES],
    )
