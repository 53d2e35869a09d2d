"""Two hand-written digit rules used by bench/weak_labeling, in plain NumPy so that the
same code runs in semilabel (as `kind: python` labeling functions) and, one row at a
time, inside Snorkel's own environment. -1 = abstain."""

from __future__ import annotations

import numpy as np

INK = 128  # a pixel is ink above this


def thin_is_one(images: np.ndarray) -> np.ndarray:
    """(B, 1, H, W) uint8 -> 1 where the ink is a narrow, light stroke, else abstain."""
    ink = images[:, 0] > INK  # (B, H, W)
    width = ink.any(1).sum(1)  # columns that hold ink
    share = ink.reshape(len(images), -1).mean(1)
    return np.where((width <= 8) & (share < 0.08), 1, -1).astype(np.int16)


def hollow_is_zero(images: np.ndarray) -> np.ndarray:
    """0 where the centre is empty but a ring of ink surrounds it, else abstain."""
    x = images[:, 0].astype(np.float32)
    centre = x[:, 11:17, 11:17].mean((1, 2))
    sides = (x[:, 6:9, 8:20], x[:, 19:22, 8:20], x[:, 8:20, 6:9], x[:, 8:20, 19:22])
    ring = np.concatenate([s.reshape(len(x), -1) for s in sides], axis=1)
    return np.where((centre < 20) & ((ring > INK).mean(1) > 0.3), 0, -1).astype(np.int16)


# As semilabel labeling functions (they take an LFBatch).
def thin_is_one_lf(batch) -> np.ndarray:
    return thin_is_one(batch.images)


def hollow_is_zero_lf(batch) -> np.ndarray:
    return hollow_is_zero(batch.images)
