"""`ingest_records`: every record checked, deduped by content against the store and
this run, and written (examples, label events, quarantine) chunk by chunk."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tasks.ingest import image_folder_records, manifest_records
from tasks.memory import streaming_pool
from tasks.store import EXAMPLES, LABELS, QUARANTINE, Store, content_id, resolve_labels
from tests.conftest import png, write
from tests.tasks.ingest.conftest import ingest


def test_every_bad_input_lands_in_quarantine_with_its_reason(
    store_root: str, messy_folder: dict[str, bytes], tmp_path: Path
):
    # convert off: an image of a channel count outside ingest.channels is quarantined
    summary = ingest(
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


def test_second_ingest_adds_no_examples_no_events_no_quarantine_rows(
    store_root: str, messy_folder: dict[str, bytes], tmp_path: Path
):
    ingest(store_root, image_folder_records(tmp_path / "images"))
    before = Store(store_root).counts()
    again = ingest(store_root, image_folder_records(tmp_path / "images"))
    assert (again.ingested, again.label_events, again.duplicates) == (0, 0, 8)
    assert again.label_events_duplicate == 4  # 3/rgb.png too (ingest.convert auto)
    assert Store(store_root).counts() == before


def test_same_image_twice_in_one_run_is_one_example(store_root: str, tmp_path: Path):
    write(tmp_path / "f/0/a.png", png(1))
    write(tmp_path / "f/unlabeled/copy.png", png(1))
    summary = ingest(store_root, image_folder_records(tmp_path / "f"))
    assert (summary.ingested, summary.duplicates, summary.label_events) == (1, 1, 1)


def test_relabel_in_a_new_folder_is_a_new_event(store_root: str, tmp_path: Path):
    write(tmp_path / "v1/3/a.png", png(1))
    write(tmp_path / "v2/5/a.png", png(1))
    ingest(store_root, image_folder_records(tmp_path / "v1"))
    second = ingest(store_root, image_folder_records(tmp_path / "v2"))
    assert (second.ingested, second.label_events) == (0, 1)
    assert sorted(Store(store_root).read(LABELS).column("label").to_pylist()) == ["3", "5"]


def test_a_correction_back_and_forth_in_a_manifest_is_three_events(store_root: str, tmp_path):
    # The same source says 3, then 5, then 3 again about one image: three acts of
    # labeling, and the latest label is 3 (a hash of (example, label, source) would
    # have dropped the third as a duplicate and left 5 standing).
    write(tmp_path / "m/img/a.png", png(1))
    manifest = tmp_path / "m/labels.csv"
    for label in ("3", "5", "3"):
        manifest.write_text(f"path,label\nimg/a.png,{label}\n")
        ingest(store_root, manifest_records(manifest, "path", "label"))
    assert Store(store_root).read(LABELS).column("label").to_pylist() == ["3", "5", "3"]
    (row,) = resolve_labels(
        Store(store_root), confidence_floor=0.8, max_model_share=0.2
    ).to_pylist()
    assert row["label"] == "3"
    again = ingest(store_root, manifest_records(manifest, "path", "label"))
    assert (again.label_events, again.label_events_duplicate) == (0, 1)


def test_the_same_image_under_two_classes_is_quarantined_as_a_conflict(store_root, tmp_path):
    write(tmp_path / "f/3/a.png", png(1))
    write(tmp_path / "f/5/copy-of-a.png", png(1))
    summary = ingest(store_root, image_folder_records(tmp_path / "f"))
    assert (summary.ingested, summary.label_events) == (1, 1)
    assert summary.quarantined == {"conflicting_labels": 1}
    (q,) = Store(store_root).read(QUARANTINE).to_pylist()
    assert (
        q["label"] == "5" and "3/a.png" in q["detail"] and q["source_uri"].endswith("copy-of-a.png")
    )
    again = ingest(store_root, image_folder_records(tmp_path / "f"))
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
print(ingest_records(Store(cfg.store.root), records, cfg.data_spec(), cfg.ingest,
                     source_name="folder", run_id=sys.argv[1], total=total).ingested, flush=True)
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
        repo=str(Path(__file__).resolve().parents[3]), root=root, folder=str(folder)
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

    summary = ingest(store_root, (total, watched()))
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
    summary = ingest(store_root, image_folder_records(tmp_path / "photos"), **overrides)

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
    gray = ingest(
        str(tmp_path / "gray"),
        image_folder_records(tmp_path / "photos"),
        **{**overrides, "train.channels": 1},
    )
    assert gray.converted_to == "L" and sum(gray.converted.values()) == 6
