"""Judging labeling functions on gold and combining their votes: per-function analysis
and quarantine, the label model (or majority vote), and the combined labels handed to
`tasks.weak_labeling.events` for writing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from configs.data import DataSpec
from configs.weak_labeling import WeakLabelingConfig
from tasks.store import DEV, GoldSplit, Store
from tasks.weak_labeling.applier import ExampleIds, LabelMatrix
from tasks.weak_labeling.events import RunLabels, write_label_model_events
from tasks.weak_labeling.functions import LabelingFunction, human_labels
from tasks.weak_labeling.label_model import (
    ABSTAIN,
    CHUNK_ROWS,
    DawidSkene,
    label_dtype,
    lf_summary,
    majority_vote,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunctionReport:
    name: str
    source_kind: str
    coverage: float
    overlap: float
    conflict: float
    polarity: list[str]
    gold_accuracy: float
    gold_covered: int
    quarantined: bool
    reason: str


@dataclass(frozen=True)
class WeakLabelSummary:
    run_id: str
    n_rows: int
    functions: list[FunctionReport]
    label_model: str
    coverage: float  # share of non-gold rows given a label
    gold_accuracy: float  # label model's accuracy on gold rows it covers
    gold_accuracy_majority: float
    events_written: int  # new weak labels and withdrawals
    events_already_present: int
    matrix_path: str
    elapsed_s: float
    labels_withdrawn: int = 0  # weak labels of earlier runs where this one abstains

    def table(self) -> list[dict[str, object]]:
        return [
            {
                "function": f.name,
                "kind": f.source_kind,
                "coverage": round(f.coverage, 4),
                "overlap": round(f.overlap, 4),
                "conflict": round(f.conflict, 4),
                "polarity": ",".join(f.polarity),
                "gold accuracy": as_shown(f.gold_accuracy),
                "gold covered": f.gold_covered,
                "status": "quarantined: " + f.reason if f.quarantined else "used",
            }
            for f in self.functions
        ]

    def rows(self) -> list[dict[str, object]]:
        return [
            {"metric": "rows", "value": self.n_rows},
            {"metric": "functions used", "value": sum(not f.quarantined for f in self.functions)},
            {
                "metric": "functions quarantined",
                "value": sum(f.quarantined for f in self.functions),
            },
            {"metric": f"coverage ({self.label_model})", "value": round(self.coverage, 4)},
            {
                "metric": f"gold accuracy ({self.label_model})",
                "value": as_shown(self.gold_accuracy),
            },
            {
                "metric": "gold accuracy (majority vote)",
                "value": as_shown(self.gold_accuracy_majority),
            },
            {"metric": "label events written", "value": self.events_written},
            {"metric": "label events already present", "value": self.events_already_present},
            {"metric": "weak labels withdrawn", "value": self.labels_withdrawn},
            {"metric": "seconds", "value": round(self.elapsed_s, 1)},
        ]


def as_shown(x: float) -> object:
    """A rate as tables show it: 4 decimals, `n/a` for NaN."""
    return "n/a" if x != x else round(x, 4)


def analyse_and_combine(
    store: Store,
    data: DataSpec,
    wl: WeakLabelingConfig,
    matrix: LabelMatrix,
    functions: list[LabelingFunction],
    run_id: str,
) -> WeakLabelSummary:
    """LF analysis on gold, quarantine of functions below their floor, the label model,
    and `label_model` events for non-gold rows: this run's labels become the weak labels
    in force, and those of earlier runs where it abstains are withdrawn (deterministic
    ids: re-running on the same data writes nothing)."""
    start = time.perf_counter()
    k = len(data.classes)
    L = matrix.votes  # (N, M) int16; widened to int64 a chunk of rows at a time, never whole
    human = human_labels(store, list(data.classes))
    split = GoldSplit(data.gold.fraction, data.gold.salt, data.gold.test_share)
    is_gold, y_gold = gold_rows_and_labels(matrix.example_ids, split, human, k)
    stats = lf_summary(L, k, y_gold=y_gold, gold_mask=y_gold != ABSTAIN)
    reports = judge_functions(functions, stats, data.classes, wl)
    keep = [j for j, r in enumerate(reports) if not r.quarantined]

    combiner = Combiner(
        keep=keep,
        backed=[j for j in keep if functions[j].model_influenced],
        k=k,
        model=fit_label_model(L, keep, k, y_gold, wl.label_model),
    )
    combined = combiner.combine(L, is_gold, y_gold)
    said = RunLabels(
        matrix.example_ids.take(combined.rows),
        combined.labels,
        combined.conf,
        combined.influenced,
    )
    source_name = label_source_name(wl.label_model, functions, keep)
    wrote = write_label_model_events(store, data.taxonomy, source_name, run_id, said)
    n_non_gold = int((~is_gold).sum())
    return WeakLabelSummary(
        run_id=run_id,
        n_rows=len(L),
        functions=reports,
        label_model=wl.label_model,
        coverage=combined.non_gold_covered / n_non_gold if n_non_gold else 0.0,
        gold_accuracy=combined.gold_accuracy,
        gold_accuracy_majority=majority_gold_accuracy(L, keep, k, y_gold),
        events_written=wrote.written,
        events_already_present=wrote.unchanged,
        matrix_path="",
        elapsed_s=time.perf_counter() - start,
        labels_withdrawn=wrote.withdrawn,
    )


def judge_functions(
    functions: list[LabelingFunction],
    stats: list[dict[str, Any]],
    classes: Sequence[str],
    wl: WeakLabelingConfig,
) -> list[FunctionReport]:
    """One report per function from its `lf_summary` statistics: quarantined when it
    covers at least `min_gold_covered` gold rows and its accuracy there is below its
    floor (its own, else `weak_labeling.accuracy_floor`)."""
    return [_judge(lf, st, classes, wl) for lf, st in zip(functions, stats, strict=True)]


def _judge(
    lf: LabelingFunction, st: dict[str, Any], classes: Sequence[str], wl: WeakLabelingConfig
) -> FunctionReport:
    floor = lf.accuracy_floor if lf.accuracy_floor is not None else wl.accuracy_floor
    acc, covered = float(st["gold_accuracy"]), int(st["gold_covered"])
    quarantined, reason = False, ""
    if covered >= wl.min_gold_covered and not acc >= floor:
        quarantined = True
        reason = f"gold accuracy {acc:.3f} on {covered} gold rows is below its floor {floor}"
        log.warning("labeling function %s quarantined for this run: %s", lf.name, reason)
    elif covered < wl.min_gold_covered:
        reason = f"only {covered} gold rows covered: accuracy not judged"
    return FunctionReport(
        lf.name,
        lf.source_kind,
        float(st["coverage"]),
        float(st["overlap"]),
        float(st["conflict"]),
        [classes[c] for c in st["polarity"]],
        acc,
        covered,
        quarantined,
        reason,
    )


def fit_label_model(
    L: np.ndarray, keep: list[int], k: int, y_gold: np.ndarray, label_model: str
) -> DawidSkene | None:
    """Dawid-Skene fitted on the kept functions' votes when `label_model` names it (gold
    labels align the classes, which guards against a permuted solution); None for
    majority vote, or when no function is kept."""
    if label_model == "dawid_skene" and keep:
        return DawidSkene().fit(L[:, keep], k, y_gold=y_gold)
    return None


def majority_gold_accuracy(L: np.ndarray, keep: list[int], k: int, y_gold: np.ndarray) -> float:
    """The majority vote of the kept functions, judged on the gold rows it covers (NaN
    if none): computed on the gold rows alone, as it is only judged there."""
    gold_rows = y_gold != ABSTAIN
    y_dev = y_gold[gold_rows]
    mv = majority_vote(L[gold_rows][:, keep], k) if keep else np.full(len(y_dev), ABSTAIN)
    judged = mv != ABSTAIN
    return float((mv[judged] == y_dev[judged]).mean()) if judged.any() else math.nan


def label_source_name(label_model: str, functions: list[LabelingFunction], keep: list[int]) -> str:
    """`<label model>:<key>`, the source name of the run's events. The key names the
    functions used and whether a model shaped each one's votes (a champion-embedding
    function is model-backed only once there is a champion), so a change of influence
    starts a new source whose labels carry the new flag."""
    used = [
        (f.name, f.source_kind, f.model_influenced) for i, f in enumerate(functions) if i in keep
    ]
    return f"{label_model}:{hashlib.sha256(repr(used).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Combined:
    """The combined labels of the rows to write (non-gold rows given a label), and the
    counts the summary reports."""

    rows: np.ndarray  # (r,) int64 label-matrix rows
    labels: np.ndarray  # (r,) int64 class indices
    conf: np.ndarray  # (r,) float64 probability of that class
    influenced: np.ndarray  # (r,) bool: a model-backed function voted on the row
    non_gold_covered: int  # non-gold rows given a label
    gold_hits: int  # dev-gold rows given their gold label
    gold_judged: int  # dev-gold rows given a label

    @property
    def gold_accuracy(self) -> float:
        return self.gold_hits / self.gold_judged if self.gold_judged else math.nan

    @staticmethod
    def concat(parts: list[Combined]) -> Combined:
        rows, labels, conf, influenced = (
            np.concatenate([getattr(c, name) for c in parts]) if parts else np.zeros(0, t)
            for name, t in (
                ("rows", np.int64),
                ("labels", np.int64),
                ("conf", np.float64),
                ("influenced", bool),
            )
        )
        return Combined(
            rows,
            labels,
            conf,
            influenced,
            sum(c.non_gold_covered for c in parts),
            sum(c.gold_hits for c in parts),
            sum(c.gold_judged for c in parts),
        )


@dataclass(frozen=True)
class Combiner:
    """How the kept functions' votes become one label per row: the fitted label model's,
    or without one the majority vote (see `combine_votes`)."""

    keep: list[int]  # the functions used: those not quarantined
    backed: list[int]  # those of them a model shaped
    k: int
    model: DawidSkene | None

    def combine(self, L: np.ndarray, is_gold: np.ndarray, y_gold: np.ndarray) -> Combined:
        """The labels of every row, a chunk of rows at a time: only the rows to write are
        kept."""
        return Combined.concat(
            [
                self._rows(L[lo : lo + CHUNK_ROWS], lo, is_gold, y_gold)
                for lo in range(0, len(L), CHUNK_ROWS)
            ]
        )

    def _rows(
        self, votes: np.ndarray, lo: int, is_gold: np.ndarray, y_gold: np.ndarray
    ) -> Combined:
        """The rows lo.. of the matrix (`votes`, every function)."""
        hi = lo + len(votes)
        pred, conf = combine_votes(votes[:, self.keep], self.k, self.model)
        gold, y = is_gold[lo:hi], y_gold[lo:hi]
        judged = (y != ABSTAIN) & (pred != ABSTAIN)
        rows = np.flatnonzero(~gold & (pred != ABSTAIN))
        # A row's label is model-influenced when a model-backed function voted on it.
        if self.backed:
            influenced = (votes[rows][:, self.backed] != ABSTAIN).any(1)
        else:
            influenced = np.zeros(len(rows), bool)
        return Combined(
            rows=lo + rows,
            labels=pred[rows],
            conf=conf[rows],
            influenced=influenced,
            non_gold_covered=int((pred[~gold] != ABSTAIN).sum()),
            gold_hits=int((pred[judged] == y[judged]).sum()),
            gold_judged=int(judged.sum()),
        )


def gold_rows_and_labels(
    example_ids: ExampleIds, split: GoldSplit, human: dict[str, int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool: the row is gold (dev or test); (N,) the human label of each dev-gold row,
    ABSTAIN elsewhere, in the smallest integer dtype that holds the classes. Only the dev
    part of gold chooses (function floors, label-model alignment); the test part is left
    for the gate, which would otherwise judge what it helped choose."""
    is_gold = np.zeros(len(example_ids), bool)
    y_gold = np.full(len(example_ids), ABSTAIN, label_dtype(k))
    for start, ids in example_ids.chunks():
        part = split.parts(ids)
        is_gold[start : start + len(ids)] = part != ""
        y_gold[start : start + len(ids)] = [
            human.get(e, ABSTAIN) if p == DEV else ABSTAIN for e, p in zip(ids, part, strict=True)
        ]
    return is_gold, y_gold


def combine_votes(
    used: np.ndarray, k: int, model: DawidSkene | None
) -> tuple[np.ndarray, np.ndarray]:
    """(n,) the combined class (ABSTAIN where none) and (n,) its probability for the
    votes `used` (n, m) of the functions kept: the fitted label model's, or without one
    the majority vote and the share of votes that name each class."""
    if model is not None:
        return model.predict_with_confidence(used)
    n, m = used.shape
    if not m:
        return np.full(n, ABSTAIN, np.int64), np.zeros(n)
    pred = majority_vote(used, k)
    covered = np.maximum((used != ABSTAIN).sum(1), 1)
    share = np.zeros(n)
    for c in range(k):
        np.maximum(share, (used == c).sum(1) / covered, out=share)
    return pred, share
