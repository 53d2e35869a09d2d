"""Batched augmentations that run where the batch lives (CPU or GPU).

Every sample gets its own random parameters, drawn from an explicit
`torch.Generator` so a run is reproducible and resumable; no per-image Python loop.
Inputs and outputs are float tensors in [0, 1], shape (B, C, H, W).

- `weak`: random translation by up to `pad` pixels (reflect padding), optional
  horizontal flip — FixMatch's weak view. With `colour="invariant"` (3-channel batches
  only), also a random hue turn and a random order of the R, G, B channels: for classes
  that do not depend on the colours they come in (models.classifier then normalizes
  each image by its own channel statistics, see `ClassifierConfig.normalize`).
- `strong`: weak + `n_ops` RandAugment-style operations per sample with random
  magnitudes (affine ops fused into one `grid_sample`) + Cutout. Colour (3-channel)
  batches draw from one more op, `hue`: a rotation of the hue by up to half a turn that
  keeps the luma, so that a class is learnt apart from the colours it was photographed
  in. One-channel batches draw from the other ops only, exactly as before `hue` existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

# The strong-view operations. Affine ones are fused into one resampling.
COLOR_OPS = (
    "autocontrast",
    "brightness",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "equalize_like",
    "color",
)
AFFINE_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# Colour-only ops: drawn for 3-channel batches alone. Last in OPS, so that a 1-channel
# batch draws from OPS less these with the same indices (and the same random numbers) as
# before they were added.
RGB_OPS = ("hue",)
IDENTITY = "identity"
COLOUR_MODES = ("keep", "invariant")
OPS = (IDENTITY, *COLOR_OPS, *AFFINE_OPS, *RGB_OPS)
GRAY_OPS = OPS[: len(OPS) - len(RGB_OPS)]


def ops_for(channels: int) -> tuple[str, ...]:
    """The strong-view ops a batch of `channels` draws from (by index into OPS)."""
    return OPS if channels == 3 else GRAY_OPS


@dataclass(frozen=True, kw_only=True)
class AugmentSettings:
    """The views' settings. The product's values come from the config (`train.augment`,
    configs/train.py `AugmentConfig`): the fields it sets have no default here, so there
    is one source of defaults; only those it never sets keep one."""

    pad: int  # weak translation, pixels (FixMatch: 12.5% of the side)
    flip: bool  # horizontal flip: off for digits and text
    n_ops: int  # RandAugment operations per sample
    max_rotate_deg: float = 30.0
    max_shear: float = 0.3
    max_translate: float = 0.3  # fraction of the side
    cutout: float  # cutout side as a fraction of the image side (upper bound)
    # "keep": colours may tell classes apart; "invariant": they do not (digits, shapes or
    # text in any colour), so every view of a colour image gets a random hue and channel
    # order, and the classifier normalizes each image by its own channel statistics
    colour: Literal["keep", "invariant"]

    def __post_init__(self) -> None:
        if self.colour not in COLOUR_MODES:
            raise ValueError(
                f"augment colour {self.colour!r}: choose one of {', '.join(COLOUR_MODES)}"
            )


def _uniform(gen: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device)


def _bview(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def translate_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample integer shift in [-pad, pad] with reflect padding (exact, no resampling)."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    wp = w + 2 * pad
    rows = dy[:, None, None] + torch.arange(h, device=x.device)[None, :, None]  # (B, H, 1)
    cols = dx[:, None, None] + torch.arange(w, device=x.device)[None, None, :]  # (B, 1, W)
    index = (rows * wp + cols).reshape(b, 1, h * w).expand(b, x.shape[1], h * w)
    out = padded.reshape(b, x.shape[1], -1).gather(2, index)  # (B, C, H*W)
    return out.view(b, x.shape[1], h, w)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = _uniform(gen, (x.shape[0],), x.device) < 0.5
    return torch.where(_bview(flip), x.flip(-1), x)


def weak(x: torch.Tensor, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    x = translate_crop(x, s.pad, gen)
    x = random_flip(x, gen) if s.flip else x
    if s.colour == "invariant" and x.shape[1] == 3:
        x = colour_jitter(x, gen)
    return x


def colour_jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random hue turn (uniform over the circle) and random order of the R, G,
    B channels, for RGB batches (B, 3, H, W): the colours change, the shapes do not."""
    b, dev = x.shape[0], x.device
    x = hue_rotate(x, (_uniform(gen, (b,), dev) * 2 - 1) * math.pi)
    order = _uniform(gen, (b, 3), dev).argsort(1)  # (B, 3): a random permutation each
    return x.gather(1, order[:, :, None, None].expand_as(x))


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:
        r, g, b = x.unbind(1)
        return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
    return x.mean(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * a + (1 - factor) * b, clamped to [0, 1]; factor is per sample (B,)."""
    return (b + _bview(factor) * (a - b)).clamp_(0.0, 1.0)


# RGB -> YIQ (NTSC): Y is the luma, (I, Q) the chroma plane a hue rotation turns
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """RGB images (B, 3, H, W) with their hue turned by `angle` (B,) radians: the chroma
    (I, Q) rotated in YIQ space, the luma Y kept (up to clamping to [0, 1])."""
    b = x.shape[0]
    cos, sin = angle.cos(), angle.sin()
    turn = torch.zeros(b, 3, 3, dtype=x.dtype, device=x.device)
    turn[:, 0, 0] = 1.0
    turn[:, 1, 1], turn[:, 1, 2] = cos, -sin
    turn[:, 2, 1], turn[:, 2, 2] = sin, cos
    to_yiq = _RGB_TO_YIQ.to(x.device, x.dtype)
    to_rgb = _YIQ_TO_RGB.to(x.device, x.dtype)
    mat = to_rgb @ turn @ to_yiq  # (B, 3, 3): one matrix per sample
    out = torch.bmm(mat, x.reshape(b, 3, -1))  # (B, 3, H*W)
    return out.view_as(x).clamp_(0.0, 1.0)


def _color_op(name: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply colour op `name` to every sample with per-sample magnitude m in [0, 1]."""
    signed = torch.where(m > 0.5, 1.0, -1.0) * (m * 2 - 1).abs()  # in [-1, 1]
    if name == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), 1 + 0.9 * signed)
    if name == "contrast":
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
        return _blend(x, mean, 1 + 0.9 * signed)
    if name == "color":
        return _blend(x, _gray(x).expand_as(x), 1 + 0.9 * signed)
    if name == "sharpness":
        c = x.shape[1]
        k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
        return _blend(x, blurred, 1 + 0.9 * signed)
    if name == "posterize":
        bits = (8 - (m * 4).floor()).clamp(4, 8)  # 4..8 bits
        step = _bview(2.0 ** (8 - bits))
        return torch.floor(x * 255 / step) * step / 255
    if name == "solarize":
        threshold = _bview(1.0 - m)  # m=0: nothing inverted
        return torch.where(x >= threshold, 1.0 - x, x)
    if name == "hue":  # RGB only (RGB_OPS): a turn of up to half a circle either way
        return hue_rotate(x, signed * math.pi)
    if name == "equalize_like":
        # Histogram equalization approximated by a per-sample gamma toward mid-grey mean.
        mean = x.mean(dim=(1, 2, 3)).clamp(1e-3, 1 - 1e-3)
        gamma = (math.log(0.5) / mean.log()).clamp(0.3, 3.0)
        gamma = 1 + m * (gamma - 1)
        return x.clamp_min(1e-6) ** _bview(gamma)
    raise ValueError(f"unknown colour op {name!r}")


