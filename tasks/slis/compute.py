"""The ten label SLIs, computed from the store and what the run itself measured.

Each value is a row: a metric of `catalog.METRICS`, its labels, the value and, where it
can breach, the threshold and whether it did. Each family below has its function,
computed over the store's Arrow columns (`columns.LabelColumns`). Definitions (README,
*Label health*):

M1 coverage: examples with a label / all examples (gold human labels included); per
   source kind; and each class's share of the training labels.
M2 freshness: median age of the training labels' events; median time from an
   example's ingest to its first label event (seconds, as every time here).
M3 accuracy on gold (dev part, the human label as truth): each human source's latest
   answers on gold examples; each labeling function's votes in the latest label matrix;
   the label model (weak-labeling run) and pseudo-labels (training) as the run measured.
M4 diversity: distinct sources in the log; labeling functions' mean pairwise agreement
   on rows both vote on (latest label matrix).
M5 pseudo-label precision and coverage on gold dev at the threshold used.
M6 drift (`drift`).
M7 retrain success over the last `health.retrain_window` retrains.
M8 annotation backlog per stream and the oldest open request's age.
M9 share of training labels a model influenced.
M10 label spend (`labels.cost_per_label`) per human-verified example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from configs.health import DriftConfig, HealthConfig
from configs.weak_labeling import WeakLabelingConfig
from tasks.sampling.requests import STREAMS, RequestLog
from tasks.slis.columns import LabelColumns, latest_label_matrix, seconds_between, value_counts
from tasks.slis.drift import DriftCheck
from tasks.slis.inputs import LabelHealthInputs
from tasks.store import Store, utcnow
from tasks.validation import GateReport


@dataclass(frozen=True)
class Sli:
    metric: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    threshold: float | None = None
    breached: bool | None = None


@dataclass(frozen=True)
class RunFacts:
    """What the run measured that the store does not hold."""

    flow: str  # retrain | monitor
    pseudo_label_precision: float | None = None
    pseudo_label_coverage: float | None = None
    pseudo_labeling_off: bool = False
    gate: GateReport | None = None
    label_model_gold_accuracy: float | None = None
    retrain_outcomes: tuple[bool, ...] = ()
    drift: tuple[DriftCheck, ...] = ()
    gold_shifted: bool = False  # monitor: the champion and its predecessor regressed alike
    now: datetime = field(default_factory=utcnow)


HOUR_S = 3600.0  # the config's limits are in hours (health.*_h); the SLIs in seconds


def compute_slis(store: Store, inputs: LabelHealthInputs, facts: RunFacts) -> list[Sli]:
    """Every SLI this store and run allow (see the module docstring)."""
    h = inputs.health
    cols = LabelColumns.read(store, inputs.data, inputs.labels)
    votes = LabelFunctionVotes.read(store, cols, inputs.data.classes)
    return [
        *coverage(cols, inputs.data.classes),
        *freshness(cols, facts.now, h),
        *human_accuracy(cols),
        *votes.accuracy(inputs.weak_labeling),
        *label_model_accuracy(facts.label_model_gold_accuracy, inputs.weak_labeling),
        *diversity(cols, votes),
        *pseudo_labels(facts, h),
        *drift(facts.drift, h.drift),
        *retrain_success(facts.retrain_outcomes, h),
        *backlog(store, facts.now, h),
        *feedback(cols, h),
        *cost(cols, inputs.labels.cost_per_label),
        *gold_shift(facts),
        *gate(facts.gate, h),
    ]


def _measured(x: float | None) -> bool:
    return x is not None and x == x  # neither missing nor NaN


def coverage(cols: LabelColumns, classes: tuple[str, ...]) -> list[Sli]:
    """M1: the share of examples labeled, by each kind of source, and the class shares."""
    out: list[Sli] = []
    n = cols.examples.num_rows
    if n:
        out.append(Sli("label_coverage_ratio", len(cols.labeled_ids()) / n))
        for kind, k in sorted(cols.labeled_by_kind().items()):
            out.append(Sli("label_coverage_source_ratio", k / n, (("source_kind", kind),)))
    total = cols.resolved.num_rows
    if total:
        per_class = value_counts(cols.resolved.column("label"))
        for c in classes:
            out.append(Sli("label_class_share_ratio", per_class.get(c, 0) / total, (("class", c),)))
    return out


def freshness(cols: LabelColumns, now: datetime, h: HealthConfig) -> list[Sli]:
    """M2: the training labels' median age; the median time from ingest to first label."""
    out: list[Sli] = []
    ages = seconds_between(now, cols.created_at(cols.resolved.column("event_id")))
    if len(ages):
        age = float(np.median(ages))
        limit = h.max_label_age_h * HOUR_S
        out.append(Sli("label_age_median_seconds", age, (), limit, age > limit))
    lags = cols.ingest_to_first_label_s()
    if len(lags):
        out.append(Sli("ingest_to_label_median_seconds", float(np.median(lags))))
    return out


