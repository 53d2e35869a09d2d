"""Where ingest reads from: image folders (listed as sorted os.walk would, any file
name), manifests (every row a record or a named refusal, or one clear error) and the
bundled MNIST digits (semi-labeled, the same labels every run)."""

import os
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.ingest import (
    DataContractError,
    RawRecord,
    image_folder_records,
    ingest_records,
    manifest_records,
    open_source,
)
from tasks.store import EXAMPLES, LABELS, QUARANTINE, Store, content_id, gold_mask
from tests.conftest import png, write
from tests.tasks.ingest.conftest import ingest, ingest_cfg


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write(root / "img/a.png", png(1))
    write(root / "img/b.png", png(2))
    write(root / "img/c.png", png(3))
    write(root / "img/d.png", png(4))
    write(tmp_path / "outside.png", png(5))
    return root


MANIFEST_CSV = """path,label,annotator
img/a.png,3,alice
img/b.png,,alice
img/c.png,11,bob
img/d.png,  ,bob
img/missing.png,4,bob
../outside.png,1,eve
{abs_outside},2,eve
,5,eve
"""


def test_manifest_csv_rows_are_checked_one_by_one(store_root: str, manifest_dir: Path):
    text = MANIFEST_CSV.format(abs_outside=manifest_dir.parent / "outside.png")
    (manifest_dir / "manifest.csv").write_text(text)
    summary = ingest(store_root, manifest_records(manifest_dir / "manifest.csv", "path", "label"))
    assert summary.seen == 8
    assert summary.ingested == 4
    assert summary.quarantined == {
        "missing_file": 1,
        "path_outside_root": 2,
        "missing_path": 1,
        "label_not_in_taxonomy": 1,
    }
    assert (summary.labeled, summary.label_events) == (1, 1)
    q = Store(store_root).read(QUARANTINE)
    outside = q.filter(pc.field("reason") == "path_outside_root")
    assert outside.column("data").to_pylist() == [None, None]  # never read
    examples_q = q.filter(pc.field("record_kind") == "example")
    assert all(d.startswith("row ") for d in examples_q.column("detail").to_pylist())
    missing = q.filter(pc.field("reason") == "missing_file").to_pylist()[0]
    assert "#row=5" in missing["source_uri"] and "missing.png" in missing["detail"]


def test_manifest_parquet_without_label_column(store_root: str, manifest_dir: Path):
    import pyarrow as pa

    pq.write_table(pa.table({"file": ["img/a.png", "img/b.png"]}), manifest_dir / "m.parquet")
    summary = ingest(store_root, manifest_records(manifest_dir / "m.parquet", "file", "label"))
    assert (summary.seen, summary.ingested, summary.labeled) == (2, 2, 0)


def test_manifest_without_path_column_is_a_clear_error(manifest_dir: Path):
    pacsv.write_csv(__import__("pyarrow").table({"image": ["img/a.png"]}), manifest_dir / "m.csv")
    with pytest.raises(DataContractError, match=r"no column 'path'.*source.path_column"):
        _, records = manifest_records(manifest_dir / "m.csv", "path", "label")
        next(records)


def test_mnist5k_default_source_is_semi_labeled(store_root: str):
    cfg = ingest_cfg(store_root, **{"ingest.workers": 2})  # 5,000 records: the worker pool runs
    name, total, records = open_source(cfg.data_spec(), cfg.source)
    spec = cfg.data_spec()
    summary = ingest_records(
        Store(store_root), records, spec, cfg.ingest, source_name=name, run_id="r", total=total
    )
    assert (name, summary.seen, summary.ingested, summary.quarantined_total) == (
        "mnist5k",
        5000,
        5000,
        0,
    )
    store = Store(store_root)
    labels = store.read(LABELS, ["example_id", "label"])
    ids = labels.column("example_id").to_pylist()
    gold = gold_mask(ids, cfg.gold.fraction, cfg.gold.salt)
    all_ids = store.read(EXAMPLES, ["example_id"]).column("example_id").to_pylist()
    all_gold = gold_mask(all_ids, cfg.gold.fraction, cfg.gold.salt)
    # Every gold example keeps its label; outside gold, exactly 10 per class.
    assert gold.sum() == all_gold.sum() == summary.gold
    assert abs(all_gold.mean() - 0.2) <= 0.02
    non_gold = Counter(np.array(labels.column("label").to_pylist())[~gold].tolist())
    assert non_gold == {str(c): 10 for c in range(10)}
    assert summary.labeled == summary.gold + 100
    # The chosen labels are stable across runs.
    again_store = Store(store_root + "-again")
    cfg2 = ingest_cfg(store_root + "-again")
    _, _, records2 = open_source(cfg2.data_spec(), cfg2.source)
    spec = cfg2.data_spec()
    ingest_records(
        again_store, records2, spec, cfg2.ingest, source_name=name, run_id="r2", total=total
    )
    assert sorted(again_store.read(LABELS).column("event_id").to_pylist()) == sorted(
        labels_event_ids(store)
    )


