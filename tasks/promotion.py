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
from tasks.validation import Check, GatePolicy, GateReport, GoldMetrics, decide, gold_metrics

log = logging.getLogger(__name__)


def sample_gold_hint(missing: int) -> str:
    """The command that asks for the gold labels a refusing gate needs."""
    return (
        "Ask for them: `semilabel sample --set sampling.budget.gold="
        f"{2 * missing} --set sampling.budget.train=0 --set sampling.mode=export`, label "
        "the tasks, then `semilabel annotate import --file <export>` (about half of gold "
        "falls in the test part, hence twice as many)."
    )


@dataclass
class Evaluation:
    gold: GoldSet
    candidate: GoldMetrics
    candidate_probs: np.ndarray
    champion: GoldMetrics | None
    champion_version: str | None  # the pinned version evaluated; None: no champion


def evaluate_candidate_and_champion(
    store: Store, spec: GoldSpec, ref: RegistryRef, candidate_uri: str, *, trust_pickle: bool
) -> Evaluation:
    """Both models on the same gold test snapshot, in the same run; the champion pinned
    to the version that held the alias when this started."""
    gold = load_gold_set(store, spec, TEST)
    probs = gold_probabilities(load_classifier(candidate_uri, ref.tracking_uri), gold, spec)
    candidate = gold_metrics(probs, gold.y.numpy(), spec.classes)
    version = champion_version(ref)
    champion = None
    if version is not None:
        champ = load_classifier(
            ref.version_uri(version), ref.tracking_uri, trust_pickle=trust_pickle
        )
        champion = gold_metrics(gold_probabilities(champ, gold, spec), gold.y.numpy(), spec.classes)
    return Evaluation(gold, candidate, probs, champion, version)


def gold_probabilities(model: torch.nn.Module, gold: GoldSet, spec: GoldSpec) -> np.ndarray:
    """Class probabilities (N, K) of `model` on the gold set (empty gold: (0, K))."""
    if len(gold) == 0:
        return np.zeros((0, len(spec.classes)))
    return predict_proba(model, gold.x).numpy()


@dataclass(frozen=True)
class RetrainDecision:
    model_name: str
    version: str
    gate: str  # passed | rejected: the gate's verdict
    promoted: bool
    reason: str  # why promoted or not, in one line
    champion_version: str | None  # after the decision
    previous_champion: str | None
    gate_summary: str
    mlflow_run_id: str
    gold_accuracy: float
    gold_macro_f1: float
    gold_sizes: dict[str, int]
    run_url: str = ""  # the run in the MLflow UI
    next_labels: str = ""  # what was sampled for people to label, when sampling is on

    @property
    def decision(self) -> str:
        """passed: promoted to champion; rejected: registered, not promoted."""
        return "passed" if self.promoted else "rejected"

    def rows(self) -> list[dict[str, object]]:
        return [
            {"metric": "registered", "value": f"{self.model_name} v{self.version}"},
            {"metric": "gate", "value": self.gate},
            {"metric": "promoted", "value": "yes" if self.promoted else "no"},
            {"metric": "why", "value": self.reason[:200]},
            {
                "metric": "champion now",
                "value": f"v{self.champion_version}" if self.champion_version else "none",
            },
            {
                "metric": "previous champion",
                "value": f"v{self.previous_champion}" if self.previous_champion else "none",
            },
            {"metric": "gold test accuracy", "value": round(self.gold_accuracy, 4)},
            {"metric": "gold test macro-F1", "value": round(self.gold_macro_f1, 4)},
            {"metric": "gold test / dev labels", "value": _sizes(self.gold_sizes)},
            {"metric": "MLflow run", "value": self.mlflow_run_id},
        ] + ([{"metric": "to label next", "value": self.next_labels}] if self.next_labels else [])


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
    gold_ds = snapshot_dataset(
        dest.store_uri, evaluation.gold.snapshot_id, f"gold-test-{evaluation.gold.snapshot_id}"
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(gold_ds, context="eval")
        values = {**cand.scalars(), "worst_class_recall": cand.worst_class_recall}
        for k, v in values.items():
            if v == v:
                mlflow.log_metric(f"gate/{k}", tidy(v), dataset=gold_ds)
        if champ is not None:
            theirs = {**champ.scalars(), "worst_class_recall": champ.worst_class_recall}
            for k, v in values.items():
                if v == v and theirs[k] == theirs[k]:
                    mlflow.log_metric(f"gate/{k}_vs_champion", tidy(v - theirs[k]), dataset=gold_ds)
        mlflow.log_metrics({f"gate/n_gold_{p}": n for p, n in report.gold_sizes.items()})
        mlflow.log_metric("gate/passed", float(report.passed))
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
            (d / "gate_report.md").write_text(
                gate_markdown(report, sample_gold_hint(report.gold_labels_missing))
            )
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

    if decision.promoted:
        headline = f"PROMOTED: v{decision.version} is the champion" + (
            f" (was v{decision.previous_champion})" if decision.previous_champion else ""
        )
    elif report.passed:
        headline = f"NOT PROMOTED: v{decision.version} passed its gate, but {decision.reason}"
    else:
        headline = f"REJECTED: v{decision.version} failed {len(report.violations)} check(s): " + (
            ", ".join(c.name for c in report.violations)
        )
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
    client = dest.ref.client()
    client.set_tag(decision.mlflow_run_id, "mlflow.note.content", text)
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
        "semilabel.gate_summary": report.summary()[:4000],
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
        log.warning("candidate %s v%s rejected by the gate: %s", ref.model_name, version, reason)
    else:
        try:
            previous = promote(ref, version, expected_champion=evaluation.champion_version).previous
            promoted = True
            reason = "gate passed; promoted"
        except ChampionMoved as exc:
            reason = str(exc)
            log.warning("%s", reason)
    if not promoted:
        tag_version(ref, version, TAG_PROMOTION, f"not promoted: {reason}")
    experiment_id = ref.client().get_run(trained.mlflow_run_id).info.experiment_id
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
        evaluation.candidate,
        evaluation.champion,
        policy,
        evaluation.champion_version,
        evaluation.gold.sizes,
        extra or (),
    )
    create_markdown_artifact(
        gate_markdown(report, sample_gold_hint(report.gold_labels_missing)),
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
