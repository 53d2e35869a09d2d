"""Label matrices and the vote-level statistics over them: the matrix contract and its
chunked int64 view, distinct vote patterns, majority vote, per-function statistics, and
a synthetic matrix generator for tests.

A label matrix `L` is int, shape (n_rows, n_functions), with values in {ABSTAIN, 0..k-1}.
Pure numpy; no torch, no Prefect, no pandas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ABSTAIN = -1
CHUNK_ROWS = 1 << 16  # rows widened to int64 at a time: per-row temporaries stay bounded


class LabelMatrixError(ValueError):
    """A label matrix, gold vector or prior that breaks the contract; the message says how."""


def _as_label_matrix(L: Any, k: int, *, widen: bool = True) -> np.ndarray:
    """`L` checked against the contract; int64 unless `widen` is False (then in its own
    integer dtype, for callers that widen it chunk by chunk)."""
    if not isinstance(k, int | np.integer) or k < 1:
        raise LabelMatrixError(f"k must be an int >= 1, got {k!r}")
    arr = np.asarray(L)
    if arr.ndim != 2:
        raise LabelMatrixError(f"label matrix must be 2-D (rows, functions), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise LabelMatrixError(f"label matrix must be integer, got dtype {arr.dtype}")
    n_bad, first = 0, None
    for start, part in _chunks(arr):  # checked in int64, a chunk at a time
        bad = (part < ABSTAIN) | (part >= k)
        if bad.any():
            n_bad += int(bad.sum())
            if first is None:
                r, c = np.argwhere(bad)[0]
                first = (start + r, c, part[r, c])
    if first is not None:
        r, c, v = first
        raise LabelMatrixError(
            f"{n_bad} entries outside {{{ABSTAIN}, 0..{k - 1}}}, first L[{r}, {c}] = {v}"
        )
    return arr.astype(np.int64, copy=False) if widen else arr


def _chunks(L: np.ndarray, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, rows of `L` as int64) for consecutive runs of at most `rows` rows: the
    int64 copy of a large matrix exists one chunk at a time."""
    rows = rows or CHUNK_ROWS
    for start in range(0, L.shape[0], rows):
        yield start, L[start : start + rows].astype(np.int64, copy=False)


def label_dtype(k: int) -> np.dtype:
    """The smallest signed integer dtype holding ABSTAIN and the classes 0..k-1."""
    return np.dtype(np.int8 if k <= 127 else np.int16 if k <= 32767 else np.int32)


def _class_counts(L: np.ndarray, k: int) -> np.ndarray:
    """(n, k) number of votes per class in each row (one bincount over row offsets)."""
    n = L.shape[0]
    idx = np.where(L >= 0, L, k)  # abstain -> an extra bin, dropped below
    flat = (np.arange(n)[:, None] * (k + 1) + idx).ravel()
    return np.bincount(flat, minlength=n * (k + 1)).reshape(n, k + 1)[:, :k]