def human_accuracy(cols: LabelColumns) -> list[Sli]:
    """M3, people: each human source's latest answer on each gold dev example, right
    when it is that example's gold label."""
    right = cols.human_answers_right()
    if not len(right):
        return []
    return [
        Sli(
            "label_accuracy_gold_ratio",
            float(np.mean(right)),
            (("source_kind", "human"), ("source", "all")),
        )
    ]


@dataclass(frozen=True)
class LabelFunctionVotes:
    """The latest label matrix: each labeling function's votes (-1: abstain) and each
    row's gold dev class (-1: not in gold dev). No functions without a matrix."""

    votes: dict[str, np.ndarray]  # function name -> (rows,) class index
    truth: np.ndarray  # (rows,) class index

    @classmethod
    def read(cls, store: Store, cols: LabelColumns, classes: tuple[str, ...]) -> LabelFunctionVotes:
        matrix = latest_label_matrix(store)
        if matrix is None:
            return cls({}, np.zeros(0, np.int64))
        names = [c for c in matrix.column_names if c != "example_id"]
        return cls(
            {c: matrix.column(c).to_numpy() for c in names},
            cols.gold_dev_classes(matrix.column("example_id"), classes),
        )

    def accuracy(self, weak: WeakLabelingConfig) -> list[Sli]:
        """M3, labeling functions: each one's votes on gold dev, against its floor (its
        own where its config sets one, 0.0 too: never quarantined)."""
        floors = {f.name: f.accuracy_floor for f in weak.functions if f.accuracy_floor is not None}
        out: list[Sli] = []
        for name, v in self.votes.items():
            sel = (self.truth >= 0) & (v >= 0)
            if sel.any():
                acc = float((v[sel] == self.truth[sel]).mean())
                floor = floors.get(name, weak.accuracy_floor)
                labels = (("source_kind", "rule"), ("source", name))
                out.append(Sli("label_accuracy_gold_ratio", acc, labels, floor, acc < floor))
        return out

    def agreement(self) -> float | None:
        """The functions' mean pairwise agreement on the rows both vote on."""
        names = list(self.votes)
        pairs: list[float] = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                va, vb = self.votes[a], self.votes[b]
                both = (va >= 0) & (vb >= 0)
                if both.any():
                    pairs.append(float((va[both] == vb[both]).mean()))
        return float(np.mean(pairs)) if pairs else None


def label_model_accuracy(accuracy: float | None, weak: WeakLabelingConfig) -> list[Sli]:
    """M3, the label model, as the weak-labeling run measured it on gold dev."""
    if not _measured(accuracy):
        return []
    labels = (("source_kind", "label_model"), ("source", weak.label_model))
    return [Sli("label_accuracy_gold_ratio", accuracy, labels)]


def diversity(cols: LabelColumns, votes: LabelFunctionVotes) -> list[Sli]:
    """M4: distinct sources in the log; the labeling functions' agreement."""
    sources = pc.count_distinct(cols.events.column("source_name"), mode="all").as_py()
    out = [Sli("label_sources", float(sources))]
    agreement = votes.agreement()
    if agreement is not None:
        out.append(Sli("label_source_agreement_ratio", agreement))
    return out


def pseudo_labels(facts: RunFacts, h: HealthConfig) -> list[Sli]:
    """M5 (and M3's pseudo-label source): the pseudo-labels' precision and coverage on
    gold dev; switching pseudo-labeling off is a breach."""
    out: list[Sli] = []
    p = facts.pseudo_label_precision
    if _measured(p):
        floor = h.pseudo_label_precision_floor
        breach = facts.pseudo_labeling_off or (floor is not None and p < floor)
        out.append(Sli("pseudo_label_precision_ratio", p, (), floor, breach))
        labels = (("source_kind", "pseudo_label"), ("source", "student"))
        out.append(Sli("label_accuracy_gold_ratio", p, labels))
    if _measured(facts.pseudo_label_coverage):
        out.append(Sli("pseudo_label_coverage_ratio", facts.pseudo_label_coverage))
    return out


