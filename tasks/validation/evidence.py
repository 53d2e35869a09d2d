"""How much the gold evidence says: confidence bounds on gate metrics, for one model and
for the difference between two models on the same gold examples.

Every bound here is one-sided at the given confidence: `low` is below the true value,
and `high` above it, each with probability at least `confidence` (Clopper-Pearson) or
close to it (score and bootstrap bounds). A gate that passes a floor only when `low`
clears it therefore promotes a model whose true value is under the floor at most
`1 - confidence` of the time (bench/gate.py measures it).

- a proportion (accuracy, one class's recall): Clopper-Pearson, exact;
- the paired accuracy difference of two models: Tango's score interval on the
  discordant pairs (Tango 1998), with the exact McNemar p-value beside it;
- macro-F1, ECE and worst-class recall, and their paired differences: a seeded,
  stratified bootstrap (examples resampled within their true class, so every class keeps
  its gold count), vectorized over replicates.
Pure numpy/scipy: nothing here reads files, models or registries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binom, norm

ECE_BINS = 15
BOOTSTRAP_CHUNK = 64  # replicates per vectorized step, at most
BOOTSTRAP_VALUES = 640_000  # replicates x gold examples per step: ~5 MB an array


@dataclass(frozen=True)
class Bounds:
    """A value with its one-sided lower and upper confidence bounds."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


def proportion_bounds(k: int, n: int, confidence: float) -> Bounds:
    """Clopper-Pearson bounds on a proportion from `k` successes in `n` trials."""
    if n <= 0:
        return Bounds(math.nan, 0.0, 1.0)
    alpha = 1.0 - confidence
    low = 0.0 if k <= 0 else float(beta.ppf(alpha, k, n - k + 1))
    high = 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return Bounds(k / n, low, high)


# -- two models on the same examples ---------------------------------------------------------


@dataclass(frozen=True)
class PairedCounts:
    """Correctness of a candidate and a champion on the same `n` gold examples.

    `gained`: the candidate right where the champion was wrong; `lost`: the reverse."""

    n: int
    gained: int
    lost: int

    @classmethod
    def of(cls, cand_correct: np.ndarray, champ_correct: np.ndarray) -> PairedCounts:
        c, h = cand_correct.astype(bool), champ_correct.astype(bool)
        return cls(int(len(c)), int((c & ~h).sum()), int((~c & h).sum()))

    @property
    def difference(self) -> float:
        return (self.gained - self.lost) / self.n if self.n else math.nan


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value for "both models are equally accurate": under
    that hypothesis each discordant pair is a fair coin."""
    d = gained + lost
    if d == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(gained, lost), d, 0.5)))


def _tango_z(delta: np.ndarray, gained: float, lost: float, n: float) -> np.ndarray:
    """Tango's score statistic for "accuracy difference = delta" (decreasing in delta)."""
    a = 2 * n
    b = -(gained + lost) + delta * (2 * n - gained + lost)
    c = -lost * delta * (1 - delta)
    q = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))) / (2 * a)  # restricted MLE of P(lost)
    var = n * np.maximum(2 * q + delta - delta * delta, 1e-300)
    return (gained - lost - n * delta) / np.sqrt(var)


def paired_accuracy_bounds(counts: PairedCounts, confidence: float) -> Bounds:
    """Bounds on accuracy(candidate) - accuracy(champion) from the discordant pairs."""
    n, g, lo = counts.n, counts.gained, counts.lost
    if n == 0:
        return Bounds(math.nan, -1.0, 1.0)
    z = float(norm.ppf(confidence))
    d = (g - lo) / n

    def solve(target: float, left: float, right: float) -> float:
        # Z(delta) is decreasing: bisect for Z(delta) = target on [left, right].
        lft, rgt = np.float64(left), np.float64(right)
        for _ in range(80):
            mid = (lft + rgt) / 2
            if _tango_z(mid, g, lo, n) > target:
                lft = mid
            else:
                rgt = mid
        return float((lft + rgt) / 2)

    eps = 1e-12
    low = -1.0 if _tango_z(np.float64(-1 + eps), g, lo, n) <= z else solve(z, -1 + eps, d)
    high = 1.0 if _tango_z(np.float64(1 - eps), g, lo, n) >= -z else solve(-z, d, 1 - eps)
    return Bounds(d, min(low, d), max(high, d))


# -- the bootstrap ---------------------------------------------------------------------------


