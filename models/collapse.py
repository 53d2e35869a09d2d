"""Is pseudo-labeling collapsing onto a few classes? The share of pseudo-label weight
each class got over the last part of the student phase, against the share it should
have (the labeled prior, or uniform).

A class whose share falls to a third of what it should be has collapsed (the model stopped
saying it; its examples are being taught as other classes); one whose share is three times
what it should be has exploded (it swallows others). Either is what confirmation bias
looks like from the outside, and what `train.distribution_alignment` is there to resist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

FACTOR = 3.0  # a share below expected / FACTOR collapsed; above expected * FACTOR exploded
TAIL = 0.25  # the last quarter of the student phase's logged rows


@dataclass(frozen=True)
class ClassShare:
    """One class's share of the pseudo-label weight against the share expected."""

    index: int
    share: float
    expected: float
    state: Literal["ok", "collapsed", "exploded"]


def pseudo_label_shares(
    history: Sequence[dict[str, float]],
    expected: Sequence[float],
    *,
    factor: float = FACTOR,
    tail: float = TAIL,
) -> list[ClassShare]:
    """Each class's share of the pseudo-label weight over the last `tail` of the student
    rows of a training `history` (the loop's `pseudo_labels_class_<k>` counts), judged
    against `expected` (any non-negative weights; normalized here). Empty when no
    pseudo-label was counted."""
    k = len(expected)
    rows = [r for r in history if f"pseudo_labels_class_{k - 1}" in r]
    rows = rows[int(len(rows) * (1 - tail)) :] if rows else []
    counts = np.array([sum(r[f"pseudo_labels_class_{c}"] for r in rows) for c in range(k)])
    if counts.sum() <= 0:
        return []
    share = counts / counts.sum()
    prior = np.asarray(expected, dtype=float)
    prior = prior / prior.sum()
    out = []
    for c in range(k):
        state: Literal["ok", "collapsed", "exploded"] = "ok"
        if share[c] < prior[c] / factor:
            state = "collapsed"
        elif share[c] > prior[c] * factor:
            state = "exploded"
        out.append(ClassShare(c, float(share[c]), float(prior[c]), state))
    return out
