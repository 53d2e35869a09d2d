import hashlib
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tasks.store import EXAMPLES, LABELS, SCHEMAS, SLIS_LATEST, Store, StoreError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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


@pytest.mark.parametrize(
    "root",
    [
        "s3://AKIAKEY:S3CRET/with/slash@bucket/prefix?bogus=1",  # S3 secrets hold `/`
        "s3://bucket/prefix?token=S3CRET",
        "s3://bucket/prefix?session_token=S3CRET&bogus=1",
    ],
)
def test_a_store_that_cannot_open_names_its_uri_without_credentials(root: str):
    with pytest.raises(StoreError) as failed:
        Store(root)
    message = str(failed.value)
    assert "s3://" in message and "bucket/prefix" in message and "***" in message
    assert "S3CRET" not in message


def test_a_store_shows_its_uri_without_credentials():
    root = "s3://AKIAKEY:S3CRET@bucket/prefix?region=us-east-1&endpoint_override=127.0.0.1:9"
    store = Store(root)  # opening contacts nothing
    assert store.uri == root  # still what it connects with
    shown = "Store('s3://AKIAKEY:***@bucket/prefix?region=us-east-1&endpoint_override=127.0.0.1:9')"
    assert repr(store) == str(store) == shown


def test_cleanup_covers_the_latest_slis_and_spares_their_live_writers(store_root: str):
    store = Store(store_root)
    folder = Path(store.path(SLIS_LATEST))
    folder.mkdir(parents=True)
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the names write_file gives the latest SLIs of a flow while it writes them
    partial = folder / f".tmp-{host}-{dead}-flow=monitor.parquet"
    live = folder / f".tmp-{host}-{os.getppid()}-flow=retrain.parquet"
    for f in (partial, live):
        f.write_bytes(b"PAR1 half a file")
    assert store.remove_stale_temp_files() == 1
    assert not partial.exists() and live.exists()
    assert store.remove_stale_temp_files(max_age_s=0.0) == 1
    assert not live.exists()


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
            "run_id": ["ingest-1"] * n,
            "metadata": [None] * n,
        },
        schema=SCHEMAS[EXAMPLES],
    )


def test_a_file_written_before_a_column_existed_reads_it_as_null(store_root: str):
    store = Store(store_root)
    old_schema = pa.schema([f for f in SCHEMAS[LABELS] if f.name != "model_influenced"])
    row = {
        "event_id": "e1",
        "example_id": "x",
        "label": "1",
        "source_kind": "model",
        "source_name": "clf@1",
        "confidence": 0.9,
        "created_at": T0,
        "run_id": "r",
        "taxonomy_version": "v1",
    }
    folder = Path(store.path(LABELS)) / "date=2026-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=old_schema), folder / "part-old.parquet")
    store.write(LABELS, pa.Table.from_pylist([{**row, "event_id": "e2"}], schema=old_schema))
    got = store.read(LABELS, ["event_id", "model_influenced"]).to_pylist()
    assert sorted(r["event_id"] for r in got) == ["e1", "e2"]
    assert all(r["model_influenced"] is None for r in got)


def test_a_snapshot_from_arrow_ids_matches_one_from_lists_and_keeps_every_id(store_root: str):
    # training passes Arrow arrays (a million ids stay columnar); the id and the stored
    # rows must be exactly those of the same ids given as Python lists, in any order
    store = Store(store_root)
    ids = [f"ex{i:05d}" for i in range(70_000)]  # more than one 65,536-id hashing slice
    events = ["ev-b", "ev-a", "ev-é"]
    from_lists = store.write_snapshot(ids[::-1], events, purpose="train", run_id="r1")
    from_arrow = store.write_snapshot(
        pa.chunked_array([ids[40_000:], ids[:40_000]]), pa.array(events), purpose="x", run_id="r2"
    )
    assert from_arrow == from_lists
    expected = hashlib.sha256(
        "".join(f"example:{i}\n" for i in ids).encode()
        + "".join(f"label_event:{e}\n" for e in sorted(events)).encode()
    ).hexdigest()[:16]
    assert from_lists == expected
    rows = store.read("snapshots").to_pydict()
    assert rows["item_id"] == ids + sorted(events)
    assert set(rows["snapshot_id"]) == {expected} and set(rows["run_id"]) == {"r1"}


def test_an_examples_file_without_metadata_still_reads_with_the_full_schema(store_root: str):
    store = Store(store_root)
    old = _examples(2).drop_columns(["metadata"])  # as a version before metadata wrote it
    folder = Path(store.path(EXAMPLES)) / "date=2026-01-01"
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "part-old.parquet")
    assert "metadata" not in pq.read_schema(folder / "part-old.parquet").names
    new = _examples(1, offset=2).set_column(
        9, "metadata", pa.array([{"region": "north"}], SCHEMAS[EXAMPLES].field("metadata").type)
    )
    store.write(EXAMPLES, new, when=T0)

    got = store.read(EXAMPLES).to_pylist()
    by_id = {r["example_id"]: r["metadata"] for r in got}
    assert len(by_id) == 3
    assert by_id[new.column("example_id")[0].as_py()] == [("region", "north")]
    assert [by_id[e] for e in old.column("example_id").to_pylist()] == [None, None]
    streamed = [b.num_rows for b in store.iter_batches(EXAMPLES, ["example_id", "metadata"])]
    assert sum(streamed) == 3


def test_a_lean_stream_holds_one_file_while_its_reader_is_slow(store_root: str):
    # a scanner over the whole dataset read ahead of a slow reader (one that decodes and
    # predicts) without bound, whatever its read-ahead settings: at 1M images it held half
    # the matching rows of the store (bench/RESULTS.md, *Scale*). Lean reads file by file.
    store = Store(store_root)
    rng = np.random.default_rng(0)
    n_files, rows = 30, 64
    for i in range(n_files):  # 30 files of ~1 MiB of incompressible "images"
        t = _examples(rows, offset=rows * i)
        blobs = [rng.bytes(16_384) for _ in range(rows)]
        store.write(EXAMPLES, t.set_column(1, "image", pa.array(blobs, pa.binary())), when=T0)
    one_file = rows * 16_384
    every_id = store.read(EXAMPLES, ["example_id"]).column(0)
    wanted = every_id.take(pa.array(np.arange(0, len(every_id), 2))).combine_chunks()
    flt = pc.field("example_id").isin(wanted)

    held, got = [], []
    for batch in store.iter_batches(
        EXAMPLES, ["example_id", "image"], filter=flt, batch_size=16, lean=True
    ):
        time.sleep(0.02)  # the reader is slow: reading ahead has time to run
        held.append(pa.total_allocated_bytes())
        got.extend(batch.column(0).to_pylist())
    eager = store.read(EXAMPLES, ["example_id"], filter=flt).column(0).to_pylist()
    assert got == eager  # the same rows in the same order as one read of the dataset
    assert len(got) == n_files * rows // 2
    # all matching rows are 15 files' worth; at most the file being read and the next
    assert max(held) < 2.5 * one_file, (max(held), one_file)
