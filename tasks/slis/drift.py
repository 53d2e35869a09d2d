"""Drift: is the newest data, or the unlabeled pool, unlike what the model learned from?

Two checks, each on two views of the images:

- `newest_batch`: the examples of the latest ingest run against a reference window of
  earlier ones;
- `labeled_vs_unlabeled`: the training labels' examples against the unlabeled pool.

The views: the model's embeddings, compared by the maximum mean discrepancy (RBF kernel,
median-heuristic bandwidth) with a permutation test (drift when p < `p_value`); and the
pixel-intensity histograms, compared by the Jensen-Shannon distance (drift above
`js_threshold`), which needs no model and catches brightness and contrast shifts that a
model trained to ignore them would miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HIST_BINS = 32


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T, 0.0)


def mmd2_unbiased(k: np.ndarray, n: int) -> float:
    """Unbiased MMD^2 from the pooled kernel matrix whose first `n` rows are sample X."""
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = len(k) - n
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(MMD^2, p-value) of samples x (n, d) and y (m, d) under an RBF kernel whose
    bandwidth is the median pairwise distance of the pooled sample."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    d2 = _sq_dists(pooled, pooled)
    median = np.median(d2[np.triu_indices(len(pooled), 1)])
    k = np.exp(-d2 / max(median, 1e-12))
    n = len(x)
    observed = mmd2_unbiased(k, n)
    at_least = 0
    for _ in range(permutations):
        perm = rng.permutation(len(pooled))
        at_least += mmd2_unbiased(k[np.ix_(perm, perm)], n) >= observed
    return observed, (1 + at_least) / (1 + permutations)


def intensity_histogram(images: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """The normalized histogram of every pixel value of uint8 images (N, C, H, W)."""
    counts = np.bincount((images.reshape(-1).astype(np.int64) * bins) // 256, minlength=bins)
    return counts / max(counts.sum(), 1)


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2): 0 for equal distributions, 1 for disjoint ones."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p, q, base=2))


@dataclass(frozen=True)
class DriftCheck:
    name: str  # newest_batch | labeled_vs_unlabeled
    n_a: int
    n_b: int
    mmd2: float | None  # None: no model to embed with
    p_value: float | None
    js: float
    breached: bool
    why: str

    def describe(self) -> str:
        emb = (
            f"embedding MMD^2 {self.mmd2:.4f} (p {self.p_value:.3f})"
            if self.mmd2 is not None
            else "no embedding test (no model)"
        )
        return f"{self.name}: {self.n_a} vs {self.n_b} examples; {emb}; intensity JS {self.js:.3f}"


def compare(
    name: str,
    images_a: np.ndarray,
    images_b: np.ndarray,
    embed: Callable[[np.ndarray], np.ndarray] | None,
    *,
    permutations: int,
    p_value: float,
    js_threshold: float,
    rng: np.random.Generator,
) -> DriftCheck:
    """Both views of two samples of uint8 images (N, C, H, W)."""
    js = js_distance(intensity_histogram(images_a), intensity_histogram(images_b))
    mmd2 = p = None
    if embed is not None:
        mmd2, p = mmd_permutation_test(embed(images_a), embed(images_b), permutations, rng)
    reasons = []
    if p is not None and p < p_value:
        reasons.append(f"embeddings differ (MMD permutation p {p:.3f} < {p_value})")
    if js > js_threshold:
        reasons.append(f"pixel intensities differ (JS distance {js:.3f} > {js_threshold})")
    return DriftCheck(
        name, len(images_a), len(images_b), mmd2, p, js, bool(reasons), "; ".join(reasons)
    )