def _macro_f1(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro-F1 over classes with support, per row: tp, support, predicted are (R, K)."""
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=denom > 0)
    present = support > 0
    return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)


def _ece(conf: np.ndarray, correct: np.ndarray, bins: np.ndarray, n: int) -> np.ndarray:
    """ECE per row from resampled (R, N) confidences, correctness and bin indices."""
    rows = np.arange(conf.shape[0])[:, None]
    flat = (rows * ECE_BINS + bins).ravel()
    size = conf.shape[0] * ECE_BINS
    s_conf = np.bincount(flat, conf.ravel(), size).reshape(-1, ECE_BINS)
    s_corr = np.bincount(flat, correct.ravel().astype(float), size).reshape(-1, ECE_BINS)
    return np.abs(s_corr - s_conf).sum(1) / max(n, 1)


def confidence_bins(conf: np.ndarray) -> np.ndarray:
    """The ECE bin of each confidence (15 equal-width bins, right edges inclusive)."""
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    return np.clip(np.digitize(conf, edges[1:-1], right=True), 0, ECE_BINS - 1)


@dataclass(frozen=True)
class Predictions:
    """One model's predicted class and confidence on each gold example."""

    pred: np.ndarray  # (N,) int
    conf: np.ndarray  # (N,) float: the predicted class's probability

    @classmethod
    def of(cls, probs: np.ndarray) -> Predictions:
        if len(probs) == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0))
        return cls(probs.argmax(1).astype(np.int64), probs.max(1).astype(float))


def bootstrap_chunk(n: int) -> int:
    """Replicates drawn per vectorized step over `n` gold examples: 64 up to 10,000
    examples, fewer above, so a step's arrays stay about `BOOTSTRAP_VALUES` values (a
    100,000-example gold set would otherwise hold ~350 MB of index arrays a step)."""
    return max(1, min(BOOTSTRAP_CHUNK, BOOTSTRAP_VALUES // max(n, 1)))


def bootstrap_metrics(
    y: np.ndarray,
    models: list[Predictions],
    k: int,
    *,
    samples: int,
    seed: int,
) -> list[dict[str, np.ndarray]]:
    """Stratified bootstrap replicates of macro-F1, ECE and worst-class recall for each
    model, all resampling the same examples (so differences are paired).

    Returns one dict per model: metric -> (samples,) replicate values."""
    n = len(y)
    out = [
        {m: np.full(samples, np.nan) for m in ("macro_f1", "ece", "worst_class_recall")}
        for _ in models
    ]
    if n == 0 or samples == 0:
        return out
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in range(k)]
    groups = [g for g in groups if len(g)]
    support = np.bincount(y, minlength=k).astype(float)
    bins = [confidence_bins(m.conf) for m in models]
    chunk = bootstrap_chunk(n)
    for start in range(0, samples, chunk):
        r = min(chunk, samples - start)
        # (r, N): each class's examples drawn with replacement within the class
        idx = np.concatenate([g[rng.integers(0, len(g), size=(r, len(g)))] for g in groups], 1)
        yy = y[idx]
        rows = np.arange(r)[:, None] * k
        for model, b, res in zip(models, bins, out, strict=True):
            pred = model.pred[idx]
            correct = pred == yy
            tp = np.bincount((rows + yy)[correct], minlength=r * k).reshape(r, k).astype(float)
            predicted = np.bincount((rows + pred).ravel(), minlength=r * k).reshape(r, k)
            sl = slice(start, start + r)
            res["macro_f1"][sl] = _macro_f1(tp, np.broadcast_to(support, (r, k)), predicted)
            res["ece"][sl] = _ece(model.conf[idx], correct, b[idx], n)
            recall = np.where(support > 0, tp / np.maximum(support, 1), np.inf)
            res["worst_class_recall"][sl] = recall.min(1)
    return out


def percentile_bounds(value: float, replicates: np.ndarray, confidence: float) -> Bounds:
    """Percentile-bootstrap bounds around an observed value."""
    if len(replicates) == 0 or value != value:
        return Bounds(value, -math.inf, math.inf)
    low, high = np.quantile(replicates, [1 - confidence, confidence])
    return Bounds(value, float(min(low, value)), float(max(high, value)))


# -- how much more evidence would decide ---------------------------------------------------


LABELS_CAP = 1_000_000  # "no realistic number of labels": the estimate sits on the limit


def labels_to_decide(n: int, bounds: Bounds, threshold: float, cap: int = LABELS_CAP) -> int:
    """How many labels in all (of the kind `n` counts) would most likely move the bound
    past `threshold`, if the estimate stays where it is: a bound's distance from its
    estimate shrinks as 1/sqrt(n). Without an estimate (no labels), 0: the minimums say
    what is needed then. When the estimate sits on the threshold, `cap`."""
    if n <= 0 or bounds.value != bounds.value:
        return 0
    gap = abs(bounds.value - threshold)
    if gap < 1e-9:
        return cap
    side = bounds.low if bounds.value > threshold else bounds.high
    width = abs(bounds.value - side)
    if width <= gap:
        return n
    return int(min(cap, math.ceil(n * (width / gap) ** 2)))
