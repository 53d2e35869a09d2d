import os
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.schema import load_config
from tasks.images.check import check_image
from tasks.ingest import (
    DataContractError,
    RawRecord,
    image_folder_records,
    ingest_records,
    manifest_records,
    open_source,
)
from tasks.ingest.runners import open_executor
from tasks.ingest.writer import IdIndex
from tasks.memory import streaming_pool
from tasks.store import (
    EXAMPLES,
    LABELS,
    QUARANTINE,
    Store,
    content_id,
    gold_mask,
    resolve_labels,
)
from tests.conftest import jpeg, png, png_bomb, write


def _cfg(store_root: str, **overrides):
    return load_config(overrides={"store.root": store_root, "ingest.workers": 1, **overrides})


def _ingest(store_root: str, total_records, **overrides):
    cfg = _cfg(store_root, **overrides)
    total, records = total_records
    return ingest_records(
        Store(store_root), records, cfg, source_name="test", run_id="run-1", total=total
    )


@pytest.fixture
def messy_folder(tmp_path: Path) -> dict[str, bytes]:
    root = tmp_path / "images"
    files = {
        "0/a.png": png(1),
        "0/b.jpg": jpeg(2),
        "1/c.png": png(3),
        "unlabeled/d.png": png(4),
        "unlabeled/e.png": png(5),
        "f.png": png(6),  # top level: unlabeled
        "cat/g.png": png(9),  # label outside the taxonomy
        "1/truncated.png": png(7)[:200],
        "2/text.png": b"this is not an image at all",
        "2/empty.png": b"",
        "unlabeled/bomb.png": png_bomb(),
        "3/rgb.png": png(8, mode="RGB"),
        ".hidden/h.png": png(10),
        "0/.DS_Store": b"\x00\x01",
    }
    for rel, data in files.items():
        write(root / rel, data)
    return files


