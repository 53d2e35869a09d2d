"""Which unlabeled examples are most worth a person's label, as pure functions of a
model's predicted probabilities (N, K) and embeddings (N, D).

Every strategy returns the chosen row indices, best first, and a score per chosen row
(higher: more worth labeling). Ties and random choices use the generator passed in, so
a selection is reproducible from the seed.

- `random`: uniform, the baseline every other strategy must beat.
- `least_confidence`, `margin`, `entropy`: uncertainty of the prediction.
- `kcenter`: k-center greedy (coreset) on the embeddings, starting from the labeled
  examples: each pick is the pool example farthest from everything chosen or labeled.
  With `candidates_per_pick` set, it runs on a uniform random sample of
  `candidates_per_pick` x budget pool examples (the whole pool when that is smaller):
  what the sampling stage does, so it keeps embeddings for those examples only.
- `class_balanced`: the same number of picks per predicted class, most uncertain
  (smallest margin) first within a class, so rare classes get their share.
- `cluster_margin` (Citovsky et al., 2021): the `candidates_per_pick` x budget (10 x by
  default) smallest-margin examples, clustered (k-means on the embeddings), then picked
  round-robin from the smallest clusters up, smallest margin first within a cluster:
  uncertain, but not redundant.

Random tie-breaks draw one number per pool row, in row order (`rng.random(N)`), so a
pool scored in batches or shards can draw each row's number where it is scored and
still choose exactly what these functions choose on the whole pool
(`tasks.sampling.candidates`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import numpy as np

from configs.sampling import Strategy

STRATEGIES: tuple[str, ...] = get_args(Strategy)
CLUSTER_MARGIN_CANDIDATES = 10  # cluster_margin's candidates per pick, unless told


@dataclass(frozen=True)
class Selection:
    rows: np.ndarray  # (B,) indices into the pool, best first
    scores: np.ndarray  # (B,) higher: more worth a label

    def __len__(self) -> int:
        return len(self.rows)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs.max(1)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p_top1 - p_top2): 1 when the two best classes tie, 0 when one is certain."""
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(1)


