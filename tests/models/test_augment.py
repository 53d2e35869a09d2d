"""The batched augmentations (`models/augment.py`): the weak and strong views, each
operation, and the colour modes."""

import dataclasses
import math

import pytest
import torch

from models.augment import (
    IDENTITY,
    OPS,
    cutout,
    hue_rotate,
    ops_for,
    strong,
    translate_crop,
    weak,
)
from tests.models.conftest import AUGMENT


def _batch(b: int = 16, c: int = 1, size: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(b, c, size, size, generator=g)


@pytest.mark.parametrize("fn", [weak, strong])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_device_and_range_are_kept(fn, channels):
    x = _batch(c=channels)
    out = fn(x, dataclasses.replace(AUGMENT, flip=True), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize(("fn", "at_least"), [(weak, 8), (strong, 16)])
def test_each_sample_gets_its_own_randomness(fn, at_least):
    # Sixteen copies of one image must come out different. The weak view has only 25
    # possible shifts (pad 2), so some coincide: ~12 distinct are expected, 8 required.
    x = _batch(1).expand(16, -1, -1, -1).contiguous()
    out = fn(x, AUGMENT, torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten().round(decimals=4).tolist()) for o in out}
    assert len(distinct) >= at_least


def test_same_generator_seed_gives_the_same_views():
    x = _batch()
    a = strong(x, AUGMENT, torch.Generator().manual_seed(7))
    b = strong(x, AUGMENT, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_translate_crop_is_an_exact_integer_shift():
    x = torch.arange(36.0).view(1, 1, 6, 6).repeat(64, 1, 1, 1)
    out = translate_crop(x, 1, torch.Generator().manual_seed(0))
    # The centre 4x4 of any shift by at most 1 pixel is a window of the original.
    windows = {
        tuple(x[0, 0, dy : dy + 4, dx : dx + 4].flatten().tolist())
        for dy in range(3)
        for dx in range(3)
    }
    for o in out:
        assert tuple(o[0, 1:5, 1:5].flatten().tolist()) in windows
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1


def test_cutout_blanks_a_square_with_the_image_mean():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, ::2] = 1.0  # stripes: mean 0.5
    out = cutout(x, 0.5, torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1).sum(1)
    assert bool((changed > 0).all())
    assert bool((changed <= 14 * 14).all())
    assert torch.allclose(out[out != x], torch.tensor(0.5))


def test_every_strong_operation_changes_the_images_that_drew_it():
    # n_ops=1, no shift, no cutout: each sample gets exactly one op, and the op and its
    # magnitude are the first two draws `strong` makes from the generator, so they can be
    # replayed here. A dead op (one whose images come out unchanged) fails; so does an
    # identity that changes anything.
    b = 2048
    s = dataclasses.replace(AUGMENT, pad=0, n_ops=1, cutout=0.0)
    x = 0.2 + 0.5 * _batch(b, c=3)  # away from 0 and 1, so every op has room to act
    out = strong(x, s, torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    ops = torch.randint(0, len(OPS), (b, 1), generator=replay)[:, 0]
    mags = torch.rand((b, 1), generator=replay)[:, 0]
    change = (out - x).abs().flatten(1).amax(1)
    strong_enough = (mags - 0.5).abs() > 0.3  # colour ops are neutral at magnitude 0.5
    for k, name in enumerate(OPS):
        drew = ops == k
        assert int(drew.sum()) > 50, name
        if name == IDENTITY:
            assert float(change[drew].max()) < 1e-5
            continue
        if name in (
            "posterize",
            "equalize_like",
            "solarize",
            "rotate",
            "shear_x",
            "shear_y",
            "translate_x",
            "translate_y",
        ):
            strong_enough_here = mags > 0.4  # these are neutral at magnitude 0
        else:
            strong_enough_here = strong_enough
        sel = drew & strong_enough_here
        assert int(sel.sum()) > 10, name
        assert float(change[sel].min()) > 0.005, name  # posterize: a few grey levels


def test_a_one_channel_strong_view_is_as_before_the_hue_op():
    # Values from models/augment.py before `hue` was added (commit 27261da), same input
    # and generator: a 1-channel batch must draw exactly the same random numbers (the
    # next draw matches) and come out the same, so grayscale runs do not move.
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(5)
    out = strong(x, AUGMENT, g)
    assert torch.rand(1, generator=g).item() == 0.4525589942932129
    before = [65.63668, 53.19081, 74.8395, 65.30627, 71.16628, 71.9672, 37.72925, 61.44239]
    assert out.flatten(1).sum(1).tolist() == pytest.approx(before, abs=1e-4)
    assert out.flatten()[::97].tolist() == pytest.approx(
        [0.0, 0.2324755, 0.5722050, 0.9999999, 0.0, 0.1801037, 0.6361921, 0.1304733]
        + [0.0, 0.0, 0.0, 0.2114705],
        abs=1e-6,
    )


def test_only_colour_batches_draw_the_hue_op():
    assert "hue" in ops_for(3) and "hue" not in ops_for(1)
    assert ops_for(1) == OPS[: len(ops_for(1))]  # same indices for the ops both draw


def _yiq(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Luma (B, H, W) and hue angle (B, H, W) of RGB images (B, 3, H, W)."""
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    i = 0.596 * r - 0.274 * g - 0.322 * b
    q = 0.211 * r - 0.523 * g + 0.312 * b
    return y, torch.atan2(q, i)


def test_hue_rotation_turns_the_hue_and_keeps_the_luma():
    # mid-tone colours, so that most pixels stay inside [0, 1] after the turn
    x = 0.3 + 0.4 * _batch(64, c=3, size=8)
    angle = torch.linspace(-math.pi, math.pi, 64)
    out = hue_rotate(x, angle)
    y0, h0 = _yiq(x)
    y1, h1 = _yiq(out)
    inside = ((out > 0) & (out < 1)).all(1)  # pixels the clamp did not touch
    assert float(inside.float().mean()) > 0.5
    assert float((y1 - y0).abs()[inside].max()) < 1e-4  # luma kept exactly
    assert float((y1 - y0).abs().mean()) < 0.02  # and roughly where clamped
    turned = torch.remainder(h1 - h0 - angle.view(-1, 1, 1) + math.pi, 2 * math.pi) - math.pi
    assert float(turned.abs()[inside].max()) < 1e-3  # the hue turned by the angle
    assert float((out - x).abs().amax()) > 0.2  # and the colours really changed
    # a grey image has no hue to turn
    grey = torch.full((2, 3, 4, 4), 0.5)
    assert torch.allclose(hue_rotate(grey, torch.tensor([1.0, 3.0])), grey, atol=1e-6)


def test_the_strong_view_turns_the_hue_of_the_colour_images_that_drew_it():
    b = 512
    s = dataclasses.replace(AUGMENT, pad=0, n_ops=1, cutout=0.0)
    x = 0.3 + 0.4 * _batch(b, c=3, size=8)
    out = strong(x, s, torch.Generator().manual_seed(2))
    replay = torch.Generator().manual_seed(2)
    ops = torch.randint(0, len(OPS), (b, 1), generator=replay)[:, 0]
    mags = torch.rand((b, 1), generator=replay)[:, 0]
    hue = (ops == OPS.index("hue")) & ((mags - 0.5).abs() > 0.2)
    assert int(hue.sum()) > 10
    y0, h0 = _yiq(x[hue])
    y1, h1 = _yiq(out[hue])
    assert float((y1 - y0).abs().mean()) < 0.02
    turned = torch.remainder(h1 - h0 + math.pi, 2 * math.pi) - math.pi
    assert float(turned.abs().mean()) > 0.5


def test_colour_invariant_views_change_the_colours_but_not_the_shapes():
    # two-colour images: a random square in one colour on a background of another
    b = 64
    g = torch.Generator().manual_seed(0)
    fg, bg = torch.rand(b, 3, 1, 1, generator=g), torch.rand(b, 3, 1, 1, generator=g)
    mask = torch.zeros(b, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:6, 3:7] = True
    x = torch.where(mask, fg, bg)
    s = dataclasses.replace(AUGMENT, pad=0, colour="invariant")
    out = weak(x, s, torch.Generator().manual_seed(1))
    # still two colours, on the same pixels: the shape is untouched
    inside, outside = out[:, :, 2, 3], out[:, :, 0, 0]
    assert torch.allclose(out, torch.where(mask, inside[..., None, None], outside[..., None, None]))
    assert float((inside - fg.flatten(1)).abs().amax(1).median()) > 0.05  # colours moved
    # "keep" and grayscale batches: the weak view as before (same draws, same output)
    kept, invariant = (
        dataclasses.replace(AUGMENT, pad=2),
        dataclasses.replace(AUGMENT, pad=2, colour="invariant"),
    )
    for batch in (x, _batch(c=1)):
        a = weak(batch, kept, torch.Generator().manual_seed(3))
        b = weak(batch, invariant, torch.Generator().manual_seed(3))
        assert torch.equal(a, b) == (batch.shape[1] == 1)


def test_an_unknown_colour_mode_is_refused():
    with pytest.raises(ValueError, match="keep, invariant"):
        dataclasses.replace(AUGMENT, colour="grey")
