"""What each strategy keeps of a pool scored batch by batch, and how the kept parts of
many batches (or shards) finish into exactly the choice `strategies.select` makes on
the whole pool's arrays with the same generator.

Every strategy but `random` breaks ties with one random number per pool row, drawn in
row order from the batch's generator (`rng.random(N)`). A shard that starts at pool
position `p` draws its rows' numbers from a copy of the generator advanced by `p`
(`jitter_at`), so a row gets the same number wherever it is scored; when the shards are
merged, the generator itself is advanced past all `N` draws, and whatever the strategy
draws next (k-means' seed, k-center's first pick) is what it draws on the whole pool.

What is kept, at most (N = pool size, B = budget, K = classes, M = candidates_per_pick):

- `least_confidence`, `margin`, `entropy`: the best B rows by (score, random number):
  their position, score, random number and probabilities (for the suggestion);
- `class_balanced`: the same, B per predicted class (round-robin never takes more
  than B from one class);
- `cluster_margin`: the M x B smallest margins, with their embeddings (k-means runs on
  them at the end, as it does on the whole pool);
- `kcenter`: a uniform sample of M x B rows (the smallest random numbers, a reservoir
  by random keys) with their embeddings; k-center greedy runs on the sample, starting
  from the human-labeled anchors. On a pool no larger than M x B it keeps every row
  and draws nothing, as `kcenter_greedy` on the whole pool does. The sample depends
  on the random numbers alone, so `uniform_sample` draws it before anything is scored
  and only its rows are scored (`sampled`): the same rows, numbers and choice.

`random` keeps nothing: it permutes the pool positions (`select_random`), and only the
picked rows are scored, for their suggestions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tasks.sampling.strategies import (
    CLUSTER_MARGIN_CANDIDATES,
    Selection,
    cluster_round_robin,
    entropy,
    kcenter_greedy,
    least_confidence,
    margin_uncertainty,
    round_robin,
)

MEASURES = {
    "least_confidence": least_confidence,
    "margin": margin_uncertainty,
    "entropy": entropy,
    "class_balanced": margin_uncertainty,
    "cluster_margin": margin_uncertainty,
}


@dataclass(frozen=True)
class KeepPlan:
    """What to keep of a pool of `pool_size` rows for `strategy` within `budget`."""

    strategy: str
    budget: int
    n_classes: int
    pool_size: int
    candidates_per_pick: int = CLUSTER_MARGIN_CANDIDATES

    @property
    def keep(self) -> int:
        """Rows kept (per class for class_balanced)."""
        if self.strategy in ("kcenter", "cluster_margin"):
            return min(self.pool_size, self.candidates_per_pick * self.budget)
        return min(self.pool_size, self.budget)

    @property
    def per_class(self) -> bool:
        return self.strategy == "class_balanced"

    @property
    def with_embeddings(self) -> bool:
        return self.strategy in ("kcenter", "cluster_margin")

    @property
    def draws(self) -> bool:
        """Whether the strategy draws one random number per pool row (k-center only when
        it samples the pool)."""
        if self.strategy == "kcenter":
            return self.candidates_per_pick * self.budget < self.pool_size
        return self.strategy != "random"

    def score(self, probs: np.ndarray) -> np.ndarray:
        """The per-row score kept rows are ranked by (higher first); k-center: none, so
        the smallest random numbers win (a uniform sample)."""
        if self.strategy == "kcenter":
            return np.zeros(len(probs), np.float32)
        return MEASURES[self.strategy](probs)


def uniform_sample(
    plan: KeepPlan, rng: np.random.Generator, chunk: int = 1 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """The pool positions (ascending) a drawing strategy keeps when every score is
    equal: the `plan.keep` smallest random numbers, ties by position, and those numbers.
    They are the numbers the scored path draws (one per pool row, in pool order, from
    `rng`'s state, which is not advanced), drawn `chunk` rows at a time."""
    draw = jitter_at(rng.bit_generator.state, 0)
    pos, jitter = np.zeros(0, np.int64), np.zeros(0)
    for start in range(0, plan.pool_size, chunk):
        n = min(chunk, plan.pool_size - start)
        p = np.concatenate([pos, np.arange(start, start + n, dtype=np.int64)])
        j = np.concatenate([jitter, draw.random(n)])
        keep = np.lexsort((p, j))[: plan.keep]
        pos, jitter = p[keep], j[keep]
    order = np.argsort(pos)
    return pos[order], jitter[order]


def sampled(
    plan: KeepPlan, pos: np.ndarray, jitter: np.ndarray, probs: np.ndarray, emb: np.ndarray
) -> Kept:
    """What `plan` keeps of the whole pool, from the `uniform_sample` rows scored alone."""
    best = Best(plan.keep, pos, plan.score(probs), jitter, probs, emb)
    return Kept((best,), seen=plan.pool_size)


def jitter_at(state: dict[str, Any], offset: int) -> np.random.Generator:
    """A generator in `state`, advanced by `offset` draws: it draws what the original
    would draw for pool rows `offset`, `offset + 1`, ... (one 64-bit draw per double)."""
    bits = getattr(np.random, state["bit_generator"])()
    bits.state = state
    bits.advance(offset)
    return np.random.Generator(bits)


@dataclass(frozen=True)
class Best:
    """The best `size` rows seen so far by (score desc, random number asc, position
    asc): the order `strategies._top` gives on the whole pool."""

    size: int
    pos: np.ndarray  # (n,) int64 pool positions
    score: np.ndarray  # (n,)
    jitter: np.ndarray  # (n,) float64
    probs: np.ndarray  # (n, K) float32
    emb: np.ndarray | None  # (n, D) float32, when the strategy needs embeddings

    @classmethod
    def empty(cls, size: int, n_classes: int) -> Best:
        z = np.zeros(0)
        return cls(size, z.astype(np.int64), z, z, np.zeros((0, n_classes), np.float32), None)

    def order(self) -> np.ndarray:
        return np.lexsort((self.pos, self.jitter, -self.score))

    def add(self, other: Best) -> Best:
        """The best `size` of both."""
        if not len(other.pos):
            return self
        if not len(self.pos):
            both = other
        else:
            emb = None if self.emb is None else np.concatenate([self.emb, other.emb])
            both = Best(
                self.size,
                np.concatenate([self.pos, other.pos]),
                np.concatenate([self.score, other.score]),
                np.concatenate([self.jitter, other.jitter]),
                np.concatenate([self.probs, other.probs]),
                emb,
            )
        keep = both.order()[: self.size]
        return both.take(keep)

    def take(self, rows: np.ndarray) -> Best:
        return replace(
            self,
            pos=self.pos[rows],
            score=self.score[rows],
            jitter=self.jitter[rows],
            probs=self.probs[rows],
            emb=None if self.emb is None else self.emb[rows],
        )


@dataclass(frozen=True)
class Kept:
    """What a strategy keeps of some rows: one `Best`, or one per predicted class; and
    how many rows it saw."""

    best: tuple[Best, ...]
    seen: int = 0

    @classmethod
    def empty(cls, plan: KeepPlan) -> Kept:
        n = plan.n_classes if plan.per_class else 1
        return cls(tuple(Best.empty(plan.keep, plan.n_classes) for _ in range(n)))

    def add_batch(
        self,
        plan: KeepPlan,
        pos: np.ndarray,
        probs: np.ndarray,
        emb: np.ndarray,
        jitter: np.ndarray,
    ) -> Kept:
        """Keep what `plan` needs of one scored batch (pool positions `pos`)."""
        batch = Best(
            plan.keep,
            np.asarray(pos, np.int64),
            plan.score(probs),
            jitter,
            probs,
            emb if plan.with_embeddings else None,
        )
        if not plan.per_class:
            return Kept((self.best[0].add(batch),), self.seen + len(pos))
        pred = probs.argmax(1)
        return Kept(
            tuple(b.add(batch.take(np.flatnonzero(pred == c))) for c, b in enumerate(self.best)),
            self.seen + len(pos),
        )

    def merge(self, other: Kept) -> Kept:
        return Kept(
            tuple(a.add(b) for a, b in zip(self.best, other.best, strict=True)),
            self.seen + other.seen,
        )


@dataclass(frozen=True)
class Picked:
    """The chosen pool positions, best first, their scores and probabilities."""

    selection: Selection
    probs: np.ndarray | None  # (B, K); None when nothing scored the pool


def finish(
    plan: KeepPlan, kept: Kept, rng: np.random.Generator, anchors: np.ndarray | None = None
) -> Picked:
    """The strategy's choice from what was kept of the whole pool; `rng` is the
    generator the pool's random numbers were drawn from (`jitter_at`), not yet advanced."""
    if kept.seen != plan.pool_size:
        raise ValueError(f"kept {kept.seen} rows of a pool of {plan.pool_size}: a shard is missing")
    if plan.draws:
        rng.bit_generator.advance(plan.pool_size)  # past every row's number, as select does
    budget = min(plan.budget, plan.pool_size)
    if plan.per_class:
        ranked = [b.take(b.order()) for b in kept.best]
        offsets = np.cumsum([0] + [len(b.pos) for b in ranked])
        rows = round_robin(
            [offsets[c] + np.arange(len(b.pos)) for c, b in enumerate(ranked)], budget
        )
        flat = _concat(ranked).take(rows)
        return Picked(Selection(flat.pos, flat.score), flat.probs)
    best = kept.best[0]
    if plan.strategy == "kcenter":
        sample = best.take(np.argsort(best.pos, kind="stable"))  # in pool order
        sel = kcenter_greedy(sample.emb, budget, anchors, rng)
        chosen = sample.take(sel.rows)
        return Picked(Selection(chosen.pos, sel.scores), chosen.probs)
    ranked = best.take(best.order())
    if plan.strategy == "cluster_margin":
        if budget == 0:
            ranked = ranked.take(np.zeros(0, int))
        else:
            ranked = ranked.take(cluster_round_robin(ranked.emb, ranked.score, budget, rng))
    return Picked(Selection(ranked.pos, ranked.score), ranked.probs)


def _concat(parts: list[Best]) -> Best:
    out = parts[0]
    for p in parts[1:]:
        out = Best(
            out.size + p.size,
            np.concatenate([out.pos, p.pos]),
            np.concatenate([out.score, p.score]),
            np.concatenate([out.jitter, p.jitter]),
            np.concatenate([out.probs, p.probs]),
            None,
        )
    return out
