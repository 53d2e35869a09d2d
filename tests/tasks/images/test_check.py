"""Fuzzing the image check: whatever bytes arrive, ingest gets a verdict (accept, or a
named rejection), never an exception; and what it accepts, training can decode."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tasks.images.check import check_image
from tasks.images.decode import decode_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL on corrupt data

REASONS = {
    "unreadable",
    "empty_file",
    "too_many_pixels",
    "not_an_image",
    "truncated_or_corrupt",
    "wrong_channels",
}


def _encoded(fmt: str, mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (9, 7) if mode == "L" else (9, 7, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(buf, fmt)
    return buf.getvalue()


VALID = [
    _encoded(f, m, i)
    for i, (f, m) in enumerate(
        [("PNG", "L"), ("PNG", "RGB"), ("JPEG", "RGB"), ("BMP", "L"), ("GIF", "L"), ("TIFF", "RGB")]
    )
]


def _verdict(data: bytes) -> tuple:
    out = check_image(data, max_pixels=10_000, channels=None)  # ingest.convert: auto
    assert out[0] in ("ok", "reject"), out
    if out[0] == "reject":
        assert out[1] in REASONS and isinstance(out[2], str) and out[2], out
    else:  # accepted: training decodes it, at any size and channel count asked for
        for channels in (1, 3):
            pixels = decode_image(data, 16, channels)
            assert pixels.shape == (channels, 16, 16) and pixels.dtype == np.uint8
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_get_a_verdict(data):
    _verdict(data)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(range(len(VALID))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_damaged_real_images_get_a_verdict(which, flips, cut):
    data = bytearray(VALID[which])
    for pos, value in flips:  # corrupt some bytes (headers included) ...
        data[pos % len(data)] = value
    _verdict(bytes(data[: max(1, len(data) - cut % len(data))]))  # ... and truncate


def test_the_undamaged_images_are_accepted():
    assert [_verdict(d)[0] for d in VALID] == ["ok"] * len(VALID)