def test_every_bad_input_lands_in_quarantine_with_its_reason(
    store_root: str, messy_folder: dict[str, bytes], tmp_path: Path
):
    # convert off: an image of a channel count outside ingest.channels is quarantined
    summary = _ingest(
        store_root,
        image_folder_records(tmp_path / "images"),
        **{"ingest.convert": "off", "ingest.channels": [1]},
    )
    store = Store(store_root)

    assert summary.seen == 12  # hidden files and folders are not inputs
    assert summary.ingested == 7
    assert summary.quarantined == {
        "truncated_or_corrupt": 1,
        "not_an_image": 1,
        "empty_file": 1,
        "too_many_pixels": 1,
        "wrong_channels": 1,
        "label_not_in_taxonomy": 1,
    }
    assert (summary.labeled, summary.unlabeled, summary.label_events) == (3, 4, 3)

    q = {Path(r["source_uri"]).name: r for r in store.read(QUARANTINE).to_pylist()}
    assert set(q) == {"truncated.png", "text.png", "empty.png", "bomb.png", "rgb.png", "g.png"}
    for rel in ("1/truncated.png", "2/text.png", "2/empty.png", "unlabeled/bomb.png", "3/rgb.png"):
        row = q[Path(rel).name]
        assert row["record_kind"] == "example"
        assert row["data"] == messy_folder[rel]  # original bytes kept
        assert row["detail"]
    assert q["bomb.png"]["reason"] == "too_many_pixels"
    assert "50000x50000" in q["bomb.png"]["detail"]
    assert q["rgb.png"]["reason"] == "wrong_channels"
    # A label outside the taxonomy quarantines the label, not the image.
    g_id = content_id(messy_folder["cat/g.png"])
    assert (q["g.png"]["record_kind"], q["g.png"]["label"], q["g.png"]["data"]) == (
        "label",
        "cat",
        None,
    )
    assert q["g.png"]["example_id"] == g_id

    # Nothing good is lost: every valid image is stored byte for byte.
    stored = {r["example_id"]: r["image"] for r in store.read(EXAMPLES).to_pylist()}
    good = [
        "0/a.png",
        "0/b.jpg",
        "1/c.png",
        "unlabeled/d.png",
        "unlabeled/e.png",
        "f.png",
        "cat/g.png",
    ]
    assert stored == {content_id(messy_folder[k]): messy_folder[k] for k in good}
    labels = {
        (r["example_id"], r["label"], r["source_kind"]) for r in store.read(LABELS).to_pylist()
    }
    assert labels == {
        (content_id(messy_folder["0/a.png"]), "0", "human"),
        (content_id(messy_folder["0/b.jpg"]), "0", "human"),
        (content_id(messy_folder["1/c.png"]), "1", "human"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["dask", "threads"])
def test_every_runner_stores_exactly_what_the_default_stores(
    runner: str, messy_folder: dict[str, bytes], tmp_path: Path, monkeypatch
):
    """The same messy folder through a local Dask cluster (2 worker processes) or
    threads: the same examples, labels and quarantine rows as in process."""

    def contents(root: str) -> tuple:
        store = Store(root)
        examples = store.read(EXAMPLES, ["example_id", "source_uri"]).to_pylist()
        labels = store.read(LABELS, ["example_id", "label"]).to_pylist()
        quarantined = store.read(QUARANTINE, ["reason", "source_uri"]).to_pylist()
        key = lambda r: tuple(sorted((k, str(v)) for k, v in r.items()))  # noqa: E731
        return tuple(sorted(map(key, rows)) for rows in (examples, labels, quarantined))

    import tasks.ingest.writer as writer

    opened: list[str] = []

    def spy(ing):  # which executor the checks really ran on
        executor, close = open_executor(ing)
        opened.append(type(executor).__name__)
        return executor, close

    monkeypatch.setattr(writer, "open_executor", spy)
    base = str(tmp_path / "base")
    other = str(tmp_path / runner)
    first = _ingest(base, image_folder_records(tmp_path / "images"))
    second = _ingest(
        other,
        image_folder_records(tmp_path / "images"),
        **{"ingest.runner": runner, "ingest.workers": 2},
    )
    assert (second.ingested, second.quarantined) == (first.ingested, first.quarantined)
    # ingest.convert auto: the RGB image is stored (converted when decoded)
    assert second.ingested == 8 and sum(second.quarantined.values()) == 5
    assert contents(other) == contents(base)
    # in process for the default (12 files, 1 worker); the asked-for runner otherwise
    assert opened == [{"dask": "ClientExecutor", "threads": "ThreadPoolExecutor"}[runner]]


def test_second_ingest_adds_no_examples_no_events_no_quarantine_rows(
    store_root: str, messy_folder: dict[str, bytes], tmp_path: Path
):
    _ingest(store_root, image_folder_records(tmp_path / "images"))
    before = Store(store_root).counts()
    again = _ingest(store_root, image_folder_records(tmp_path / "images"))
    assert (again.ingested, again.label_events, again.duplicates) == (0, 0, 8)
    assert again.label_events_duplicate == 4  # 3/rgb.png too (ingest.convert auto)
    assert Store(store_root).counts() == before


def test_same_image_twice_in_one_run_is_one_example(store_root: str, tmp_path: Path):
    write(tmp_path / "f/0/a.png", png(1))
    write(tmp_path / "f/unlabeled/copy.png", png(1))
    summary = _ingest(store_root, image_folder_records(tmp_path / "f"))
    assert (summary.ingested, summary.duplicates, summary.label_events) == (1, 1, 1)


def test_relabel_in_a_new_folder_is_a_new_event(store_root: str, tmp_path: Path):
    write(tmp_path / "v1/3/a.png", png(1))
    write(tmp_path / "v2/5/a.png", png(1))
    _ingest(store_root, image_folder_records(tmp_path / "v1"))
    second = _ingest(store_root, image_folder_records(tmp_path / "v2"))
    assert (second.ingested, second.label_events) == (0, 1)
    assert sorted(Store(store_root).read(LABELS).column("label").to_pylist()) == ["3", "5"]


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
    summary = _ingest(store_root, manifest_records(manifest_dir / "manifest.csv", "path", "label"))
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
    summary = _ingest(store_root, manifest_records(manifest_dir / "m.parquet", "file", "label"))
    assert (summary.seen, summary.ingested, summary.labeled) == (2, 2, 0)


def test_manifest_without_path_column_is_a_clear_error(manifest_dir: Path):
    pacsv.write_csv(__import__("pyarrow").table({"image": ["img/a.png"]}), manifest_dir / "m.csv")
    with pytest.raises(DataContractError, match=r"no column 'path'.*source.path_column"):
        _, records = manifest_records(manifest_dir / "m.csv", "path", "label")
        next(records)


def test_check_image_decides_from_header_before_decoding():
    assert check_image(png_bomb(), 1_000_000, (1,))[:2] == ("reject", "too_many_pixels")
    ok = check_image(png(1, size=20), 1_000_000, (1,))
    assert ok[0] == "ok" and ok[2:] == (20, 20, 1, "L", False)
    assert check_image(png(1, mode="RGBA"), 1_000_000, (3, 4))[4] == 4


def test_mnist5k_default_source_is_semi_labeled(store_root: str):
    cfg = _cfg(store_root, **{"ingest.workers": 2})  # 5,000 records: the worker pool runs
    name, total, records = open_source(cfg)
    summary = ingest_records(
        Store(store_root), records, cfg, source_name=name, run_id="r", total=total
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
    cfg2 = _cfg(store_root + "-again")
    _, _, records2 = open_source(cfg2)
    ingest_records(again_store, records2, cfg2, source_name=name, run_id="r2", total=total)
    assert sorted(again_store.read(LABELS).column("event_id").to_pylist()) == sorted(
        labels_event_ids(store)
    )


def labels_event_ids(store: Store) -> list[str]:
    return store.read(LABELS, ["event_id"]).column("event_id").to_pylist()


def test_a_correction_back_and_forth_in_a_manifest_is_three_events(store_root: str, tmp_path):
    # The same source says 3, then 5, then 3 again about one image: three acts of
    # labeling, and the latest label is 3 (a hash of (example, label, source) would
    # have dropped the third as a duplicate and left 5 standing).
    write(tmp_path / "m/img/a.png", png(1))
    manifest = tmp_path / "m/labels.csv"
    for label in ("3", "5", "3"):
        manifest.write_text(f"path,label\nimg/a.png,{label}\n")
        _ingest(store_root, manifest_records(manifest, "path", "label"))
    assert Store(store_root).read(LABELS).column("label").to_pylist() == ["3", "5", "3"]
    (row,) = resolve_labels(
        Store(store_root), confidence_floor=0.8, max_model_share=0.2
    ).to_pylist()
    assert row["label"] == "3"
    again = _ingest(store_root, manifest_records(manifest, "path", "label"))
    assert (again.label_events, again.label_events_duplicate) == (0, 1)


def test_the_same_image_under_two_classes_is_quarantined_as_a_conflict(store_root, tmp_path):
    write(tmp_path / "f/3/a.png", png(1))
    write(tmp_path / "f/5/copy-of-a.png", png(1))
    summary = _ingest(store_root, image_folder_records(tmp_path / "f"))
    assert (summary.ingested, summary.label_events) == (1, 1)
    assert summary.quarantined == {"conflicting_labels": 1}
    (q,) = Store(store_root).read(QUARANTINE).to_pylist()
    assert (
        q["label"] == "5" and "3/a.png" in q["detail"] and q["source_uri"].endswith("copy-of-a.png")
    )
    again = _ingest(store_root, image_folder_records(tmp_path / "f"))
    assert again.label_events == 0 and Store(store_root).count(QUARANTINE) == 1


CONCURRENT_INGEST = """
import sys, time
sys.path.insert(0, {repo!r})
from configs.schema import load_config
from tasks.ingest import image_folder_records, ingest_records
from tasks.store import Store
cfg = load_config(overrides={{"store.root": {root!r}, "ingest.workers": 1,
                              "store.rows_per_file": 40}})
total, records = image_folder_records({folder!r})
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
print(ingest_records(Store(cfg.store.root), records, cfg, source_name="folder",
                     run_id=sys.argv[1], total=total).ingested, flush=True)
"""


N_CONCURRENT = 3000


def test_two_ingests_of_the_same_folder_at_once_store_each_example_once(tmp_path: Path):
    import subprocess
    import sys
    import time

    folder = tmp_path / "images"
    for i in range(N_CONCURRENT):
        label = str(i % 4) if i < N_CONCURRENT // 2 else "unlabeled"
        write(folder / label / f"{i}.png", png(1000 + i))
    root = str(tmp_path / "store")
    code = CONCURRENT_INGEST.format(
        repo=str(Path(__file__).resolve().parents[2]), root=root, folder=str(folder)
    )
    start_at = str(time.time() + 15)  # after both have imported everything
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, f"run-{k}", start_at], stdout=subprocess.PIPE, text=True
        )
        for k in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ingested = [int(o.strip()) for o in outs]
    assert sum(ingested) == N_CONCURRENT  # between them, every example once
    store = Store(root)
    ids = store.read(EXAMPLES, ["example_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == N_CONCURRENT
    events = store.read(LABELS).to_pylist()
    assert len({e["event_id"] for e in events}) == len(events) == N_CONCURRENT // 2
    assert len({e["example_id"] for e in events}) == N_CONCURRENT // 2


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

    summary = _ingest(store_root, image_folder_records(base))

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


def test_id_index_answers_membership_like_a_set_while_bounding_its_runs():
    rng = np.random.default_rng(0)
    index = IdIndex(max_run=256)
    added: set[str] = set()
    adds = 0
    while len(added) < 3000:
        batch = {rng.bytes(32).hex() for _ in range(int(rng.integers(1, 20)))} - added
        index.add(sorted(batch, reverse=True))  # any order
        added |= batch
        adds += 1
        assert index.n_runs <= len(added) / 64 + 10  # merged: far fewer runs than adds
    absent = [rng.bytes(32).hex() for _ in range(500)]
    probe = sorted(added)[::7] + absent + [max(added), min(added), "f" * 64, "0" * 64]
    assert index.contains(probe).tolist() == [h in added for h in probe]
    assert len(index) == len(added)
    assert index.n_runs < adds / 8, (index.n_runs, adds)
    assert IdIndex(list(added)[:5] * 2).contains(list(added)[:6]).tolist() == [True] * 5 + [False]
    assert IdIndex().contains(absent[:3]).tolist() == [False] * 3


def test_ingest_allocates_arrow_memory_from_the_streaming_pool_and_restores_the_default(
    store_root: str, tmp_path: Path
):
    # mimalloc kept 70-90 MiB more at 1M images (tasks/memory.py): ingest's listing and
    # chunks must come from the streaming pool while it runs, and only then
    write(tmp_path / "f/0/a.png", png(1))
    write(tmp_path / "f/unlabeled/b.png", png(2))
    total, records = image_folder_records(tmp_path / "f")
    before = pa.default_memory_pool()
    if before.backend_name == streaming_pool().backend_name:
        pytest.skip(f"Arrow's default pool is already {before.backend_name}: nothing to tell")
    seen_pools = []

    def watched():
        for rec in records:
            seen_pools.append(pa.default_memory_pool().backend_name)
            yield rec

    summary = _ingest(store_root, (total, watched()))
    assert summary.ingested == 2
    assert seen_pools == [streaming_pool().backend_name] * 2
    assert pa.default_memory_pool().backend_name == before.backend_name


def test_auto_convert_accepts_every_mode_and_counts_what_it_converts(
    store_root: str, tmp_path: Path
):
    import io

    from PIL import Image

    def enc(img, fmt="PNG", **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    turned = Image.new("RGB", (30, 20), (200, 10, 10))
    exif = turned.getexif()
    exif[0x0112] = 6
    files = {
        "a/rgb.jpg": enc(Image.new("RGB", (40, 30), (10, 200, 10)), "JPEG"),
        "a/turned.jpg": enc(turned, "JPEG", exif=exif.tobytes()),
        "a/rgba.png": enc(Image.new("RGBA", (20, 20), (1, 2, 3, 40))),
        "b/grey.png": png(1),
        "b/palette.gif": enc(Image.new("RGB", (12, 12), (0, 0, 255)).convert("P"), "GIF"),
        "b/cmyk.jpg": enc(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"),
        "unlabeled/16bit.png": enc(Image.fromarray(np.full((9, 9), 40000, np.uint16))),
        "unlabeled/broken.png": png(2)[:100],
    }
    for rel, data in files.items():
        write(tmp_path / "photos" / rel, data)
    overrides = {"taxonomy.classes": ["a", "b"], "train.channels": 3}
    summary = _ingest(store_root, image_folder_records(tmp_path / "photos"), **overrides)

    assert summary.ingested == 7 and summary.quarantined == {"truncated_or_corrupt": 1}
    assert summary.converted_to == "RGB"
    assert summary.converted == {"CMYK": 1, "I;16": 1, "L": 1, "P": 1, "RGBA": 1}
    assert summary.exif_rotated == 1
    rows = {r["metric"]: r["value"] for r in summary.rows()}
    assert rows["converted to RGB when decoded"] == 5
    assert rows["  converted: from CMYK"] == 1
    # the stored bytes stay the original
    stored = {r["image"] for r in Store(store_root).read(EXAMPLES).to_pylist()}
    assert files["b/cmyk.jpg"] in stored and files["a/rgba.png"] in stored
    assert summary.nothing_usable() is None

    # the same images for a grayscale model: every colour one is converted instead
    gray = _ingest(
        str(tmp_path / "gray"),
        image_folder_records(tmp_path / "photos"),
        **{**overrides, "train.channels": 1},
    )
    assert gray.converted_to == "L" and sum(gray.converted.values()) == 6


def test_an_ingest_that_stores_nothing_usable_says_why_and_what_to_change(
    store_root: str, tmp_path: Path
):
    for i in range(3):
        write(tmp_path / "rgb" / "cat" / f"{i}.png", png(i, mode="RGB"))
    strict = {"ingest.convert": "off", "ingest.channels": [1]}
    summary = _ingest(store_root, image_folder_records(tmp_path / "rgb"), **strict)
    assert summary.ingested == 0
    problem = summary.nothing_usable()
    assert problem is not None
    assert "all 3 records" in problem and "wrong_channels (3)" in problem
    assert "ingest.convert=auto" in problem

    labels = _ingest(str(tmp_path / "s2"), image_folder_records(tmp_path / "rgb"))
    problem = labels.nothing_usable()
    assert labels.ingested == 3 and problem is not None
    assert "all 3 labels" in problem and "taxonomy.classes" in problem
    assert "semilabel init" in problem
