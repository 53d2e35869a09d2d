"""Shared helpers: real images written with Pillow, crafted bad files."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before Prefect loads

import io
import struct
import zlib
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
