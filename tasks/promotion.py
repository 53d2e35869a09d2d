"""The promotion stage of a retrain: the candidate and the champion on the same gold test
snapshot, the gate, registration of the candidate, and a compare-and-set promotion.

The champion is resolved once, to a version number, and loaded pinned
(`models:/name/<version>`); promotion then happens only if `champion` still points at
that version. A champion moved by anything else in between (a person in the UI, a run of
an older semilabel) means the candidate was never compared with the new one: it is
registered, its gate result kept, and it is not promoted, with the reason on the version.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from models import predict_proba
from tasks.gold import GoldSet, GoldSpec, load_gold_set
from tasks.lineage import LineageError, lineage
from tasks.model_artifact import load_classifier
from tasks.registry import (
    TAG_GATE,
    TAG_PROMOTION,
    ChampionMoved,
    RegistryRef,
    champion_version,
    promote,
    register_candidate,
    tag_version,
)
from tasks.reports import (
    decision_markdown,
    gate_markdown,
    plot_confusion,
    plot_gate,
    plot_reliability,
)
from tasks.store import TEST, Store
from tasks.tracking import run_url, snapshot_dataset, tidy
from tasks.training import TrainSummary, code_version
from tasks.validation import (
    REJECTED,
    UNDECIDED,
    Check,
    GatePolicy,
    GateReport,
    GoldEvidence,
    GoldMetrics,
    decide,
    gold_metrics,
)
from tasks.validation.evidence import LABELS_CAP

log = logging.getLogger(__name__)


TAG_LIMIT = 4000  # characters; the description and gate_report.md hold the whole text


def fit_tag(text: str, limit: int = TAG_LIMIT) -> str:
    """`text` for a tag value: whole when it fits, else cut after its last whole clause
    ("; ") with a pointer to where the rest is, never in mid-sentence."""
    if len(text) <= limit:
        return text
    more = " ... (the rest: the run's gate/gate_report.md)"
    head = text[: limit - len(more)]
    cut = head.rfind("; ")
    return (head[:cut] if cut > 0 else head.rsplit(" ", 1)[0]) + more


@dataclass(frozen=True)
class GoldPool:
    """What the next step needs to know about gold: how labels split into its test part,
    how many gold examples still lack a human label, and how large the store is."""

    fraction: float
    test_share: float
    unlabeled: int  # gold examples (dev or test) with no human label yet
    n_examples: int  # examples in the store


def gold_to_request(report: GateReport, pool: GoldPool) -> int:
    """Gold labels to ask for so the gold test part most likely grows by what the gate
    needs (only `test_share` of gold lands in test), capped by what the pool has left."""
    if not report.labels_needed or any(c.labels_needed >= LABELS_CAP for c in report.undecided):
        return 0
    return min(pool.unlabeled, math.ceil(report.labels_needed / pool.test_share))


def next_step(report: GateReport, pool: GoldPool) -> str:
    """What the user should do after this decision, in full: for an undecided gate, the
    exact `semilabel sample` command for the gold labels that would most likely decide it,
    or, when the gold pool is exhausted, what else would."""
    if report.verdict == REJECTED:
        return (
            "The candidate failed the checks above; the champion stays. Look at the failed "
            "checks and their per-class recall, fix the labels or data they point to (e.g. "
            "`semilabel sample --set sampling.budget.review=100` asks for likely-wrong labels "
            "to be checked), then run `semilabel retrain` again."
        )
    if report.verdict != UNDECIDED:
        return ""
    stuck = [c.name for c in report.undecided if c.labels_needed >= LABELS_CAP]
    if stuck:
        return (
            f"The estimate of {', '.join(stuck)} sits on its limit: more gold labels would "
            "most likely not decide it. Improve the candidate instead (more training labels: "
            "`semilabel sample --set sampling.budget.train=200 --set sampling.mode=export`, "
            "label, `semilabel annotate import --file <export>`), then `semilabel retrain`."
        )
    need = report.labels_needed
    ask = gold_to_request(report, pool)
    share = f"{pool.test_share:g}"
    if ask:
        text = (
            f"About {need} more gold test labels would most likely decide it. Ask for them: "
            f"`semilabel sample --set sampling.budget.gold={ask} --set sampling.budget.train=0 "
            "--set sampling.mode=export`, label the tasks, `semilabel annotate import --file "
            "<export>`, then `semilabel retrain`"
            f" (a share of {share} of gold lands in the test part, hence {ask} requests)."
        )
        if ask < math.ceil(need / pool.test_share):
            text += (
                f" That is every gold example still unlabeled ({pool.unlabeled}): it will not "
                "be enough. " + _grow_gold(need, report.candidate.n, pool)
            )
        return text
    return (
        f"About {need} more gold test labels would most likely decide it, but the gold pool "
        "is exhausted: every gold example already has a human label. "
        + _grow_gold(need, report.candidate.n, pool)
    )


def _grow_gold(need: int, have: int, pool: GoldPool) -> str:
    """Two ways to more gold test labels when the pool runs dry, with what each costs."""
    images = math.ceil(need / (pool.fraction * pool.test_share))
    options = (
        f"Either ingest more data (about {images} more images give {need} gold test labels "
        f"at gold.fraction {pool.fraction:g})"
    )
    if have > 0 and pool.n_examples:
        wanted = pool.fraction * (have + need) / have
        if wanted < 1:
            moved = math.ceil(pool.n_examples * (wanted - pool.fraction))
            options += (
                f", or raise gold.fraction from {pool.fraction:g} to about {wanted:.2f} "
                f"(`--set gold.fraction={wanted:.2f}`): about {moved} more examples become "
                "gold, leave training, and need human labels before they count"
            )
    return options + "."


@dataclass
class Evaluation:
    gold: GoldSet
    candidate: GoldMetrics
    candidate_probs: np.ndarray
    champion: GoldMetrics | None
    champion_version: str | None  # the pinned version evaluated; None: no champion
    champion_probs: np.ndarray | None = None  # on the same gold examples, same order
    pool: GoldPool | None = None  # the gold pool behind the next step
    classes: tuple[str, ...] = ()

    def evidence(self) -> GoldEvidence:
        return GoldEvidence(
            self.classes,
            self.gold.y.numpy(),
            self.candidate_probs,
            self.champion_probs,
            self.gold.slices,
        )


def evaluate_candidate_and_champion(
    store: Store, spec: GoldSpec, ref: RegistryRef, candidate_uri: str, *, trust_pickle: bool
) -> Evaluation:
    """Both models on the same gold test snapshot, in the same run; the champion pinned
    to the version that held the alias when this started."""
    gold = load_gold_set(store, spec, TEST)
    probs = gold_probabilities(load_classifier(candidate_uri, ref.tracking_uri), gold, spec)
    candidate = gold_metrics(probs, gold.y.numpy(), spec.classes)
    version = champion_version(ref)
    champion = champ_probs = None
    if version is not None:
        champ = load_classifier(
            ref.version_uri(version), ref.tracking_uri, trust_pickle=trust_pickle
        )
        champ_probs = gold_probabilities(champ, gold, spec)
        champion = gold_metrics(champ_probs, gold.y.numpy(), spec.classes)
    pool = GoldPool(
        spec.split.fraction, spec.split.test_share, gold.unlabeled_gold, gold.n_examples
    )
    return Evaluation(gold, candidate, probs, champion, version, champ_probs, pool, spec.classes)


def gold_probabilities(model: torch.nn.Module, gold: GoldSet, spec: GoldSpec) -> np.ndarray:
    """Class probabilities (N, K) of `model` on the gold set (empty gold: (0, K))."""
    if len(gold) == 0:
        return np.zeros((0, len(spec.classes)))
    return predict_proba(model, gold.x).numpy()


@dataclass(frozen=True)
class RetrainDecision:
    model_name: str
    version: str
    gate: str  # passed | rejected | undecided: the gate's verdict
    promoted: bool
    reason: str  # why promoted or not, in full
    champion_version: str | None  # after the decision
    previous_champion: str | None
    gate_summary: str
    mlflow_run_id: str
    gold_accuracy: float
    gold_macro_f1: float
    gold_sizes: dict[str, int]
    run_url: str = ""  # the run in the MLflow UI
    next_labels: str = ""  # what was sampled for people to label, when sampling is on
    next_step: str = ""  # what the user should do now, in full
    checks: tuple[tuple[str, str], ...] = ()  # (check, "value [low, high] rule: outcome")
    gold_labels_requested: int = 0  # undecided: gold labels the next step asks for

    @property
    def decision(self) -> str:
        """promoted: the champion now; undecided: too little evidence, the champion stays;
        rejected: registered, not promoted."""
        if self.promoted:
            return "promoted"
        return UNDECIDED if self.gate == UNDECIDED else REJECTED

    def rows(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = [
            {"metric": "registered", "value": f"{self.model_name} v{self.version}"},
            {"metric": "decision", "value": self.decision},
            {"metric": "why", "value": self.reason},
            *({"metric": name, "value": text} for name, text in self.checks),
            {
                "metric": "champion now",
                "value": f"v{self.champion_version}" if self.champion_version else "none",
            },
            {
                "metric": "previous champion",
                "value": f"v{self.previous_champion}" if self.previous_champion else "none",
            },
            {"metric": "gold test / dev labels", "value": _sizes(self.gold_sizes)},
            {"metric": "MLflow run", "value": self.mlflow_run_id},
        ]
        if self.next_step:
            rows.append({"metric": "next step", "value": self.next_step})
        if self.next_labels:
            rows.append({"metric": "to label next", "value": self.next_labels})
        return rows


def check_lines(report: GateReport) -> tuple[tuple[str, str], ...]:
    """The report's checks for a summary table: every check that failed or is undecided,
    the overall metrics and comparisons, and the per-class recall checks that passed
    folded into one line (naming the lowest)."""
    out = []
    passed_recall = [c for c in report.checks if c.name.startswith("recall[") and c.passed]
    for c in report.checks:
        routine = c.disabled or c in passed_recall or c.name in ("gold_labels", "labels_per_class")
        if routine and c.status not in ("FAIL", "undecided"):
            continue
        out.append((c.name, f"{c.shown()} {c.rule}: {c.status}"))
    if passed_recall:
        low = min(passed_recall, key=lambda c: c.low)
        out.append(
            (
                "recall (per class)",
                f"{len(passed_recall)} classes pass; lowest bound {low.name} {low.shown()}",
            )
        )
    return tuple(out)


def _sizes(sizes: dict[str, int]) -> str:
    return f"{sizes.get('test', 0)} / {sizes.get('dev', 0)}"


@dataclass(frozen=True)
class Destination:
    """Where a retrain's decision is recorded: the registered model, its classes, the
    store the data came from (datasets, lineage), and the MLflow UI to link to."""

    ref: RegistryRef
    classes: tuple[str, ...]
    store_uri: str
    ui_url: str


def log_gate_to_run(
    dest: Destination, run_id: str, evaluation: Evaluation, report: GateReport
) -> None:
    """The gate on the candidate's MLflow run: the gold snapshot as its `eval` dataset
    (with the gate's metrics attached), `gate/` metrics, a per-class table, the report,
    and the decision, confusion-matrix and reliability images."""
    import mlflow

    cand, champ = evaluation.candidate, evaluation.champion
    pool = evaluation.pool or GoldPool(0.0, 1.0, 0, 0)
    gold_ds = snapshot_dataset(
        dest.store_uri, evaluation.gold.snapshot_id, f"gold-test-{evaluation.gold.snapshot_id}"
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(gold_ds, context="eval")
        values = {**cand.scalars(), "worst_class_recall": cand.worst_class_recall}
        for k, v in values.items():
            if v == v:
                mlflow.log_metric(f"gate/{k}", tidy(v), dataset=gold_ds)
        for k, b in report.bounds.items():  # the bounds the gate decided on
            for side, v in (("low", b.low), ("high", b.high)):
                if math.isfinite(v):
                    mlflow.log_metric(f"gate/{k}_{side}", tidy(v), dataset=gold_ds)
        if report.gain is not None:
            mlflow.log_metrics(
                {
                    "gate/accuracy_gain_low": report.gain.low,
                    "gate/accuracy_gain_high": report.gain.high,
                }
            )
        if champ is not None:
            theirs = {**champ.scalars(), "worst_class_recall": champ.worst_class_recall}
            for k, v in values.items():
                if v == v and theirs[k] == theirs[k]:
                    mlflow.log_metric(f"gate/{k}_vs_champion", tidy(v - theirs[k]), dataset=gold_ds)
        mlflow.log_metrics({f"gate/n_gold_{p}": n for p, n in report.gold_sizes.items()})
        mlflow.log_metric("gate/passed", float(report.passed))
        mlflow.log_metric("gate/labels_needed", float(report.labels_needed))
        classes = dest.classes
        mlflow.log_table(
            {
                "class": list(classes),
                "recall": [cand.per_class_recall.get(c) for c in classes],
                "precision": [cand.per_class_precision.get(c) for c in classes],
                "support": [int(sum(row)) for row in cand.confusion],
                "champion_recall": [
                    champ.per_class_recall.get(c) if champ else None for c in classes
                ],
            },
            "gate/per_class.json",
        )
        mlflow.set_tags(
            {TAG_GATE: report.decision, "semilabel.gold_snapshot_id": evaluation.gold.snapshot_id}
        )
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "gate_report.md").write_text(gate_markdown(report, next_step(report, pool)))
            (d / "gate_report.json").write_text(json.dumps(report.to_dict(), indent=2))
            (d / "gate_checks.png").write_bytes(plot_gate(report, "gate on gold (test)"))
            (d / "confusion_matrix.png").write_bytes(
                plot_confusion(cand, classes, "candidate on gold (test)")
            )
            (d / "reliability_diagram.png").write_bytes(
                plot_reliability(
                    evaluation.candidate_probs, evaluation.gold.y.numpy(), "candidate on gold"
                )
            )
            for f in d.iterdir():
                mlflow.log_artifact(str(f), artifact_path="gate")


def decision_headline(decision: RetrainDecision, report: GateReport) -> str:
    """The verdict in one plain-text line (the first line of every description)."""
    v = f"v{decision.version}"
    if decision.promoted:
        was = f" (was v{decision.previous_champion})" if decision.previous_champion else ""
        gain = ""
        if report.gain is not None:
            gain = (
                f"; more accurate than v{report.champion_version} beyond noise, "
                if report.significant_gain
                else f"; no significant gain over v{report.champion_version}, "
            ) + f"accuracy difference {report.gain}"
        return f"PROMOTED: {v} is the champion{was}{gain}"
    if report.passed:
        return f"NOT PROMOTED: {v} passed its gate, but {decision.reason}"
    if report.verdict == UNDECIDED:
        return (
            f"UNDECIDED: {v} is not promoted, the champion stays: "
            f"{len(report.undecided)} check(s) cannot be decided on {report.candidate.n} gold "
            f"test labels ({', '.join(c.name for c in report.undecided)})"
        )
    return f"REJECTED: {v} failed {len(report.violations)} check(s): " + ", ".join(
        c.name for c in report.violations
    )


def describe_decision(
    dest: Destination,
    decision: RetrainDecision,
    report: GateReport,
    snapshot_id: str,
    gold_snapshot_id: str,
) -> str:
    """The decision as a description on the run (`mlflow.note.content`) and on the
    version, and the model's lineage as `lineage.json` on the run. Returns the text."""
    import mlflow

    headline = decision_headline(decision, report)
    aliases = dest.ref.client().get_registered_model(dest.ref.model_name).aliases or {}
    text = decision_markdown(
        headline=headline,
        report=report,
        snapshot_id=snapshot_id,
        gold_snapshot_id=gold_snapshot_id,
        champion_after=str(aliases["champion"]) if "champion" in aliases else None,
        previous_after=str(aliases["previous_champion"])
        if "previous_champion" in aliases
        else None,
    )
    if decision.next_step:
        text += f"\nNext step: {decision.next_step}\n"
    client = dest.ref.client()
    client.set_tag(decision.mlflow_run_id, "mlflow.note.content", text)
    # The runs list then tells the versions and their fates apart at a glance.
    run = client.get_run(decision.mlflow_run_id)
    base = run.data.tags.get("semilabel.run_name_at_start", run.info.run_name)
    client.set_tag(decision.mlflow_run_id, "semilabel.run_name_at_start", base)
    client.update_run(
        decision.mlflow_run_id, name=f"v{decision.version} {decision.decision} ({base})"
    )
    client.update_model_version(dest.ref.model_name, decision.version, description=text)
    try:
        trace = lineage(
            dest.ref.version_uri(decision.version), dest.ref.tracking_uri, Store(dest.store_uri)
        )
    except LineageError as exc:  # the decision stands; only its trace is missing
        log.warning("no lineage.json on run %s: %s", decision.mlflow_run_id, exc)
        return text
    with mlflow.start_run(run_id=decision.mlflow_run_id):
        mlflow.log_dict(trace.to_dict(), "lineage.json")
    return text


def record_decision(
    dest: Destination,
    trained: TrainSummary,
    evaluation: Evaluation,
    report: GateReport,
) -> RetrainDecision:
    """Log the gate to the candidate's run, register the candidate as a new version with
    its evidence in tags, promote it only on a pass and only if the champion is still
    the version the gate compared against, and describe the decision on run and version."""
    import mlflow

    ref = dest.ref
    mlflow.set_tracking_uri(ref.tracking_uri)
    log_gate_to_run(dest, trained.mlflow_run_id, evaluation, report)
    cand = evaluation.candidate
    tags = {
        TAG_GATE: report.decision,
        "semilabel.gate_summary": fit_tag(report.summary()),
        "semilabel.snapshot_id": trained.snapshot_id,
        "semilabel.gold_snapshot_id": evaluation.gold.snapshot_id,
        "semilabel.code_version": code_version(),
        "semilabel.champion_at_gate": evaluation.champion_version or "none",
        **{f"gate.{k}": f"{v:.6f}" for k, v in cand.scalars().items()},
        "gate.n_gold": str(cand.n),
    }
    version = register_candidate(ref, trained.model_uri, trained.mlflow_run_id, tags)
    previous = None
    promoted = False
    if not report.passed:
        reason = report.summary()
        log.warning(
            "candidate %s v%s %s by the gate: %s", ref.model_name, version, report.verdict, reason
        )
    else:
        try:
            previous = promote(ref, version, expected_champion=evaluation.champion_version).previous
            promoted = True
            reason = "gate passed; promoted" + (
                f" (accuracy vs v{report.champion_version}: {report.gain}, "
                + ("a significant gain)" if report.significant_gain else "no significant gain)")
                if report.gain is not None
                else ""
            )
        except ChampionMoved as exc:
            reason = str(exc)
            log.warning("%s", reason)
    if not promoted:
        tag_version(ref, version, TAG_PROMOTION, fit_tag(f"not promoted: {reason}"))
    experiment_id = ref.client().get_run(trained.mlflow_run_id).info.experiment_id
    pool = evaluation.pool or GoldPool(0.0, 1.0, 0, 0)
    decision = RetrainDecision(
        model_name=ref.model_name,
        version=version,
        gate=report.decision,
        promoted=promoted,
        reason=reason,
        champion_version=version if promoted else champion_version(ref),
        previous_champion=previous,
        gate_summary=report.summary(),
        mlflow_run_id=trained.mlflow_run_id,
        gold_accuracy=cand.accuracy,
        gold_macro_f1=cand.macro_f1,
        gold_sizes=report.gold_sizes,
        run_url=run_url(dest.ui_url, experiment_id, trained.mlflow_run_id),
        next_step=next_step(report, pool),
        checks=check_lines(report),
        gold_labels_requested=gold_to_request(report, pool),
    )
    describe_decision(dest, decision, report, trained.snapshot_id, evaluation.gold.snapshot_id)
    return decision


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="evaluate-on-gold", cache_policy=NO_CACHE)
def evaluate_on_gold(
    store_root: str, spec: GoldSpec, ref: RegistryRef, candidate_uri: str, trust_pickle: bool
) -> Evaluation:
    """Evaluate the candidate and the pinned champion on the same gold test snapshot."""
    ev = evaluate_candidate_and_champion(
        Store(store_root), spec, ref, candidate_uri, trust_pickle=trust_pickle
    )
    get_run_logger().info(
        "gold test (%d labels; dev %d): candidate accuracy %.4f%s",
        ev.candidate.n,
        ev.gold.sizes.get("dev", 0),
        ev.candidate.accuracy,
        f", champion v{ev.champion_version} {ev.champion.accuracy:.4f}" if ev.champion else "",
    )
    return ev


