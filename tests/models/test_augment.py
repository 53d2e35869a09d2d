import pytest
import torch

from models.augment import IDENTITY, OPS, AugmentSettings, cutout, strong, translate_crop, weak


def _batch(b: int = 16, c: int = 1, size: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(b, c, size, size, generator=g)


@pytest.mark.parametrize("fn", [weak, strong])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_device_and_range_are_kept(fn, channels):
    x = _batch(c=channels)
    out = fn(x, AugmentSettings(flip=True), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize(("fn", "at_least"), [(weak, 8), (strong, 16)])
def test_each_sample_gets_its_own_randomness(fn, at_least):
    # Sixteen copies of one image must come out different. The weak view has only 25
    # possible shifts (pad 2), so some coincide: ~12 distinct are expected, 8 required.
    x = _batch(1).expand(16, -1, -1, -1).contiguous()
    out = fn(x, AugmentSettings(), torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten().round(decimals=4).tolist()) for o in out}
    assert len(distinct) >= at_least


def test_same_generator_seed_gives_the_same_views():
    x = _batch()
    a = strong(x, AugmentSettings(), torch.Generator().manual_seed(7))
    b = strong(x, AugmentSettings(), torch.Generator().manual_seed(7))
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
    s = AugmentSettings(pad=0, n_ops=1, cutout=0.0)
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
