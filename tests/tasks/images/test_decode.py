import io

import numpy as np
from PIL import Image

from tasks.images.decode import decode_image, decode_images
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


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    got = decode_image(_encode(img), 16, 1)[0]
    # 0..65535 maps onto 0..255: the pixel that held 100 * 257 reads 100, not 255
    np.testing.assert_array_equal(got.ravel(), np.arange(256))
    assert decode_image(_encode(img), 16, 3).shape == (3, 16, 16)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red...
    rgba[:, :4, 3] = 0  # ...transparent on the left half, opaque on the right
    rgba[:, 4:, 3] = 255
    got = decode_image(_encode(Image.fromarray(rgba, "RGBA")), 8, 3)
    assert (got[:, :, :4] == 255).all()  # white where transparent
    assert (got[0, :, 4:] == 255).all() and (got[1:, :, 4:] == 0).all()  # red where opaque
    pal = Image.new("P", (8, 8), 0)  # every pixel: palette entry 0, red, marked transparent
    pal.putpalette([255, 0, 0, 0, 0, 255])
    assert (decode_image(_encode(pal, transparency=0), 8, 3) == 255).all()
    assert (decode_image(_encode(pal), 8, 3)[0] == 255).all()  # not transparent: red


def test_cmyk_and_palette_become_the_rgb_a_viewer_shows():
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # red in CMYK
    got = decode_image(_encode(cmyk, "JPEG", quality=100), 4, 3)
    assert got[0].min() > 240 and got[1].max() < 15 and got[2].max() < 15
    pal = Image.new("RGB", (10, 10), (0, 0, 255)).convert("P")
    np.testing.assert_array_equal(decode_image(_encode(pal, "GIF"), 4, 3)[:, 0, 0], [0, 0, 255])


def test_exif_orientation_is_applied():
    # stored landscape: white left half; EXIF 6 says "rotate 90 degrees clockwise to view"
    img = Image.new("L", (40, 20), 0)
    img.paste(255, (0, 0, 20, 20))
    exif = img.getexif()
    exif[0x0112] = 6
    upright = decode_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=100), 4, 1)[0]
    assert upright[0].min() > 200 and upright[-1].max() < 50  # white on top once turned
    plain = decode_image(_encode(img, "JPEG", quality=100), 4, 1)[0]
    assert plain[:, 0].min() > 200 and plain[:, -1].max() < 50  # no EXIF: as stored