@task(name="gate-candidate", cache_policy=NO_CACHE)
def gate_candidate(
    evaluation: Evaluation, policy: GatePolicy, extra: list[Check] | None = None
) -> GateReport:
    """Apply the gate policy and publish its report as a markdown artifact."""
    report = decide(
        evaluation.evidence(),
        policy,
        evaluation.champion_version,
        evaluation.gold.sizes,
        extra or (),
    )
    create_markdown_artifact(
        gate_markdown(report, next_step(report, evaluation.pool or GoldPool(0.0, 1.0, 0, 0))),
        key="gate-report",
        description=f"Gate: {report.decision}",
    )
    (get_run_logger().info if report.passed else get_run_logger().warning)(
        "gate %s", report.summary()
    )
    return report


@task(name="register-and-decide", cache_policy=NO_CACHE)
def register_and_decide(
    dest: Destination,
    trained: TrainSummary,
    evaluation: Evaluation,
    report: GateReport,
) -> RetrainDecision:
    """Register the candidate; promote it only when the gate passed against the champion
    that is still the champion."""
    decision = record_decision(dest, trained, evaluation, report)
    get_run_logger().info(
        "%s v%s %s (%s); champion is %s",
        decision.model_name,
        decision.version,
        "promoted" if decision.promoted else "not promoted",
        decision.reason,
        f"v{decision.champion_version}" if decision.champion_version else "none",
    )
    create_table_artifact(
        table=decision.rows(),
        key="retrain-decision",
        description=f"{decision.model_name} v{decision.version}",
    )
    return decision
