"""Weak-supervision math over a label matrix: majority vote, a Dawid–Skene label model,
per-function statistics, and a synthetic matrix generator for tests.

A label matrix `L` is int, shape (n_rows, n_functions), with values in {ABSTAIN, 0..k-1}.
Pure numpy (plus scipy's assignment solver); no torch, no Prefect, no pandas.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

log = logging.getLogger(__name__)

ABSTAIN = -1
CHUNK_ROWS = 1 << 16  # rows widened to int64 at a time: per-row temporaries stay bounded
_TINY = 1e-300  # floor before log: keeps log(0) finite so no row ever becomes NaN


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


def _log_posterior(Ui: np.ndarray, confusion: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(u, k) normalized log P(class | votes) for index-coded patterns (abstain = k)."""
    u, m = Ui.shape
    k = prior.shape[0]
    # per source (k_vote + 1, k_class): row v = log P(vote v | class); abstain row is 0
    table = np.zeros((m, k + 1, k))
    table[:, :k, :] = np.log(np.maximum(confusion, _TINY)).transpose(0, 2, 1)
    lp = np.repeat(np.log(np.maximum(prior, _TINY))[None, :], u, axis=0)
    for j in range(m):
        lp += table[j][Ui[:, j]]
    top = lp.max(1, keepdims=True)
    return lp - (top + np.log(np.exp(lp - top).sum(1, keepdims=True)))


