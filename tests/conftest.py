"""Shared helpers: real images written with Pillow, crafted bad files."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before Prefect loads

import io
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def png(seed: int, size: int = 28, mode: str = "L") -> bytes:
    """A unique, real PNG: random pixels from `seed`."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, len(mode))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, "PNG")
    return buf.getvalue()


def jpeg(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(buf, "JPEG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header declares width×height grayscale pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows; the rest never comes
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def store_root(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def label_events(rows: list[dict]):  # -> pa.Table
    """Label events as the store's schema wants them, from dicts with at least
    event_id, example_id and label; everything else gets a plain default."""
    import pyarrow as pa

    from tasks.store import LABELS, SCHEMAS

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    defaults = {
        "source_kind": "human",
        "source_name": "tester",
        "confidence": 1.0,
        "created_at": t0,
        "run_id": "test",
        "taxonomy_version": "v1",
        "model_influenced": None,
    }
    full = [{**defaults, **r} for r in rows]
    return pa.Table.from_pylist(full, schema=SCHEMAS[LABELS])


def digit_png(cls: int, seed: int) -> bytes:
    """A 28x28 image whose class is where a bright bar sits, plus unique noise."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (28, 28), dtype=np.uint8)
    img[4:24, 2 + 9 * cls : 7 + 9 * cls] = 240
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, "PNG")
    return buf.getvalue()


def digit_folder(root: Path, n: int = 300, n_labeled: int = 210) -> Path:
    """An image folder of `digit_png`s: classes 0-2 in class folders, then unlabeled."""
    if not root.exists():
        for i in range(n):
            sub = str(i % 3) if i < n_labeled else "unlabeled"
            write(root / sub / f"{i}.png", digit_png(i % 3, i))
    return root


def tiny_run_overrides(tmp_path: Path, folder: Path, tracking_uri: str) -> dict:
    """Config overrides for a run on `folder` that trains in seconds on a CPU, with its
    store, checkpoints and MLflow store under `tmp_path`."""
    return {
        "store.root": str(tmp_path / "store"),
        "source.kind": "image_folder",
        "source.path": str(folder),
        "taxonomy.classes": ["0", "1", "2"],
        "ingest.workers": 1,
        "gold.fraction": 0.3,
        "train.teacher_steps": 30,
        "train.student_steps": 30,
        "train.seeded_student_steps": None,  # a seeded start keeps the 30 steps
        "train.batch_size": 8,
        "train.uratio": 2,
        "train.eval_every": 30,
        "train.checkpoint_every": 0,
        "train.device": "cpu",
        "train.run_dir": str(tmp_path / "runs"),
        "mlflow.tracking_uri": tracking_uri,
    }


@pytest.fixture
def store_cfg(tmp_path: Path):
    """A real store ingested from a 3-class image folder: 150 labeled (some gold), 90
    unlabeled, and a config that trains on it in seconds on a CPU."""
    from configs.schema import load_config

    folder = digit_folder(tmp_path / "images", n=240, n_labeled=150)
    cfg = load_config(
        overrides=tiny_run_overrides(tmp_path, folder, f"sqlite:///{tmp_path / 'mlflow.db'}")
    )
    ingest_folder(cfg, folder, "folder")
    return cfg


def ingest_folder(cfg, folder: Path, source_name: str, run_id: str = "r") -> None:
    """Ingest an image folder into `cfg`'s store, as `semilabel ingest` would."""
    from tasks.ingest import image_folder_records

    _ingest(cfg, source_name, *image_folder_records(folder), run_id)


def ingest_configured_source(cfg, run_id: str = "r") -> None:
    """Ingest `cfg`'s own source (folder or manifest) under the name `semilabel ingest`
    records for it."""
    from tasks.ingest import open_source

    _ingest(cfg, *open_source(cfg.data_spec(), cfg.source), run_id)


def _ingest(cfg, source_name: str, total: int | None, records, run_id: str) -> None:
    from tasks.ingest import ingest_records
    from tasks.store import Store

    ingest_records(
        Store(cfg.store.root),
        records,
        cfg.data_spec(),
        cfg.ingest,
        source_name=source_name,
        run_id=run_id,
        total=total,
    )


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect server (and database) for the whole pytest run, stopped at
    the end; flows run against it as they would against a real server."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


COLOUR_CLASSES = ("left bar", "middle bar", "right bar")  # named classes, with spaces


def colour_image(cls: int, seed: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A colour photo-like version of `digit_png`: the bar in a random colour on a random
    background, at a random size from 40 to 96 px, encoded as `fmt` in `mode`."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    bar = Image.open(io.BytesIO(digit_png(cls, seed))).convert("L")
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(fg.astype(int) - bg).sum() < 200:  # keep the bar visible
        fg = rng.integers(0, 256, 3)
    mask = np.asarray(bar, np.float32)[..., None] / 255.0
    rgb = (mask * fg + (1 - mask) * bg).astype(np.uint8)
    side = int(rng.integers(40, 97))
    img = Image.fromarray(rgb, "RGB").resize((side, int(side * rng.uniform(0.8, 1.25))))
    buf = io.BytesIO()
    img.convert(mode).save(buf, fmt)
    return buf.getvalue()


def colour_folder(root: Path, n: int = 240, n_labeled: int = 150) -> Path:
    """A user's folder: colour JPEGs of mixed sizes in class folders named by words, the
    rest in unlabeled/; one grayscale PNG and one RGBA PNG among them."""
    if not root.exists():
        for i in range(n):
            sub = COLOUR_CLASSES[i % 3] if i < n_labeled else "unlabeled"
            write(root / sub / f"{i}.jpg", colour_image(i % 3, i))
        write(root / COLOUR_CLASSES[0] / "grey.png", colour_image(0, 10_001, "PNG", "L"))
        write(root / COLOUR_CLASSES[1] / "alpha.png", colour_image(1, 10_002, "PNG", "RGBA"))
    return root


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path):
    """A real `mlflow server` on SQLite under `root`, for a fixture to yield and stop:
    (the process, its URL). Fails the test if it does not answer within 120 s."""
    import subprocess
    import sys
    import time
    from urllib.request import urlopen

    port = free_port()
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    argv += ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urlopen(f"{url}/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("mlflow server did not start")


def store_with_images(store_root: str, n: int = 3):
    """A store holding `n` real digit PNGs (classes 0, 1, 2 in turn); (store, their ids)."""
    import pyarrow as pa

    from tasks.store import EXAMPLES, SCHEMAS, Store, content_id

    store = Store(store_root)
    images = [digit_png(i % 3, i) for i in range(n)]
    ids = [content_id(b) for b in images]
    now = datetime.now(UTC)
    rows = [
        {
            "example_id": i,
            "image": b,
            "height": 28,
            "width": 28,
            "channels": 1,
            "source": "t",
            "source_uri": f"mem://{k}",
            "ingested_at": now,
        }
        for k, (i, b) in enumerate(zip(ids, images, strict=True))
    ]
    store.write(EXAMPLES, pa.Table.from_pylist(rows, schema=SCHEMAS[EXAMPLES]))
    return store, ids
