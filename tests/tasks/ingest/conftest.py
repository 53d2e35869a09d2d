"""What the ingest tests share: a config for a store, an ingest of some records into it,
and a folder of every kind of bad input beside good ones."""

from pathlib import Path

import pytest

from configs.schema import Config, load_config
from tasks.ingest import IngestSummary, ingest_records
from tasks.store import Store
from tests.conftest import jpeg, png, png_bomb, write


def ingest_cfg(store_root: str, **overrides) -> Config:
    """The default config on `store_root`, one worker, with `overrides` (dotted keys)."""
    return load_config(overrides={"store.root": store_root, "ingest.workers": 1, **overrides})


def ingest(store_root: str, total_records, **overrides) -> IngestSummary:
    """Ingest `(total, records)` into `store_root` as source "test", run "run-1"."""
    cfg = ingest_cfg(store_root, **overrides)
    total, records = total_records
    spec, store = cfg.data_spec(), Store(store_root)
    return ingest_records(
        store, records, spec, cfg.ingest, source_name="test", run_id="run-1", total=total
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