def _affine_matrices(
    ops: torch.Tensor, mags: torch.Tensor, s: AugmentSettings, gen: torch.Generator
) -> torch.Tensor:
    """(B, 2, 3) matrices composing the affine ops each sample drew."""
    b, device = ops.shape[0], ops.device
    theta = torch.eye(3, device=device).repeat(b, 1, 1)
    for name in AFFINE_OPS:
        k = OPS.index(name)
        chosen = ops == k  # (B, n_ops)
        if not bool(chosen.any()):
            continue
        m = (mags * chosen).sum(1)  # magnitude if chosen, else 0 (identity)
        sign = torch.where(_uniform(gen, (b,), device) < 0.5, -1.0, 1.0)
        v = m * sign
        mat = torch.eye(3, device=device).repeat(b, 1, 1)
        if name == "rotate":
            a = torch.deg2rad(v * s.max_rotate_deg)
            mat[:, 0, 0], mat[:, 0, 1] = a.cos(), -a.sin()
            mat[:, 1, 0], mat[:, 1, 1] = a.sin(), a.cos()
        elif name == "shear_x":
            mat[:, 0, 1] = v * s.max_shear
        elif name == "shear_y":
            mat[:, 1, 0] = v * s.max_shear
        elif name == "translate_x":
            mat[:, 0, 2] = v * s.max_translate * 2  # grid units span [-1, 1]
        else:
            mat[:, 1, 2] = v * s.max_translate * 2
        theta = mat @ theta
    return theta[:, :2, :]


def cutout(
    x: torch.Tensor, max_frac: float, gen: torch.Generator, fill: float = 0.5
) -> torch.Tensor:
    """Per-sample square hole of side up to `max_frac` of the image, at a random centre."""
    if max_frac <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    side = (_uniform(gen, (b,), dev) * max_frac * min(h, w)).clamp_min(1.0)
    cy = _uniform(gen, (b,), dev) * h
    cx = _uniform(gen, (b,), dev) * w
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    half = (side / 2)[:, None, None]
    hole = ((ys - cy[:, None, None]).abs() < half) & ((xs - cx[:, None, None]).abs() < half)
    fill = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    return torch.where(hole[:, None], fill, x)


def strong(x: torch.Tensor, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    """Weak view + RandAugment-style ops (per-sample choice and magnitude) + Cutout."""
    x = weak(x, s, gen)
    b, c, dev = x.shape[0], x.shape[1], x.device
    drawn = ops_for(c)
    ops = torch.randint(0, len(drawn), (b, s.n_ops), generator=gen, device=dev)  # (B, n_ops)
    mags = _uniform(gen, (b, s.n_ops), dev)  # (B, n_ops) in [0, 1]
    for name in (*COLOR_OPS, *RGB_OPS):
        if name not in drawn or (name == "color" and c == 1):
            continue
        chosen = ops == OPS.index(name)
        idx = chosen.any(1).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        m = (mags * chosen).sum(1)
        # Only the samples that drew this op are computed: cost follows the draw.
        x = x.index_copy(0, idx, _color_op(name, x.index_select(0, idx), m.index_select(0, idx)))
    theta = _affine_matrices(ops, mags, s, gen)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return cutout(x, s.cutout, gen)
