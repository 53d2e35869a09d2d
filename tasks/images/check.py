"""Reading, decoding and checking encoded images. Imports only Pillow (on first use), so
the worker processes that run it start in milliseconds (no Prefect, no pyarrow)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from typing import Any

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
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
READ_ERROR = "read_error"  # first item of a check result when a file could not be read
_PIL: tuple[Any, Any, Any] | None = None


def _pil() -> tuple[Any, Any, Any]:
    """(PIL.Image, PIL.PngImagePlugin, PIL.UnidentifiedImageError), imported once."""
    global _PIL
    if _PIL is None:
        from PIL import Image, PngImagePlugin, UnidentifiedImageError

        _PIL = (Image, PngImagePlugin, UnidentifiedImageError)
    return _PIL


def _open(data: bytes, Image: Any, PngImagePlugin: Any) -> Any:
    """`Image.open(io.BytesIO(data))`, with a shortcut for the common case.

    For bytes that start with the PNG signature, `Image.open` picks the PNG plugin (no
    other plugin accepts that prefix), so the image is opened by that plugin directly,
    skipping the format probing. If that fails in any way, `Image.open` runs as usual,
    so errors (and which of them count as "not an image") are exactly `Image.open`'s.
    """
    if data[:8] == _PNG_MAGIC:
        try:
            return PngImagePlugin.PngImageFile(io.BytesIO(data))
        except Exception:  # Image.open below fails the same way, or finds another reader
            pass
    return Image.open(io.BytesIO(data))


def check_image(
    data: bytes | None, max_pixels: int, channels: tuple[int, ...] | None = None
) -> tuple:
    """Decode and check one encoded image.

    Returns ``("ok", sha256_hex, height, width, channels, mode, exif_rotated)`` or
    ``("reject", reason, detail)``. `channels`: the channel counts accepted (None: any
    mode, converted when decoded; see ingest.convert). The pixel count is checked from
    the header before any pixel is decoded, so a decompression bomb never gets
    decompressed.
    """
    Image, PngImagePlugin, UnidentifiedImageError = _pil()
    if data is None:
        return ("reject", "unreadable", "no bytes could be read")
    if len(data) == 0:
        return ("reject", "empty_file", "the file is empty (0 bytes)")
    # Pillow's own bomb limit is replaced by ours (ingest.max_pixels), checked from the
    # header before a single pixel is decoded.
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = _open(data, Image, PngImagePlugin)
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
    if channels is not None and n_channels not in channels:
        return (
            "reject",
            "wrong_channels",
            f"{n_channels} channel(s) (mode {img.mode}); allowed: {list(channels)} "
            "(ingest.convert is off: set ingest.convert=auto to convert such images, or "
            "add the count to ingest.channels)",
        )
    rotated = _exif_rotated(img)
    return ("ok", hashlib.sha256(data).hexdigest(), height, width, n_channels, img.mode, rotated)


def _exif_rotated(img: Any) -> bool:
    """Whether the image's EXIF orientation turns or mirrors it (decoding applies it)."""
    try:
        return img.getexif().get(0x0112, 1) not in (0, 1)
    except Exception:  # a broken EXIF block: decoding ignores it too
        return False


def read_file(path: str) -> bytes:
    """The file's bytes, as `open(path, "rb").read()` gives them (and with the same
    errors), in fewer steps: small files, the usual case, take two reads."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts: list[bytes] = []
        size = 1 << 16
        while True:
            try:
                part = os.read(fd, size)
            except IsADirectoryError as exc:  # open() refuses folders, naming them
                raise IsADirectoryError(errno.EISDIR, exc.strerror, path) from None
            if not part:
                break
            parts.append(part)
            size = min(size * 2, 1 << 24)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_and_check(
    items: list[bytes | str | None],
    max_pixels: int,
    channels: tuple[int, ...] | None,
    max_read_bytes: int,
) -> tuple[list[tuple], list[bytes | None]]:
    """Check a batch of inputs: bytes (or None) are checked as they are; a str is a file
    path, read here and then checked. Returns (checks, bytes read), one each per input
    handled, the bytes None for inputs that were not paths or could not be read.

    A path that cannot be read gives ``(READ_ERROR, "unreadable", detail)``. Once the
    files read add up to `max_read_bytes`, the batch stops before the next path (having
    handled at least one input), so the lists may be shorter than `items`: the caller
    sends the rest again. That bounds the bytes a batch holds, whatever the file sizes.
    The files are all read first, then all checked: alternating the two costs more.
    """
    inputs: list[bytes | None] = []
    read: list[bytes | None] = []
    unreadable: dict[int, str] = {}
    n_read = 0
    for item in items:
        if isinstance(item, str):
            if n_read >= max_read_bytes and read:
                break
            try:
                data: bytes | None = read_file(item)
            except OSError as exc:
                unreadable[len(read)] = f"cannot read the file: {exc}"
                data = None
            else:
                n_read += len(data)
            inputs.append(data)
            read.append(data)
        else:
            inputs.append(item)
            read.append(None)
    checks = [check_image(d, max_pixels, channels) for d in inputs]
    for i, detail in unreadable.items():
        checks[i] = (READ_ERROR, "unreadable", detail)
    return checks, read