def labels_event_ids(store: Store) -> list[str]:
    return store.read(LABELS, ["event_id"]).column("event_id").to_pylist()


# -- fuzzing the manifest reader: records (some rejected, named), or one clear error ----


_FIELD = st.sampled_from(
    ["a.png", "../a.png", "/etc/passwd", "", " ", "\x00", '"', '"a.png"', "x,y", "7", "é"]
) | st.text(max_size=6)


_ROW = st.lists(_FIELD, max_size=4).map(lambda f: ",".join(f))


_MANIFEST = st.tuples(
    st.sampled_from(["path,label", "path", "label,path", "label", "", "path,path"]),
    st.lists(_ROW, max_size=6),
    st.sampled_from(["\n", "\r\n", "\r"]),
).map(lambda t: t[2].join([t[0], *t[1]])) | st.text(max_size=300)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_MANIFEST, suffix=st.sampled_from([".csv", ".tsv"]))
def test_any_manifest_text_gives_records_or_a_clear_error(tmp_path, text, suffix):
    manifest = tmp_path / f"fuzz{suffix}"
    manifest.write_bytes(text.encode("utf-8" if len(text) % 3 else "latin-1", "replace"))
    (tmp_path / "a.png").write_bytes(b"not really a png")
    try:
        _, records = manifest_records(manifest, "path", "label")
        for rec in records:
            assert rec.source_uri
            if rec.error is not None:
                assert rec.error[0] in {
                    "missing_path",
                    "path_outside_root",
                    "missing_file",
                    "bad_path",
                    "malformed_row",
                }
                assert rec.error[1]
    except DataContractError as exc:
        assert str(manifest) in str(exc)


def _walk_records(base: Path) -> list[tuple]:
    """What image_folder_records yields, written the plain way: sorted os.walk."""
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(base).parts
        label = rel[0] if rel and rel[0] != "unlabeled" else None
        for name in sorted(f for f in filenames if not f.startswith(".")):
            uri = f"{Path(dirpath).as_uri()}/{quote(name, safe='')}"
            out.append(tuple(RawRecord(uri, None, label, None, os.path.join(dirpath, name))))
    return out


def test_a_file_name_that_is_not_utf8_is_ingested_with_its_bytes_quoted(
    store_root: str, tmp_path: Path
):
    base = tmp_path / "f"
    write(base / "0" / "good.png", png(1))
    bad = os.path.join(os.fsencode(base / "0"), b"bad\xff.png")  # not valid UTF-8
    with open(bad, "wb") as fh:
        fh.write(png(2))
    assert os.fsdecode(b"bad\xff.png") in os.listdir(base / "0")  # a surrogate escape

    summary = ingest(store_root, image_folder_records(base))

    assert (summary.seen, summary.ingested, summary.quarantined) == (2, 2, {})
    stored = {
        r["example_id"]: r["source_uri"] for r in Store(store_root).read(EXAMPLES).to_pylist()
    }
    assert set(stored) == {content_id(png(1)), content_id(png(2))}
    assert stored[content_id(png(2))].endswith("/0/bad%FF.png")
    assert "%FF" in stored[content_id(png(2))]
    assert stored[content_id(png(1))].endswith("/0/good.png")


def test_image_folder_records_follow_sorted_os_walk_across_listing_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("tasks.ingest.sources.LISTING_BLOCK", 3)  # many blocks a folder
    monkeypatch.setattr("tasks.ingest.sources.NAMES_PER_SLICE", 2)  # merged slice by slice
    base = tmp_path / "images"
    names = ["b.png", "a.png", "B.png", "a b.png", "é.png", "日本.png", "z~.png", "a.png.png"]
    names += [f"{i:03d}.png" for i in range(10, 0, -1)]
    for sub in ["unlabeled", "3", "3/deep", "10", "", ".hidden"]:
        for name in names:
            write(base / sub / name, b"x")
    write(base / "3" / ".DS_Store", b"x")
    os.symlink(base / "3", base / "linked")  # listed by os.walk as a folder, never entered
    (base / "empty").mkdir()

    total, records = image_folder_records(base)
    got = [tuple(r) for r in records]

    assert got == _walk_records(base.resolve())
    assert total == len(got) == 5 * len(names)
