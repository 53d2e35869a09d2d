"""Decoding and checking one encoded image. Imports only Pillow, so the worker
processes that run it start in milliseconds (no Prefect, no pyarrow)."""

from __future__ import annotations

import hashlib
import io

_BANDS = {
    "1": 1,
    "L": 1,
    "P": 3,
    "I": 1,
    "F": 1,
    "I;16": 1,
    "LA": 2,
    "La": 2,
    "PA": 4,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
    "RGBA": 4,
    "RGBa": 4,
    "CMYK": 4,
    "RGBX": 4,
}


def check_image(data: bytes | None, max_pixels: int, channels: tuple[int, ...]) -> tuple:
    """Decode and check one encoded image.

    Returns ``("ok", sha256_hex, height, width, channels)`` or
    ``("reject", reason, detail)``. The pixel count is checked from the header before
    any pixel is decoded, so a decompression bomb never gets decompressed.
    """
    from PIL import Image, UnidentifiedImageError

    if data is None:
        return ("reject", "unreadable", "no bytes could be read")
    if len(data) == 0:
        return ("reject", "empty_file", "the file is empty (0 bytes)")
    # Pillow's own bomb limit is replaced by ours (ingest.max_pixels), checked from the
    # header before a single pixel is decoded.
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > max_pixels:
            return (
                "reject",
                "too_many_pixels",
                f"header declares {width}x{height} = {width * height} pixels, "
                f"above ingest.max_pixels={max_pixels} (possible decompression bomb)",
            )
        img.load()
    except UnidentifiedImageError:
        return ("reject", "not_an_image", "not a recognized image format")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return ("reject", "truncated_or_corrupt", f"image data is truncated or corrupt: {exc}")
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    n_channels = _BANDS.get(img.mode, len(img.getbands()))
    if n_channels not in channels:
        return (
            "reject",
            "wrong_channels",
            f"{n_channels} channel(s) (mode {img.mode}); allowed: {list(channels)} "
            "(see ingest.channels)",
        )
    return ("ok", hashlib.sha256(data).hexdigest(), height, width, n_channels)


def _check_many(items: list[bytes | None], max_pixels: int, channels: tuple[int, ...]) -> list:
    return [check_image(d, max_pixels, channels) for d in items]