def _top(scores: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
    """The `budget` highest scores; ties broken at random (reproducibly)."""
    budget = min(budget, len(scores))
    jitter = rng.random(len(scores))
    order = np.lexsort((jitter, -scores))[:budget]
    return Selection(order, scores[order])


def sample_rows(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform random sample of `size` of `n` rows, in row order: the rows with the
    smallest of one random number each (all `n` rows, and no draw, when `size >= n`)."""
    if size >= n:
        return np.arange(n)
    return np.sort(_top(np.zeros(n), size, rng).rows)


def select_random(
    probs: np.ndarray, budget: int, rng: np.random.Generator, **_: object
) -> Selection:
    rows = rng.permutation(len(probs))[: min(budget, len(probs))]
    return Selection(rows, np.zeros(len(rows)))


def kcenter_greedy(
    embeddings: np.ndarray,
    budget: int,
    anchors: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> Selection:
    """Farthest-first traversal: each pick maximizes its distance to the nearest of the
    anchors (labeled examples) and earlier picks. Score: that distance."""
    n = len(embeddings)
    budget = min(budget, n)
    if budget == 0:
        return Selection(np.zeros(0, int), np.zeros(0))
    x = embeddings.astype(np.float64)
    sq = (x**2).sum(1)
    if anchors is not None and len(anchors):
        a = anchors.astype(np.float64)
        nearest = np.full(n, np.inf)
        for i in range(0, len(a), 1024):  # (N, 1024) at a time: bounded memory
            chunk = a[i : i + 1024]
            d = sq[:, None] + (chunk**2).sum(1)[None] - 2 * x @ chunk.T
            nearest = np.minimum(nearest, d.min(1))
        first = None
    else:  # no anchor: start from a random example (the rng's choice)
        rng = rng or np.random.default_rng(0)
        first = int(rng.integers(n))
        nearest = np.full(n, np.inf)
    rows, scores = [], []
    for _ in range(budget):
        if first is not None:
            pick, first = first, None
        else:
            pick = int(np.argmax(nearest))
        rows.append(pick)
        scores.append(
            float(np.sqrt(max(nearest[pick], 0.0))) if np.isfinite(nearest[pick]) else 0.0
        )
        d = sq + sq[pick] - 2 * x @ x[pick]
        nearest = np.minimum(nearest, d)
        nearest[pick] = -np.inf  # never again
    return Selection(np.array(rows), np.array(scores))


def class_balanced(probs: np.ndarray, budget: int, rng: np.random.Generator) -> Selection:
    """Round-robin over predicted classes, smallest margin first within each (ties at
    random: one draw per pool row)."""
    budget = min(budget, len(probs))
    unc = margin_uncertainty(probs)
    pred = probs.argmax(1)
    jitter = rng.random(len(probs))
    queues = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(pred == c)
        queues.append(members[np.lexsort((jitter[members], -unc[members]))])
    rows = round_robin(queues, budget)
    return Selection(rows, unc[rows])


def round_robin(queues: list[np.ndarray], budget: int) -> np.ndarray:
    """Up to `budget` items: the first of each queue in turn, then the second, ..."""
    rows: list[int] = []
    depth = 0
    while len(rows) < budget and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(rows) < budget:
                rows.append(int(q[depth]))
        depth += 1
    return np.array(rows, dtype=int)


def cluster_margin(
    probs: np.ndarray,
    embeddings: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    candidates_per_pick: int = CLUSTER_MARGIN_CANDIDATES,
) -> Selection:
    """Cluster-Margin: smallest-margin candidates, clustered, picked round-robin from the
    smallest cluster up (see the module docstring)."""
    budget = min(budget, len(probs))
    if budget == 0:
        return Selection(np.zeros(0, int), np.zeros(0))
    unc = margin_uncertainty(probs)
    m = min(len(probs), candidates_per_pick * budget)
    cand = _top(unc, m, rng).rows
    picks = cluster_round_robin(embeddings[cand], unc[cand], budget, rng)
    return Selection(cand[picks], unc[cand[picks]])


def cluster_round_robin(
    embeddings: np.ndarray, unc: np.ndarray, budget: int, rng: np.random.Generator
) -> np.ndarray:
    """Cluster-Margin's picks among its candidates (in the order given, most uncertain
    first): k-means into `budget` clusters, then round-robin from the smallest cluster
    up, most uncertain first within a cluster. Returns positions among the candidates."""
    from sklearn.cluster import KMeans

    k = min(budget, len(unc))
    labels = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(2**31 - 1))).fit_predict(
        embeddings.astype(np.float64)
    )
    clusters = [np.flatnonzero(labels == c) for c in range(k)]
    clusters.sort(key=len)
    return round_robin([c[np.argsort(-unc[c], kind="stable")] for c in clusters], budget)


def kcenter_on_sample(
    embeddings: np.ndarray,
    budget: int,
    anchors: np.ndarray | None,
    rng: np.random.Generator,
    candidates_per_pick: int | None,
) -> Selection:
    """k-center greedy on a uniform sample of `candidates_per_pick` x budget rows (all
    rows when `candidates_per_pick` is None or the pool is no larger)."""
    n = len(embeddings)
    cand = (
        np.arange(n)
        if candidates_per_pick is None
        else sample_rows(n, candidates_per_pick * budget, rng)
    )
    sel = kcenter_greedy(embeddings[cand], budget, anchors, rng)
    return Selection(cand[sel.rows], sel.scores)


def select(
    strategy: str,
    probs: np.ndarray,
    embeddings: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    anchors: np.ndarray | None = None,
    *,
    candidates_per_pick: int | None = None,
) -> Selection:
    """Run `strategy` on a pool of predicted probabilities and embeddings.
    `candidates_per_pick` bounds the examples `kcenter` (a uniform sample; the whole
    pool when None) and `cluster_margin` (the smallest margins; 10 x budget when None)
    consider."""
    scorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "least_confidence": least_confidence,
        "margin": margin_uncertainty,
        "entropy": entropy,
    }
    if strategy in scorers:
        return _top(scorers[strategy](probs), budget, rng)
    if strategy == "random":
        return select_random(probs, budget, rng)
    if strategy == "kcenter":
        return kcenter_on_sample(embeddings, budget, anchors, rng, candidates_per_pick)
    if strategy == "class_balanced":
        return class_balanced(probs, budget, rng)
    if strategy == "cluster_margin":
        return cluster_margin(
            probs, embeddings, budget, rng, candidates_per_pick or CLUSTER_MARGIN_CANDIDATES
        )
    raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {STRATEGIES}")
