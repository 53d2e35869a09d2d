"""`ingest_records` killed with SIGKILL leaves a readable store; re-running it completes it."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from configs.schema import load_config
from tasks.ingest import image_folder_records, ingest_records
from tasks.store import EXAMPLES, LABELS, QUARANTINE, TMP_PREFIX, Store, StoreCounts

pytestmark = pytest.mark.slow

N_IMAGES = 3000
ROWS_PER_FILE = 100
N_TOP_LEVEL = 150  # unlabeled files at the folder's top level: read first
LABELED_PER_CLASS = 3  # then "0/".."9/": records 150..179, all inside the second chunk
N_LABELED = 10 * LABELED_PER_CLASS
GATE = 1000  # the child never gets past this record, so it cannot finish on its own
MIN_FILES_BEFORE_KILL = 5
SOURCE_NAME = "crash-test"

CHILD = textwrap.dedent(
    """
    import sys
    import time

    from configs.schema import load_config
    from tasks.ingest import image_folder_records, ingest_records
    from tasks.store import Store

    root, folder, gate = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = load_config(
        overrides={
            "store.root": root,
            "source.kind": "image_folder",
            "source.path": folder,
            "store.rows_per_file": %(rows)d,
            "ingest.workers": 1,
        }
    )
    total, records = image_folder_records(folder)


    def slowly():
        for i, rec in enumerate(records):
            if i >= gate:
                print("GATE", flush=True)
                while True:  # wait here to be killed
                    time.sleep(1)
            time.sleep(0.001)
            yield rec


    ingest_records(
        Store(root),
        slowly(),
        cfg.data_spec(),
        cfg.ingest,
        source_name=%(source)r,
        run_id="killed",
        total=total,
    )
    print("FINISHED", flush=True)
    """
) % {"rows": ROWS_PER_FILE, "source": SOURCE_NAME}


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _make_folder(root: Path) -> dict[str, str | None]:
    """3,000 unique PNGs; returns example id -> label."""
    expected: dict[str, str | None] = {}
    paths: list[tuple[Path, str | None]] = [
        (root / f"top{i:04d}.png", None) for i in range(N_TOP_LEVEL)
    ]
    paths += [
        (root / str(c) / f"l{j}.png", str(c)) for c in range(10) for j in range(LABELED_PER_CLASS)
    ]
    paths += [
        (root / "unlabeled" / f"u{i:04d}.png", None)
        for i in range(N_IMAGES - N_TOP_LEVEL - N_LABELED)
    ]
    pixels = np.random.default_rng(0).integers(0, 256, size=(N_IMAGES, 8, 8), dtype=np.uint8)
    for i, (path, label) in enumerate(paths):
        pixels[i, 0, :2] = (i % 256, i // 256)  # unique content per index
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _png(pixels[i])
        path.write_bytes(data)
        expected[hashlib.sha256(data).hexdigest()] = label
    assert len(expected) == N_IMAGES
    return expected


def _temp_files_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.startswith(TMP_PREFIX))


def test_sigkill_mid_ingest_leaves_readable_store_and_rerun_completes(tmp_path: Path):
    folder = tmp_path / "images"
    expected = _make_folder(folder)
    root = tmp_path / "store"
    script = tmp_path / "child_ingest.py"
    script.write_text(CHILD)
    out, err = tmp_path / "child.out", tmp_path / "child.err"

    # -- run the ingest in a child process and SIGKILL it part way through
    with out.open("wb") as fout, err.open("wb") as ferr:
        child = subprocess.Popen(
            [sys.executable, str(script), str(root), str(folder), str(GATE)],
            stdout=fout,
            stderr=ferr,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 120
        while len(Store(root).files(EXAMPLES)) < MIN_FILES_BEFORE_KILL:
            assert child.poll() is None, (
                f"child exited early ({child.returncode}):\n{err.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "the child wrote too few files in 120 s"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "FINISHED" not in out.read_text()

    # -- what the killed run left is complete and readable
    store = Store(root)
    files = store.files(EXAMPLES)
    assert MIN_FILES_BEFORE_KILL <= len(files) < GATE // ROWS_PER_FILE
    stored_before = 0
    for f in files:
        assert not Path(f).name.startswith(TMP_PREFIX)
        table = pq.read_table(f)
        assert table.num_rows == ROWS_PER_FILE  # whole chunks only, never a partial file
        stored_before += table.num_rows
    assert 0 < stored_before < N_IMAGES
    assert stored_before == ROWS_PER_FILE * len(files)
    ids_before = set(store.read(EXAMPLES, ["example_id"]).column(0).to_pylist())
    assert len(ids_before) == stored_before
    assert ids_before <= set(expected)

    # the labeled records sit in the second chunk, which was fully written before the
    # third examples file, so all their events are there, each pointing at a stored example
    events_before = store.read(LABELS, ["example_id", "label"]).to_pylist()
    assert len(events_before) == N_LABELED
    assert {e["example_id"] for e in events_before} <= ids_before
    assert all(expected[e["example_id"]] == e["label"] for e in events_before)
    assert len(store.files(LABELS)) == 1
    assert store.files(QUARANTINE) == []

    # -- a temp file left by an interrupted write is invisible to readers
    date_dir = Path(files[0]).parent
    garbage = date_dir / f"{TMP_PREFIX}part-interrupted.parquet"
    garbage.write_bytes(b"PAR1 half a parquet file")
    labels_garbage = Path(store.files(LABELS)[0]).parent / f"{TMP_PREFIX}part-x.parquet"
    labels_garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(garbage)  # a reader that did not skip it would fail
    assert _temp_files_on_disk(root)  # at least the two planted ones
    assert store.files(EXAMPLES) == files
    assert not any(Path(f).name.startswith(".") for f in store.files(LABELS))
    assert store.count(EXAMPLES) == stored_before
    assert store.counts() == StoreCounts(stored_before, N_LABELED, 0, 0)
    assert store.dataset(EXAMPLES).to_table(columns=["image"]).num_rows == stored_before
    # an independent dataset scan of the visible files works too
    scan = ds.dataset(files, format="parquet").to_table(columns=["example_id", "image"])
    assert scan.num_rows == stored_before
    assert all(
        hashlib.sha256(img).hexdigest() == i
        for i, img in zip(
            scan.column("example_id").to_pylist(), scan.column("image").to_pylist(), strict=True
        )
    )

    # -- re-running the ingest completes the store, adding nothing twice
    cfg = load_config(
        overrides={
            "store.root": str(root),
            "source.kind": "image_folder",
            "source.path": str(folder),
            "store.rows_per_file": ROWS_PER_FILE,
            "ingest.workers": 1,
        }
    )
    total, records = image_folder_records(folder)
    assert total == N_IMAGES
    spec = cfg.data_spec()
    summary = ingest_records(
        Store(root), records, spec, cfg.ingest, source_name=SOURCE_NAME, run_id="rerun", total=total
    )
    assert summary.seen == N_IMAGES
    assert summary.ingested == N_IMAGES - stored_before
    assert summary.duplicates == stored_before
    assert summary.ingested + summary.duplicates == N_IMAGES
    assert summary.quarantined == {}
    assert summary.label_events == 0
    assert summary.label_events_duplicate == N_LABELED

    assert _temp_files_on_disk(root) == []  # stale temp files were removed
    final = Store(root)
    assert final.counts() == StoreCounts(N_IMAGES, N_LABELED, 0, 0)
    ids = final.read(EXAMPLES, ["example_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == N_IMAGES
    assert set(ids) == set(expected)
    # chunks line up between runs, so every examples file holds exactly one chunk
    assert len(final.files(EXAMPLES)) == N_IMAGES // ROWS_PER_FILE
    assert all(pq.read_metadata(f).num_rows == ROWS_PER_FILE for f in final.files(EXAMPLES))
    events = final.read(LABELS, ["event_id", "example_id", "label"]).to_pylist()
    assert len({e["event_id"] for e in events}) == N_LABELED
    assert {e["example_id"]: e["label"] for e in events} == {
        i: lab for i, lab in expected.items() if lab is not None
    }