def drift(checks: tuple[DriftCheck, ...], d: DriftConfig) -> list[Sli]:
    """M6: each drift check's MMD p-value (with a model), JS distance and verdict."""
    out: list[Sli] = []
    for check in checks:
        lab = (("check", check.name),)
        if check.p_value is not None:
            breach = check.p_value < d.p_value
            out.append(Sli("drift_mmd_p_value", check.p_value, lab, d.p_value, breach))
        breach = check.js > d.js_threshold
        out.append(Sli("drift_intensity_js", check.js, lab, d.js_threshold, breach))
        out.append(Sli("drift_breach", float(check.breached), lab, 0.5, check.breached))
    return out


def retrain_success(outcomes: tuple[bool, ...], h: HealthConfig) -> list[Sli]:
    """M7: the share of the last retrains that completed."""
    if not outcomes:
        return []
    ratio = sum(outcomes) / len(outcomes)
    floor = h.min_retrain_success
    return [
        Sli("retrain_success_ratio", ratio, (), floor, ratio < floor),
        Sli("retrains_counted", float(len(outcomes))),
    ]


def backlog(store: Store, now: datetime, h: HealthConfig) -> list[Sli]:
    """M8: open annotation requests per stream and the oldest one's age (zero without a
    sampling stage)."""
    open_requests = RequestLog.read(store).backlog(now)
    age_limit = h.max_backlog_age_h * HOUR_S
    out: list[Sli] = []
    for s in STREAMS:
        stream = (("stream", s),)
        count = open_requests.open.get(s, 0)
        out.append(
            Sli("annotation_backlog", float(count), stream, h.max_backlog, count > h.max_backlog)
        )
        oldest = open_requests.oldest_age_s.get(s, 0.0)
        out.append(
            Sli("annotation_backlog_oldest_seconds", oldest, stream, age_limit, oldest > age_limit)
        )
    return out


def feedback(cols: LabelColumns, h: HealthConfig) -> list[Sli]:
    """M9: the share of training labels a model influenced."""
    total = cols.resolved.num_rows
    if not total:
        return []
    influenced = pc.sum(pc.fill_null(cols.resolved.column("model_influenced"), False)).as_py()
    share = influenced / total
    limit = h.max_model_influenced
    return [Sli("model_influenced_label_ratio", share, (), limit, share > limit)]


def cost(cols: LabelColumns, costs: dict[str, float]) -> list[Sli]:
    """M10: the spend on labels per human-verified example (when costs are configured)."""
    verified = cols.human.num_rows
    if not costs or not verified:
        return []
    return [Sli("label_cost_per_verified_label", spend(cols.events, costs) / verified)]


def spend(events: pa.Table, costs: dict[str, float]) -> float:
    """Sum of the configured cost of every label event: the source name, then the
    longest matching 'prefix:' key, then the source kind."""
    prefixes = sorted((k for k in costs if k.endswith(":")), key=len, reverse=True)

    def each(kind: str, name: str) -> float:
        if name in costs:
            return costs[name]
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        return costs[prefix] if prefix is not None else costs.get(kind, 0.0)

    sources = events.group_by(["source_kind", "source_name"]).aggregate([([], "count_all")])
    rows = (sources.column(c).to_pylist() for c in ("source_kind", "source_name", "count_all"))
    return sum(n * each(kind, name) for kind, name, n in zip(*rows, strict=True))


def gold_shift(facts: RunFacts) -> list[Sli]:
    """A monitor's finding that the champion and its predecessor regressed alike."""
    if facts.flow != "monitor":
        return []
    return [Sli("gold_shift", float(facts.gold_shifted), (), 0.0, facts.gold_shifted)]


def gate(report: GateReport | None, h: HealthConfig) -> list[Sli]:
    """The gate's verdict and gold metrics, and a minority class's collapse as a
    label-health breach."""
    if report is None:
        return []
    out = [Sli("gate_passed", float(report.passed))]
    for k, v in report.candidate.scalars().items():
        out.append(Sli("gate_gold_metric", v, (("metric", k),)))
    worst = report.candidate.worst_class_recall
    if worst == worst:
        floor = h.min_class_recall
        breach = floor is not None and worst < floor
        out.append(Sli("class_recall_min_ratio", worst, (), floor, breach))
    return out
