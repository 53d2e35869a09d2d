import io

import numpy as np
from PIL import Image

from tasks.image_decode import decode_image, decode_images
from tests.conftest import jpeg, png


def test_batch_decoder_gives_exactly_the_pixels_of_the_pillow_decoder():
    def encode(arr: np.ndarray, mode: str, **kw) -> bytes:
        buf = io.BytesIO()
        img = Image.fromarray(arr, mode="RGB" if arr.ndim == 3 else "L").convert(mode)
        img.save(buf, "PNG", **kw)
        return buf.getvalue()

    rgb = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    blobs = [
        png(1),  # 8-bit grey 28x28: the native fast path
        png(2, size=32),  # needs a resize
        encode(rgb, "RGB"),  # grey: converted by Pillow; RGB: the fast path
        encode(rgb, "RGBA"),
        encode(rgb, "P"),
        png(3, mode="RGB"),
        jpeg(4, size=28),
    ]
    for channels in (1, 3):
        got = decode_images(blobs, 28, channels)
        assert got.shape == (len(blobs), channels, 28, 28) and got.dtype == np.uint8
        for i, b in enumerate(blobs):
            np.testing.assert_array_equal(got[i], decode_image(b, 28, channels), err_msg=str(i))
