"""Judging labeling functions on gold and combining their votes: per-function analysis
and quarantine, the label model (or majority vote), and the combined labels handed to
`tasks.weak_labeling.events` for writing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from configs.schema import Config
from tasks.store import DEV, GoldSplit, Store
from tasks.weak_labeling.applier import ExampleIds, LabelMatrix
from tasks.weak_labeling.events import write_label_model_events
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
                "gold accuracy": _r(f.gold_accuracy),
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
            {"metric": f"gold accuracy ({self.label_model})", "value": _r(self.gold_accuracy)},
            {"metric": "gold accuracy (majority vote)", "value": _r(self.gold_accuracy_majority)},
            {"metric": "label events written", "value": self.events_written},
            {"metric": "label events already present", "value": self.events_already_present},
            {"metric": "weak labels withdrawn", "value": self.labels_withdrawn},
            {"metric": "seconds", "value": round(self.elapsed_s, 1)},
        ]


def _r(x: float) -> object:
    return "n/a" if x != x else round(x, 4)


def analyse_and_combine(
    store: Store, cfg: Config, matrix: LabelMatrix, functions: list[LabelingFunction], run_id: str
) -> WeakLabelSummary:
    """LF analysis on gold, quarantine of functions below their floor, the label model,
    and `label_model` events for non-gold rows: this run's labels become the weak labels
    in force, and those of earlier runs where it abstains are withdrawn (deterministic
    ids: re-running on the same data writes nothing)."""
    start = time.perf_counter()
    classes = list(cfg.taxonomy.classes)
    k = len(classes)
    wl = cfg.weak_labeling
    human = human_labels(store, classes)
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    L = matrix.votes  # (N, M) int16; widened to int64 a chunk of rows at a time, never whole
    n = len(L)
    is_gold, y_gold = gold_rows_and_labels(matrix.example_ids, split, human, k)
    gold_rows = y_gold != ABSTAIN
    stats = lf_summary(L, k, y_gold=y_gold, gold_mask=gold_rows)

    reports: list[FunctionReport] = []
    keep: list[int] = []
    for j, (lf, st) in enumerate(zip(functions, stats, strict=True)):
        floor = lf.accuracy_floor if lf.accuracy_floor is not None else wl.accuracy_floor
        acc, covered = float(st["gold_accuracy"]), int(st["gold_covered"])
        quarantined, reason = False, ""
        if covered >= wl.min_gold_covered and not acc >= floor:
            quarantined = True
            reason = f"gold accuracy {acc:.3f} on {covered} gold rows is below its floor {floor}"
            log.warning("labeling function %s quarantined for this run: %s", lf.name, reason)
        elif covered < wl.min_gold_covered:
            reason = f"only {covered} gold rows covered: accuracy not judged"
        if not quarantined:
            keep.append(j)
        reports.append(
            FunctionReport(
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
        )

    model = None
    if wl.label_model == "dawid_skene" and keep:
        # Gold labels align the classes (guards against a permuted solution).
        model = DawidSkene().fit(L[:, keep], k, y_gold=y_gold)
    # Majority vote is only judged on gold: it is computed on the gold rows alone.
    y_dev = y_gold[gold_rows]
    mv = majority_vote(L[gold_rows][:, keep], k) if keep else np.full(len(y_dev), ABSTAIN)

    # The key names the functions used and whether a model shaped each one's votes (a
    # champion-embedding function is model-backed only once there is a champion), so a
    # change of influence starts a new source whose labels carry the new flag.
    lf_key = hashlib.sha256(
        repr(
            [
                (f.name, f.source_kind, f.model_influenced)
                for i, f in enumerate(functions)
                if i in keep
            ]
        ).encode()
    ).hexdigest()[:8]
    source_name = f"{wl.label_model}:{lf_key}"
    backed = [j for j in keep if functions[j].model_influenced]
    # Labels are combined a chunk of rows at a time: only the rows to write are kept.
    chosen: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    non_gold_covered = gold_hits = gold_judged = 0
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, n)
        pred, conf = combine_votes(L[lo:hi][:, keep], k, model)
        gold, dev = is_gold[lo:hi], gold_rows[lo:hi]
        judged = dev & (pred != ABSTAIN)
        gold_hits += int((pred[judged] == y_gold[lo:hi][judged]).sum())
        gold_judged += int(judged.sum())
        non_gold_covered += int((pred[~gold] != ABSTAIN).sum())
        rows = np.flatnonzero(~gold & (pred != ABSTAIN))
        # A row's label is model-influenced when a model-backed function voted on it.
        influenced = (L[lo:hi][rows][:, backed] != ABSTAIN).any(1) if backed else None
        chosen.append(
            (
                lo + rows,
                pred[rows],
                conf[rows],
                influenced if influenced is not None else np.zeros(len(rows), bool),
            )
        )
    rows, pred, conf, influenced = (
        np.concatenate([c[i] for c in chosen]) if chosen else np.zeros(0, t)
        for i, t in enumerate((np.int64, np.int64, np.float64, bool))
    )
    wrote = write_label_model_events(
        store,
        cfg,
        source_name,
        run_id,
        matrix.example_ids.take(rows),
        pred,
        conf,
        influenced,
    )
    n_non_gold = int((~is_gold).sum())
    mv_judged = mv != ABSTAIN
    return WeakLabelSummary(
        run_id=run_id,
        n_rows=n,
        functions=reports,
        label_model=wl.label_model,
        coverage=non_gold_covered / n_non_gold if n_non_gold else 0.0,
        gold_accuracy=gold_hits / gold_judged if gold_judged else math.nan,
        gold_accuracy_majority=(
            float((mv[mv_judged] == y_dev[mv_judged]).mean()) if mv_judged.any() else math.nan
        ),
        events_written=wrote.written,
        events_already_present=wrote.unchanged,
        matrix_path="",
        elapsed_s=time.perf_counter() - start,
        labels_withdrawn=wrote.withdrawn,
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