def _unique_rows(L: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct vote patterns, the inverse index and the count of each.

    EM and prediction work on patterns, not rows: a million rows from five functions hold
    at most (k+1)^5 patterns and usually far fewer.
    """
    n, m = L.shape
    if n == 0 or m == 0:  # no rows, or every row is the same empty pattern
        return L[:1], np.zeros(n, dtype=np.int64), np.array([n] if n else [], dtype=np.int64)
    base = k + 1
    if m * np.log2(base) < 62:  # encode each row as one int64
        powers = base ** np.arange(m, dtype=np.int64)
        codes = (L + 1) @ powers
        if base**m <= max(4 * n, 1 << 20):  # few possible patterns: count them, no sort
            cnt = np.bincount(codes, minlength=base**m)
            present = np.flatnonzero(cnt)
            index = np.zeros(base**m, dtype=np.int64)
            index[present] = np.arange(len(present))
            return (present[:, None] // powers) % base - 1, index[codes], cnt[present]
        _, first, inv, cnt = np.unique(
            codes, return_index=True, return_inverse=True, return_counts=True
        )
        return L[first], inv.reshape(-1), cnt
    uniq, inv, cnt = np.unique(L, axis=0, return_inverse=True, return_counts=True)
    return uniq, inv.reshape(-1), cnt


def _pattern_counts(
    L: np.ndarray, k: int, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`_unique_rows` without the inverse index: the distinct patterns of `transform`
    (rows) and their counts, in the same order, counted a chunk of rows at a time."""
    prep = transform or (lambda rows: rows)
    if L.shape[0] <= CHUNK_ROWS:
        U, _, cnt = _unique_rows(prep(L.astype(np.int64, copy=False)), k)
        return U, cnt
    found = [_unique_rows(prep(rows), k) for _, rows in _chunks(L)]
    U = np.concatenate([u for u, _, _ in found])
    cnt = np.concatenate([c for _, _, c in found])
    m = U.shape[1]
    # The order `_unique_rows` gives all rows at once: by code where rows fit in one
    # int64 code, else lexicographic.
    if m * np.log2(k + 1) < 62:
        key = (U + 1) @ ((k + 1) ** np.arange(m, dtype=np.int64))
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        merged = U[first]
    else:
        merged, inv = np.unique(U, axis=0, return_inverse=True)
    total = np.zeros(len(merged), dtype=np.int64)
    np.add.at(total, inv.reshape(-1), cnt)
    return merged, total


def majority_vote(
    L: Any, k: int, *, tie_break: Literal["abstain", "lowest"] = "abstain"
) -> np.ndarray:
    """(n,) the most common non-abstain vote per row; ABSTAIN where no function votes.

    Ties give ABSTAIN (`tie_break="abstain"`) or the smallest tied class (`"lowest"`).
    """
    if tie_break not in ("abstain", "lowest"):
        raise ValueError(f"tie_break must be 'abstain' or 'lowest', got {tie_break!r}")
    L = _as_label_matrix(L, k)
    counts = _class_counts(L, k)
    top = counts.max(1, initial=0)
    pred = counts.argmax(1).astype(np.int64)
    pred[top == 0] = ABSTAIN
    if tie_break == "abstain":
        pred[(counts == top[:, None]).sum(1) > 1] = ABSTAIN
    return pred


def lf_summary(
    L: Any, k: int, y_gold: Any | None = None, gold_mask: Any | None = None
) -> list[dict[str, Any]]:
    """One dict per labeling function (column of `L`).

    Keys: `index`; `coverage` (share of rows it votes on), `overlap` (share of rows where it
    and another function vote), `conflict` (share of rows where another function votes a
    different class), `polarity` (sorted list of classes it outputs); `gold_accuracy` (its
    accuracy on the gold rows it votes on; NaN if none or no gold given) and `gold_covered`
    (number of those rows). `y_gold` is (n,) aligned with the rows; the gold rows are
    `gold_mask` (n,) bool if given, else the rows where `y_gold` is not ABSTAIN.
    """
    L = _as_label_matrix(L, k, widen=False)
    n, m = L.shape
    gold = None if y_gold is None else _Gold.of(y_gold, gold_mask, n, k)
    counts = _VoteCounts.zeros(m, k)
    for start, Lc in _chunks(L):  # integer counts: the same numbers as all rows at once
        counts.add(Lc, k, gold.rows(start, len(Lc)) if gold is not None else None)
    denom = max(n, 1)
    per_class = counts.per_class.reshape(m, k)
    gold_acc = np.full(m, np.nan)
    if gold is not None:
        np.divide(counts.gold_right, counts.gold_cov, out=gold_acc, where=counts.gold_cov > 0)
    return [
        {
            "index": j,
            "coverage": float(counts.cov[j] / denom),
            "overlap": float(counts.overlap[j] / denom),
            "conflict": float(counts.conflict[j] / denom),
            "polarity": np.flatnonzero(per_class[j]).tolist(),
            "gold_accuracy": float(gold_acc[j]),
            "gold_covered": int(counts.gold_cov[j]),
        }
        for j in range(m)
    ]


@dataclass(frozen=True)
class _Gold:
    """Gold labels aligned with the rows of a label matrix, and which rows are gold."""

    y: np.ndarray  # (n,) integer, ABSTAIN outside gold
    mask: np.ndarray  # (n,) bool

    @classmethod
    def of(cls, y_gold: Any, gold_mask: Any | None, n: int, k: int) -> _Gold:
        """`y_gold` and `gold_mask` checked (see `lf_summary`)."""
        y = np.asarray(y_gold).reshape(-1)
        if not np.issubdtype(y.dtype, np.integer):
            y = y.astype(np.int64)
        if y.shape != (n,):
            raise LabelMatrixError(f"y_gold must have {n} entries, got {y.shape}")
        g = y != ABSTAIN if gold_mask is None else np.asarray(gold_mask, dtype=bool)
        if g.shape != (n,):
            raise LabelMatrixError(f"gold_mask must have {n} entries, got {g.shape}")
        yg = y[g].astype(np.int64)
        if ((yg < 0) | (yg >= k)).any():
            raise LabelMatrixError("gold_mask selects rows whose y_gold is not a class")
        return cls(y, g)

    def rows(self, start: int, n: int) -> _Gold:
        return _Gold(self.y[start : start + n], self.mask[start : start + n])


@dataclass
class _VoteCounts:
    """Per-function counts over the rows seen so far, summed a chunk at a time."""

    cov: np.ndarray  # (m,) rows it votes on
    overlap: np.ndarray  # (m,) ... where another function votes too
    conflict: np.ndarray  # (m,) ... where another function votes another class
    per_class: np.ndarray  # (m * k,) how often it outputs each class
    gold_cov: np.ndarray  # (m,) gold rows it votes on
    gold_right: np.ndarray  # (m,) ... and gives the gold label

    @classmethod
    def zeros(cls, m: int, k: int) -> _VoteCounts:
        z = [np.zeros(m, dtype=np.int64) for _ in range(5)]
        return cls(z[0], z[1], z[2], np.zeros(m * k, dtype=np.int64), z[3], z[4])

    def add(self, Lc: np.ndarray, k: int, gold: _Gold | None) -> None:
        """Count the rows `Lc` (int64), whose gold labels are `gold`."""
        m = Lc.shape[1]
        votes = Lc >= 0
        n_votes = votes.sum(1, keepdims=True)
        counts = _class_counts(Lc, k)  # (rows, k)
        same = np.take_along_axis(counts, np.where(votes, Lc, 0), axis=1)  # incl. itself
        self.cov += votes.sum(0)
        self.overlap += (votes & (n_votes >= 2)).sum(0)
        self.conflict += (votes & (n_votes - same > 0)).sum(0)
        # one bincount over column offsets
        self.per_class += np.bincount(
            (np.arange(m) * k + np.where(votes, Lc, 0))[votes], minlength=m * k
        )
        if gold is not None:
            covered = votes[gold.mask]
            self.gold_cov += covered.sum(0)
            self.gold_right += (covered & (Lc[gold.mask] == gold.y[gold.mask][:, None])).sum(0)


def synthetic_label_matrix(
    n: int,
    k: int,
    accuracies: Sequence[float],
    coverages: Sequence[float],
    class_balance: Sequence[float],
    seed: int,
    copies: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(L, y): n rows of true classes drawn from `class_balance` and one column per source
    that votes with probability `coverages[j]` (independently of everything) and is right
    with probability `accuracies[j]`, else a class drawn uniformly from the others.
    `copies` lists sources whose column is appended again, unchanged. Deterministic by seed.
    """
    acc = np.asarray(accuracies, dtype=np.float64)
    cov = np.asarray(coverages, dtype=np.float64)
    balance = np.asarray(class_balance, dtype=np.float64)
    if acc.shape != cov.shape or acc.ndim != 1:
        raise ValueError("accuracies and coverages must be 1-D and of equal length")
    if balance.shape != (k,) or (balance < 0).any() or not balance.sum() > 0:
        raise ValueError(f"class_balance must be {k} non-negative weights")
    if ((acc < 0) | (acc > 1) | (cov < 0) | (cov > 1)).any():
        raise ValueError("accuracies and coverages must lie in [0, 1]")
    if any(not 0 <= c < len(acc) for c in copies):
        raise ValueError(f"copies must index the {len(acc)} sources, got {list(copies)}")
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=balance / balance.sum())
    m = len(acc)
    right = rng.random((n, m)) < acc
    shift = rng.integers(1, k, size=(n, m)) if k > 1 else np.zeros((n, m), dtype=np.int64)
    L = np.where(right, y[:, None], (y[:, None] + shift) % k)
    L = np.where(rng.random((n, m)) < cov, L, ABSTAIN).astype(np.int64)
    if copies:
        L = np.concatenate([L, L[:, list(copies)]], axis=1)
    return L, y


def one_rule_per_class_matrix(
    n: int, k: int, hit: float, false_alarm: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(L, y): n rows of uniformly drawn classes and one rule per class, as users write
    them: rule c votes c on `hit` of class c's rows and on `false_alarm` of the other
    rows, and abstains elsewhere. Deterministic by seed."""
    if not (0 <= hit <= 1 and 0 <= false_alarm <= 1):
        raise ValueError("hit and false_alarm must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    L = np.full((n, k), ABSTAIN, dtype=np.int64)
    for c in range(k):
        L[np.where(y == c, rng.random(n) < hit, rng.random(n) < false_alarm), c] = c
    return L, y