def _m_step(
    Ui: np.ndarray, w: np.ndarray, T: np.ndarray, smoothing: float, fixed_prior: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confusion matrices, prior and the expected joint counts (m, k_true, k_vote)."""
    m = Ui.shape[1]
    k = T.shape[1]
    wT = T * w[:, None]  # (u, k)
    joint = np.empty((m, k, k))
    for j in range(m):
        # = (wT).T @ onehot(L_j), as one bincount: bin (vote, class), abstain bins dropped
        flat = (Ui[:, j, None] * k + np.arange(k)).ravel()
        c = np.bincount(flat, weights=wT.ravel(), minlength=(k + 1) * k).reshape(k + 1, k)
        joint[j] = c[:k].T
    counts = joint + smoothing
    total = counts.sum(2, keepdims=True)
    confusion = np.divide(counts, total, out=np.full_like(counts, 1.0 / k), where=total > 0)
    if fixed_prior is not None:
        return confusion, fixed_prior, joint
    mass = wT.sum(0) + smoothing
    prior = mass / mass.sum() if mass.sum() > 0 else np.full(k, 1.0 / k)
    return confusion, prior, joint


class DawidSkene:
    """Dawid–Skene (1979) label model: one confusion matrix per source and a class prior,
    fitted by EM from majority-vote soft labels.

    Near-identical sources (copies) are merged before estimation so a copy does not count
    twice, and the classes are aligned after EM so that sources agree with the truth more
    than with any relabeling (no inverted predictions).

    Attributes after `fit`: `confusion_` (m, k, k) rows = true class, columns = vote, each
    row sums to 1 (abstentions excluded; a dropped duplicate shares its kept source's
    matrix; a never-voting source gets the uniform matrix); `prior_` (k,); `n_iter_`;
    `converged_`; `duplicates_` list of (kept, dropped) source pairs;
    `realigned_` True when EM ended in relabeled classes and they were put back.
    """

    def fit(
        self,
        L: Any,
        k: int,
        *,
        max_iter: int = 100,
        tol: float = 1e-5,
        smoothing: float = 0.01,
        class_prior: Sequence[float] | np.ndarray | None = None,
        duplicate_agreement: float = 0.99,
        y_gold: Any | None = None,
        seed: int | None = None,
    ) -> DawidSkene:
        """Estimate confusion matrices and the class prior from `L` (n, m); returns self.

        `tol` bounds the largest change of any parameter between iterations; `smoothing` is
        added to every expected count (a Dirichlet prior). `class_prior` fixes the prior
        instead of estimating it. Two sources whose votes are identical on at least
        `duplicate_agreement` of the rows where either votes are merged (use > 1 to turn
        this off). `y_gold` (n,) with ABSTAIN outside the gold rows, if given, only fixes
        the class labeling: the latent classes are matched to the gold classes they agree
        with most, which undoes a flip that source agreement alone cannot detect (e.g. a
        majority of inverted sources). With a pinned `class_prior`, a relabeling moves the
        confusion matrices only. EM from the majority-vote start is deterministic: `seed`
        changes nothing and is kept as `seed_` for the run record.
        """
        L = _as_label_matrix(L, k, widen=False)  # widened chunk by chunk
        if max_iter < 0 or tol < 0 or smoothing < 0:
            raise ValueError("max_iter, tol and smoothing must be >= 0")
        n, m = L.shape
        self.k_, self.n_sources_, self.seed_ = int(k), m, seed
        fixed = None
        if class_prior is not None:
            fixed = np.asarray(class_prior, dtype=np.float64)
            if fixed.shape != (k,) or (fixed < 0).any() or not fixed.sum() > 0:
                raise LabelMatrixError(f"class_prior must be {k} non-negative weights: {fixed}")
            fixed = fixed / fixed.sum()
        self._fixed_prior = fixed
        gold = None
        if y_gold is not None:
            gold = np.asarray(y_gold).reshape(-1)  # its own integer dtype: no int64 copy
            if not np.issubdtype(gold.dtype, np.integer):
                gold = gold.astype(np.int64)
            if gold.shape != (n,) or ((gold < ABSTAIN) | (gold >= k)).any():
                raise LabelMatrixError(f"y_gold must be {n} entries in {{{ABSTAIN}, 0..{k - 1}}}")

        U, w = _pattern_counts(L, k)
        self.duplicates_ = _find_duplicates(U, w, duplicate_agreement)
        dropped = {d for _, d in self.duplicates_}
        self._kept = np.array([j for j in range(m) if j not in dropped], dtype=np.int64)
        if dropped:
            U, w = _pattern_counts(L, k, self._merge)
        cov = (U >= 0).any(1)
        U, w = U[cov], w[cov].astype(np.float64)  # uncovered rows carry no information
        Ui = np.where(U >= 0, U, k)

        counts = _class_counts(U, k).astype(np.float64)
        T0 = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)  # majority-vote shares
        confusion, prior, joint = _m_step(Ui, w, T0, smoothing, fixed)
        confusion, prior, joint, self.n_iter_, self.converged_ = _em(
            Ui, w, confusion, prior, joint, max_iter, tol, smoothing, fixed
        )

        # The likelihood is symmetric under relabeling the latent classes, and EM can end
        # in a relabeled optimum (a worse-than-random source covering most rows, a pinned
        # prior that contradicts the sources): keep the labeling under which the sources
        # agree most with the truth; then, given gold, the one that agrees most with gold.
        self.realigned_ = False
        confusion, prior = self._relabel(_alignment(joint.sum(0)), "sources", confusion, prior)
        if gold is not None:
            agreement = self._gold_agreement(L, gold, confusion, prior)
            confusion, prior = self._relabel(_alignment(agreement), "gold", confusion, prior)
        self.prior_ = prior
        full = np.empty((m, k, k))
        full[self._kept] = confusion
        for kept, drop in self.duplicates_:
            full[drop] = full[kept]
        self.confusion_ = full
        return self

    def _gold_agreement(
        self, L: np.ndarray, gold: np.ndarray, confusion: np.ndarray, prior: np.ndarray
    ) -> np.ndarray:
        """(k_latent, k_gold) expected count of covered gold rows per (latent, gold) class."""
        k = self.k_
        rows = gold != ABSTAIN
        Lg = self._merge(L[rows].astype(np.int64))
        covered = (Lg >= 0).any(1)
        T = np.exp(_log_posterior(np.where(Lg >= 0, Lg, k)[covered], confusion, prior))
        return T.T @ np.eye(k)[gold[rows][covered]]

    def _relabel(
        self, perm: np.ndarray | None, by: str, confusion: np.ndarray, prior: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latent class c becomes class perm[c]; a pinned prior stays as given."""
        if perm is None:
            return confusion, prior
        log.warning("Dawid-Skene: classes relabeled %s to agree with the %s", perm.tolist(), by)
        self.realigned_ = True
        if self._fixed_prior is None:
            prior = prior[np.argsort(perm)]
        return _permute(confusion, perm), prior

    def _merge(self, L: np.ndarray) -> np.ndarray:
        """Kept columns, each filled where it abstains from the duplicates merged into it."""
        out = L.copy()
        for kept, drop in self.duplicates_:
            out[:, kept] = np.where(out[:, kept] >= 0, out[:, kept], L[:, drop])
        return out[:, self._kept]

    def _check_fitted(self, L: Any) -> np.ndarray:
        if not hasattr(self, "confusion_"):
            raise RuntimeError("DawidSkene: call fit before predicting")
        L = _as_label_matrix(L, self.k_)
        if L.shape[1] != self.n_sources_:
            raise LabelMatrixError(f"fitted on {self.n_sources_} sources, got {L.shape[1]}")
        return L

    def predict_proba(self, L: Any) -> np.ndarray:
        """(n, k) P(class | votes); rows where every source abstains get `prior_`."""
        L = self._check_fitted(L)
        P, inv = self._pattern_proba(L)
        return P[inv]

    def predict(self, L: Any) -> np.ndarray:
        """(n,) the most probable class; ABSTAIN where no source votes (nothing covers the
        row) or where the two most probable classes tie exactly."""
        return self.predict_with_confidence(L)[0]

    def predict_with_confidence(self, L: Any) -> tuple[np.ndarray, np.ndarray]:
        """(n,) `predict` and (n,) the probability of the most probable class (the row
        maximum of `predict_proba`), without an (n, k) array: both come from the
        distinct vote patterns."""
        L = self._check_fitted(L)
        P, inv = self._pattern_proba(L)
        pred = P.argmax(1).astype(np.int64)
        if self.k_ > 1:
            top2 = np.sort(P, axis=1)[:, -2:]
            pred[top2[:, 1] - top2[:, 0] <= 1e-12] = ABSTAIN
        pred = pred[inv]
        pred[~(L >= 0).any(1)] = ABSTAIN
        conf = P.max(1)[inv]
        return pred, conf

    def _pattern_proba(self, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, k) P(class | votes) per distinct merged vote pattern, and (n,) each row's
        pattern."""
        k = self.k_
        U, inv, _ = _unique_rows(self._merge(L), k)
        lp = _log_posterior(np.where(U >= 0, U, k), self.confusion_[self._kept], self.prior_)
        return np.exp(lp), inv

    def source_accuracy(self) -> np.ndarray:
        """(m,) estimated P(vote is right | source votes) = sum_c prior_c confusion_[j, c, c]."""
        return np.einsum("c,jcc->j", self.prior_, self.confusion_)


def _em(
    Ui: np.ndarray,
    w: np.ndarray,
    confusion: np.ndarray,
    prior: np.ndarray,
    joint: np.ndarray,
    max_iter: int,
    tol: float,
    smoothing: float,
    fixed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """EM from the given parameters: confusion, prior, expected joint counts, iterations
    run, and whether the largest parameter change fell below `tol`."""
    for n_iter in range(1, max_iter + 1):
        T = np.exp(_log_posterior(Ui, confusion, prior))  # E-step, (u, k)
        new_conf, new_prior, joint = _m_step(Ui, w, T, smoothing, fixed)
        delta = max(
            np.abs(new_conf - confusion).max(initial=0.0),
            np.abs(new_prior - prior).max(initial=0.0),
        )
        confusion, prior = new_conf, new_prior
        if delta < tol:
            return confusion, prior, joint, n_iter, True
    return confusion, prior, joint, max_iter, False


def _alignment(agreement: np.ndarray) -> np.ndarray | None:
    """perm[c] = output class of latent class c maximizing the summed diagonal of
    `agreement` (k_latent, k_vote); None unless it beats the identity strictly."""
    k = agreement.shape[0]
    _, cols = linear_sum_assignment(agreement, maximize=True)
    identity = np.arange(k)
    gain = agreement[identity, cols].sum() - np.trace(agreement)
    return cols if gain > 1e-9 * max(agreement.sum(), 1.0) else None


def _permute(confusion: np.ndarray, perm: np.ndarray) -> np.ndarray:
    out = np.empty_like(confusion)
    out[:, perm, :] = confusion
    return out


def _find_duplicates(U: np.ndarray, w: np.ndarray, agreement: float) -> list[tuple[int, int]]:
    """(kept, dropped) pairs of sources whose votes match on >= `agreement` of the rows
    where either votes (U: distinct vote patterns, w: their row counts); the earlier
    source is kept and a dropped one is never kept."""
    m = U.shape[1]
    if m < 2 or agreement > 1 or U.shape[0] == 0:
        return []
    w = w.astype(np.float64)
    votes = U >= 0
    pairs: list[tuple[int, int]] = []
    dropped: set[int] = set()
    for a in range(m - 1):
        if a in dropped:
            continue
        either = votes[:, a, None] | votes[:, a + 1 :]  # (u, m-a-1)
        same = either & (U[:, a, None] == U[:, a + 1 :])
        n_either, n_same = w @ either, w @ same
        for off in np.flatnonzero((n_either > 0) & (n_same >= agreement * n_either)):
            b = a + 1 + int(off)
            if b not in dropped:
                dropped.add(b)
                pairs.append((a, b))
    if pairs:
        log.info("merged duplicated sources (kept, dropped): %s", pairs)
    return pairs


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
    g = y = None
    if y_gold is not None:
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

    # Integer counts summed chunk by chunk: the same numbers as over all rows at once.
    n_cov = np.zeros(m, dtype=np.int64)
    n_overlap = np.zeros(m, dtype=np.int64)
    n_conflict = np.zeros(m, dtype=np.int64)
    per_class = np.zeros(m * k, dtype=np.int64)  # how often each function outputs each class
    gold_cov = np.zeros(m, dtype=np.int64)
    gold_right = np.zeros(m, dtype=np.int64)
    for start, Lc in _chunks(L):
        votes = Lc >= 0
        n_votes = votes.sum(1, keepdims=True)
        counts = _class_counts(Lc, k)  # (rows, k)
        same = np.take_along_axis(counts, np.where(votes, Lc, 0), axis=1)  # incl. itself
        n_cov += votes.sum(0)
        n_overlap += (votes & (n_votes >= 2)).sum(0)
        n_conflict += (votes & (n_votes - same > 0)).sum(0)
        # one bincount over column offsets
        per_class += np.bincount(
            (np.arange(m) * k + np.where(votes, Lc, 0))[votes], minlength=m * k
        )
        if g is not None and y is not None:
            gc = g[start : start + len(Lc)]
            covered = votes[gc]
            gold_cov += covered.sum(0)
            gold_right += (covered & (Lc[gc] == y[start : start + len(Lc)][gc][:, None])).sum(0)
    denom = max(n, 1)
    coverage, overlap, conflict = n_cov / denom, n_overlap / denom, n_conflict / denom
    per_class = per_class.reshape(m, k)
    gold_acc = np.full(m, np.nan)
    if g is not None:
        np.divide(gold_right, gold_cov, out=gold_acc, where=gold_cov > 0)

    return [
        {
            "index": j,
            "coverage": float(coverage[j]),
            "overlap": float(overlap[j]),
            "conflict": float(conflict[j]),
            "polarity": np.flatnonzero(per_class[j]).tolist(),
            "gold_accuracy": float(gold_acc[j]),
            "gold_covered": int(gold_cov[j]),
        }
        for j in range(m)
    ]


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
