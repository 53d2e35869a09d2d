"""Weak labeling: labeling functions vote (or abstain) over the store, each is judged on
the gold holdout, a label model weighs the rest by their estimated reliability, and the
result is written as `label_model` events with provenance.

The pieces: `tasks.labeling_functions` (the API and the built-in families),
`tasks.lf_applier` (applying them over the store in parallel shards), `tasks.label_model`
(Dawid-Skene and majority vote); this module analyses and combines. The labeling
function API is re-exported here: `from tasks.weak_labeling import labeling_function`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from configs.schema import Config
from tasks.label_model import (
    ABSTAIN,
    CHUNK_ROWS,
    DawidSkene,
    label_dtype,
    lf_summary,
    majority_vote,
)
from tasks.labeling_functions import (
    LabelingFunction,
    LabelingFunctionError,
    LFBatch,
    build_functions,
    human_labels,
    labeling_function,
)
from tasks.lf_applier import ExampleIds, LabelMatrix, apply_in_shards
from tasks.progress import stage_progress
from tasks.store import (
    DEV,
    EXAMPLES,
    LABELS,
    SCHEMAS,
    GoldSplit,
    SourceEvent,
    SourceLog,
    Store,
    utcnow,
)
from tasks.tracking import ensure_experiment

__all__ = [
    "ABSTAIN",
    "LFBatch",
    "LabelingFunction",
    "LabelingFunctionError",
    "WeakLabelSummary",
    "labeling_function",
    "weak_label_examples",
    "weak_label_store",
]

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
    events_written: int
    events_already_present: int
    matrix_path: str
    elapsed_s: float

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
            {"metric": "seconds", "value": round(self.elapsed_s, 1)},
        ]


def _r(x: float) -> object:
    return "n/a" if x != x else round(x, 4)


def analyse_and_combine(
    store: Store, cfg: Config, matrix: LabelMatrix, functions: list[LabelingFunction], run_id: str
) -> WeakLabelSummary:
    """LF analysis on gold, quarantine of functions below their floor, the label model,
    and `label_model` events for non-gold rows (deterministic ids: re-running on the same
    data writes nothing twice)."""
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
    written, present = write_label_model_events(
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
        events_written=written,
        events_already_present=present,
        matrix_path="",
        elapsed_s=time.perf_counter() - start,
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


def write_label_model_events(
    store: Store,
    cfg: Config,
    source_name: str,
    run_id: str,
    example_ids: Sequence[str],
    labels: np.ndarray,
    conf: np.ndarray,
    influenced: np.ndarray,
) -> tuple[int, int]:
    """`label_model` events saying class `labels[i]` at `conf[i]` about `example_ids[i]`:
    a new event only where the label or its confidence changed since this label model's
    last word on the example (a re-run on the same data writes nothing). Committed under
    the store's lease, after catching up with other writers. Returns (written, already
    present)."""
    ids = example_ids if isinstance(example_ids, ExampleIds) else ExampleIds(example_ids)
    classes = list(cfg.taxonomy.classes)
    source = SourceLog("label_model", source_name)
    read = store.files(LABELS)
    source.add_files(store, read)  # the bulk of the log, read before taking the lease
    # Only an example listed twice can meet its own new event again below: the log
    # records the events of those alone, rather than one entry per event written.
    repeated = ids.repeated()
    with store.commit_lock() as lease:
        source.add_files(store, sorted(set(store.files(LABELS)) - set(read)))  # catch up
        lease.check()
        now = utcnow()
        event_ids: list[pa.Array] = []
        new = np.zeros(len(ids), bool)
        for start, chunk in ids.chunks():
            fresh: list[str] = []
            for i, ex in enumerate(chunk, start):
                label, c = classes[int(labels[i])], float(conf[i])
                event_id = source.next_event(ex, label, c)
                if event_id is None or event_id in source.event_ids:
                    continue
                if ex in repeated:
                    source.record(ex, SourceEvent(event_id, label, c), (now, event_id))
                fresh.append(event_id)
                new[i] = True
            event_ids.append(pa.array(fresh, pa.string()))
        rows = np.flatnonzero(new)
        store.write(
            LABELS,
            _label_events(
                pa.chunked_array(event_ids, pa.string()),
                ids.take(rows).arrow,
                pa.array(classes, pa.string()).take(pa.array(labels[rows], pa.int64())),
                conf[rows],
                influenced[rows],
                source_name=source_name,
                run_id=run_id,
                taxonomy_version=cfg.taxonomy.version,
                created_at=now,
            ),
            when=now,
        )
    return len(rows), len(ids) - len(rows)


def _label_events(
    event_ids: pa.ChunkedArray,
    example_ids: pa.ChunkedArray,
    labels: pa.Array,
    conf: np.ndarray,
    influenced: np.ndarray,
    *,
    source_name: str,
    run_id: str,
    taxonomy_version: str,
    created_at: datetime,
) -> pa.Table:
    """The label-log table of `label_model` events, built column by column."""
    schema = SCHEMAS[LABELS]
    n = len(event_ids)

    def same(name: str, value: object) -> pa.Array:
        return pa.repeat(pa.scalar(value, schema.field(name).type), n)

    columns = {
        "event_id": event_ids,
        "example_id": example_ids,
        "label": labels,
        "source_kind": same("source_kind", "label_model"),
        "source_name": same("source_name", source_name),
        "confidence": pa.array(conf, pa.float64()).cast(schema.field("confidence").type),
        "created_at": same("created_at", created_at),
        "run_id": same("run_id", run_id),
        "taxonomy_version": same("taxonomy_version", taxonomy_version),
        "model_influenced": pa.array(influenced, pa.bool_()),
    }
    return pa.table([columns[f.name] for f in schema], schema=schema)


def weak_label_store(cfg: Config, run_id: str, progress: Any | None = None) -> WeakLabelSummary:
    """Build the configured functions, apply them over the store, analyse them on gold,
    combine their votes, write `label_model` events, and log the analysis to MLflow."""
    import dataclasses

    import mlflow

    store = Store(cfg.store.root)
    if not cfg.weak_labeling.functions:
        raise LabelingFunctionError(
            "weak_labeling.functions is empty: configure at least one "
            "labeling function (see README, Weak labeling)"
        )
    champion = _champion_or_none(cfg)
    functions = build_functions(store, cfg, champion)
    matrix = apply_in_shards(
        store,
        cfg,
        functions,
        run_id,
        progress=progress.update if progress is not None else None,
    )
    summary = analyse_and_combine(store, cfg, matrix, functions, run_id)
    summary = dataclasses.replace(
        summary, matrix_path=matrix.path, elapsed_s=summary.elapsed_s + matrix.elapsed_s
    )
    ensure_experiment(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.mlflow.artifact_root)
    with mlflow.start_run(
        run_name=f"weak-label-{run_id[:8]}", tags={"semilabel.stage": "weak_label"}
    ):
        for f in summary.functions:
            metrics = {
                "coverage": f.coverage,
                "overlap": f.overlap,
                "conflict": f.conflict,
                "gold_accuracy": f.gold_accuracy,
                "quarantined": float(f.quarantined),
            }
            mlflow.log_metrics({f"lf.{f.name}.{k}": v for k, v in metrics.items() if v == v})
        mlflow.log_metrics(
            {
                k: v
                for k, v in {
                    "label_model.coverage": summary.coverage,
                    "label_model.gold_accuracy": summary.gold_accuracy,
                    "majority_vote.gold_accuracy": summary.gold_accuracy_majority,
                    "label_model.events_written": summary.events_written,
                }.items()
                if v == v
            }
        )
        mlflow.log_dict({"functions": summary.table()}, "lf_analysis.json")
    return summary


def _champion_or_none(cfg: Config) -> Any:
    if not any(s.embedding == "champion" for s in cfg.weak_labeling.functions):
        return None
    from tasks.model_artifact import load_classifier
    from tasks.registry import RegistryRef, champion_version

    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    version = champion_version(ref)
    if version is None:
        log.info("no champion yet: champion embeddings fall back to PCA")
        return None
    return load_classifier(
        ref.version_uri(version), ref.tracking_uri, trust_pickle=cfg.mlflow.trust_pickled_models
    )


# -- inside a flow ---------------------------------------------------------------------


def weak_label_examples(cfg: Config, run_id: str) -> WeakLabelSummary:
    """Inside a flow: apply the labeling functions (one mapped `apply-labeling-functions`
    task per shard on the configured task runner), fit the label model, write
    `label_model` events, and publish the LF analysis as a table artifact."""
    bar = stage_progress("weak-label", Store(cfg.store.root).count(EXAMPLES))
    summary = weak_label_store(cfg, run_id, progress=bar)
    bar.finish(summary.n_rows)
    create_table_artifact(
        table=summary.table(),
        key="lf-analysis",
        description="Labeling functions: coverage, overlap, conflict, accuracy on gold",
    )
    get_run_logger().info(
        "weak labels: %d events (%d already present), coverage %.3f, gold accuracy %s "
        "(majority vote %s)",
        summary.events_written,
        summary.events_already_present,
        summary.coverage,
        _r(summary.gold_accuracy),
        _r(summary.gold_accuracy_majority),
    )
    return summary
