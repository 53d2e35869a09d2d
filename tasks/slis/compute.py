"""The ten label SLIs, computed from the store and what the run itself measured.

Each value is a row: a metric of `catalog.METRICS`, its labels, the value and, where it
can breach, the threshold and whether it did. Definitions (README, *Label health*):

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

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from configs.schema import Config
from tasks.sampling.requests import STREAMS, RequestLog
from tasks.slis.drift import DriftCheck
from tasks.store import DEV, EXAMPLES, LABELS, GoldSplit, LatestLabels, Store, utcnow
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


def _latest_label_matrix(store: Store) -> ds.Dataset | None:
    sel = pafs.FileSelector(f"{store.base}/label_matrices", allow_not_found=True)
    runs = [i for i in store.fs.get_file_info(sel) if i.type == pafs.FileType.Directory]
    if not runs:
        return None
    newest = max(runs, key=lambda i: i.mtime.timestamp() if i.mtime else 0.0)
    files = [
        i.path
        for i in store.fs.get_file_info(pafs.FileSelector(newest.path))
        if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
    ]
    return ds.dataset(files, format="parquet", filesystem=store.fs) if files else None


def compute_slis(store: Store, cfg: Config, facts: RunFacts) -> list[Sli]:
    """Every SLI this store and run allow (see the module docstring)."""
    h = cfg.health
    classes = tuple(cfg.taxonomy.classes)
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    out: list[Sli] = []

    ingested: dict[str, datetime] = {}
    for b in store.iter_batches(EXAMPLES, ["example_id", "ingested_at"], batch_size=65536):
        ingested.update(zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True))
    n = len(ingested)
    latest = LatestLabels.read(store)
    human = latest.human(classes)
    parts = dict(zip(human, split.parts(list(human)), strict=True))
    gold_truth = {e: lab for e, (lab, _) in human.items() if parts[e] == DEV}
    resolved = latest.resolve(
        confidence_floor=cfg.labels.confidence_floor,
        max_model_share=cfg.labels.max_model_share,
        leave_out=split,
        classes=classes,
    ).to_pylist()
    gold_human = [e for e in human if parts[e] != ""]

    # M1 coverage
    labeled = {r["example_id"] for r in resolved} | set(gold_human)
    if n:
        out.append(Sli("label_coverage_ratio", len(labeled) / n))
        kinds: dict[str, set[str]] = defaultdict(set)
        for r in resolved:
            kinds[r["source_kind"]].add(r["example_id"])
        kinds["human"] |= set(gold_human)
        for kind, ids in sorted(kinds.items()):
            out.append(Sli("label_coverage_source_ratio", len(ids) / n, (("source_kind", kind),)))
    if resolved:
        per_class = defaultdict(int)
        for r in resolved:
            per_class[r["label"]] += 1
        for c in classes:
            out.append(
                Sli("label_class_share_ratio", per_class[c] / len(resolved), (("class", c),))
            )

    # M2 freshness, and the per-source answers M3 needs: one pass over the log
    first_label: dict[str, datetime] = {}
    created: dict[str, datetime] = {}
    human_answers: dict[tuple[str, str], tuple[datetime, str]] = {}  # (source, ex) -> latest
    sources: set[str] = set()
    cols = ["event_id", "example_id", "label", "source_kind", "source_name", "created_at"]
    for b in store.iter_batches(LABELS, cols, batch_size=65536):
        for ev, ex, lab, kind, name, ts in zip(
            *(b.column(c).to_pylist() for c in cols), strict=True
        ):
            sources.add(name)
            created[ev] = ts
            if ex not in first_label or ts < first_label[ex]:
                first_label[ex] = ts
            if kind == "human" and ex in gold_truth:
                cur = human_answers.get((name, ex))
                if cur is None or ts > cur[0]:
                    human_answers[(name, ex)] = (ts, lab)
    ages = [
        (facts.now - created[r["event_id"]]).total_seconds()
        for r in resolved
        if r["event_id"] in created
    ]
    if ages:
        age = statistics.median(ages)
        limit = h.max_label_age_h * HOUR_S
        out.append(Sli("label_age_median_seconds", age, (), limit, age > limit))
    lags = [
        max((first_label[e] - ingested[e]).total_seconds(), 0.0)
        for e in labeled
        if e in first_label and e in ingested
    ]
    if lags:
        out.append(Sli("ingest_to_label_median_seconds", statistics.median(lags)))

    # M3 accuracy on gold dev, per source
    # each function's own floor where its config sets one (0.0 too: never quarantined)
    floors = {
        f.name: f.accuracy_floor
        for f in cfg.weak_labeling.functions
        if f.accuracy_floor is not None
    }
    by_human: dict[str, list[bool]] = defaultdict(list)
    for (_name, ex), (_, lab) in human_answers.items():
        by_human["human"].append(lab == gold_truth[ex])
    for kind, hits in by_human.items():
        out.append(
            Sli(
                "label_accuracy_gold_ratio",
                float(np.mean(hits)),
                (("source_kind", kind), ("source", "all")),
            )
        )
    matrix = _latest_label_matrix(store)
    agreement: list[float] = []
    if matrix is not None:
        table = matrix.to_table()
        names = [c for c in table.column_names if c != "example_id"]
        ids = table.column("example_id").to_pylist()
        votes = {c: np.asarray(table.column(c).to_pylist()) for c in names}
        truth = np.array([classes.index(gold_truth[e]) if e in gold_truth else -1 for e in ids])
        for c in names:
            sel = (truth >= 0) & (votes[c] >= 0)
            if sel.any():
                acc = float((votes[c][sel] == truth[sel]).mean())
                floor = floors.get(c, cfg.weak_labeling.accuracy_floor)
                out.append(
                    Sli(
                        "label_accuracy_gold_ratio",
                        acc,
                        (("source_kind", "rule"), ("source", c)),
                        floor,
                        acc < floor,
                    )
                )
        for i, a in enumerate(names):
            for b_ in names[i + 1 :]:
                both = (votes[a] >= 0) & (votes[b_] >= 0)
                if both.any():
                    agreement.append(float((votes[a][both] == votes[b_][both]).mean()))
    if (
        facts.label_model_gold_accuracy is not None
        and facts.label_model_gold_accuracy == facts.label_model_gold_accuracy
    ):
        out.append(
            Sli(
                "label_accuracy_gold_ratio",
                facts.label_model_gold_accuracy,
                (("source_kind", "label_model"), ("source", cfg.weak_labeling.label_model)),
            )
        )
    # M4 diversity
    out.append(Sli("label_sources", float(len(sources))))
    if agreement:
        out.append(Sli("label_source_agreement_ratio", float(np.mean(agreement))))

    # M5 pseudo-labels (also M3's pseudo-label source)
    p = facts.pseudo_label_precision
    if p is not None and p == p:
        pfloor = h.pseudo_label_precision_floor
        breach = facts.pseudo_labeling_off or (pfloor is not None and p < pfloor)
        out.append(Sli("pseudo_label_precision_ratio", p, (), pfloor, breach))
        out.append(
            Sli(
                "label_accuracy_gold_ratio",
                p,
                (("source_kind", "pseudo_label"), ("source", "student")),
            )
        )
    if (
        facts.pseudo_label_coverage is not None
        and facts.pseudo_label_coverage == facts.pseudo_label_coverage
    ):
        out.append(Sli("pseudo_label_coverage_ratio", facts.pseudo_label_coverage))

    # M6 drift
    for check in facts.drift:
        lab = (("check", check.name),)
        if check.p_value is not None:
            out.append(
                Sli(
                    "drift_mmd_p_value",
                    check.p_value,
                    lab,
                    h.drift.p_value,
                    check.p_value < h.drift.p_value,
                )
            )
        out.append(
            Sli(
                "drift_intensity_js",
                check.js,
                lab,
                h.drift.js_threshold,
                check.js > h.drift.js_threshold,
            )
        )
        out.append(Sli("drift_breach", float(check.breached), lab, 0.5, check.breached))

    # M7 retrain success
    if facts.retrain_outcomes:
        ratio = sum(facts.retrain_outcomes) / len(facts.retrain_outcomes)
        out.append(
            Sli(
                "retrain_success_ratio",
                ratio,
                (),
                h.min_retrain_success,
                ratio < h.min_retrain_success,
            )
        )
        out.append(Sli("retrains_counted", float(len(facts.retrain_outcomes))))

    # M8 backlog (zero without a sampling stage)
    backlog = RequestLog.read(store).backlog(facts.now)
    for s in STREAMS:
        count = backlog.open.get(s, 0)
        out.append(
            Sli(
                "annotation_backlog",
                float(count),
                (("stream", s),),
                h.max_backlog,
                count > h.max_backlog,
            )
        )
        oldest = backlog.oldest_age_s.get(s, 0.0)
        limit = h.max_backlog_age_h * HOUR_S
        out.append(
            Sli(
                "annotation_backlog_oldest_seconds", oldest, (("stream", s),), limit, oldest > limit
            )
        )

    # M9 feedback
    if resolved:
        share = sum(bool(r["model_influenced"]) for r in resolved) / len(resolved)
        out.append(
            Sli(
                "model_influenced_label_ratio",
                share,
                (),
                h.max_model_influenced,
                share > h.max_model_influenced,
            )
        )

    # M10 cost per verified label
    if cfg.labels.cost_per_label and human:
        spend = _spend(store, cfg.labels.cost_per_label)
        out.append(Sli("label_cost_per_verified_label", spend / len(human)))

    if facts.flow == "monitor":
        out.append(Sli("gold_shift", float(facts.gold_shifted), (), 0.0, facts.gold_shifted))

    # the gate, and a minority class's collapse as a label-health breach
    gate = facts.gate
    if gate is not None:
        out.append(Sli("gate_passed", float(gate.passed)))
        for k, v in gate.candidate.scalars().items():
            out.append(Sli("gate_gold_metric", v, (("metric", k),)))
        worst = gate.candidate.worst_class_recall
        if worst == worst:
            rfloor = h.min_class_recall
            out.append(
                Sli(
                    "class_recall_min_ratio",
                    worst,
                    (),
                    rfloor,
                    rfloor is not None and worst < rfloor,
                )
            )
    return out


def _spend(store: Store, costs: dict[str, float]) -> float:
    """Sum of the configured cost of every label event: the source name, then the
    longest matching 'prefix:' key, then the source kind."""
    prefixes = sorted((k for k in costs if k.endswith(":")), key=len, reverse=True)
    total = 0.0
    for b in store.iter_batches(LABELS, ["source_kind", "source_name"], batch_size=65536):
        for kind, name in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True):
            if name in costs:
                total += costs[name]
            elif (p := next((p for p in prefixes if name.startswith(p)), None)) is not None:
                total += costs[p]
            else:
                total += costs.get(kind, 0.0)
    return total
