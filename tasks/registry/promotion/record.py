"""Recording a retrain's decision: the gate's evidence on the candidate's MLflow run, the
candidate registered with its evidence in tags, promotion only on a pass and only while
the champion is the version the gate compared against, and the decision described on
run and version."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.registry.aliases import (
    TAG_GATE,
    TAG_PROMOTION,
    ChampionMoved,
    Lease,
    RegistryLeaseLost,
    RegistryRef,
    champion_version,
    promote,
    register_candidate,
    tag_version,
)
from tasks.registry.lineage import LineageError, lineage
from tasks.registry.promotion.decision import RetrainDecision, check_lines, decision_headline
from tasks.registry.promotion.evaluation import Evaluation
from tasks.store import Store
from tasks.tracking import run_url, snapshot_dataset, tidy
from tasks.training import TrainSummary, code_version
from tasks.validation import GateReport
from tasks.validation.next_step import GoldPool, gold_to_request, next_step
from tasks.validation.reports import (
    decision_markdown,
    gate_markdown,
    plot_confusion,
    plot_gate,
    plot_reliability,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


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
class Destination:
    """Where a retrain's decision is recorded: the registered model, its classes, the
    store the data came from (datasets, lineage), the MLflow UI to link to, and the run's
    own command-line options for the commands a next step prints."""

    ref: RegistryRef
    classes: tuple[str, ...]
    store_uri: str
    ui_url: str
    cli_args: str = ""
    lease: Lease | None = None  # the run's registry lock, checked before alias writes


def log_gate_to_run(
    dest: Destination, run_id: str, evaluation: Evaluation, report: GateReport
) -> None:
    """The gate on the candidate's MLflow run: the gold snapshot as its `eval` dataset
    (with the gate's metrics attached), `gate/` metrics, a per-class table, the report,
    and the decision, confusion-matrix and reliability images."""
    import mlflow

    gold_ds = snapshot_dataset(
        dest.store_uri, evaluation.gold.snapshot_id, f"gold-test-{evaluation.gold.snapshot_id}"
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(gold_ds, context="eval")
        _log_gate_metrics(evaluation, report, gold_ds)
        _log_per_class_table(dest.classes, evaluation)
        mlflow.set_tags(
            {TAG_GATE: report.decision, "semilabel.gold_snapshot_id": evaluation.gold.snapshot_id}
        )
        _log_gate_artifacts(dest, evaluation, report)


def _log_gate_metrics(evaluation: Evaluation, report: GateReport, gold_ds: Any) -> None:
    """`gate/` metrics on the active run: the candidate's, the bounds the gate decided
    on, the paired gain, the differences with the champion, gold sizes and the outcome."""
    import mlflow

    cand, champ = evaluation.candidate, evaluation.champion
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
            {"gate/accuracy_gain_low": report.gain.low, "gate/accuracy_gain_high": report.gain.high}
        )
    if champ is not None:
        theirs = {**champ.scalars(), "worst_class_recall": champ.worst_class_recall}
        for k, v in values.items():
            if v == v and theirs[k] == theirs[k]:
                mlflow.log_metric(f"gate/{k}_vs_champion", tidy(v - theirs[k]), dataset=gold_ds)
    mlflow.log_metrics({f"gate/n_gold_{p}": n for p, n in report.gold_sizes.items()})
    mlflow.log_metric("gate/passed", float(report.passed))
    mlflow.log_metric("gate/labels_needed", float(report.labels_needed))


def _log_per_class_table(classes: tuple[str, ...], evaluation: Evaluation) -> None:
    """`gate/per_class.json` on the active run: each class's recall, precision and support,
    and the champion's recall."""
    import mlflow

    cand, champ = evaluation.candidate, evaluation.champion
    mlflow.log_table(
        {
            "class": list(classes),
            "recall": [cand.per_class_recall.get(c) for c in classes],
            "precision": [cand.per_class_precision.get(c) for c in classes],
            "support": [int(sum(row)) for row in cand.confusion],
            "champion_recall": [champ.per_class_recall.get(c) if champ else None for c in classes],
        },
        "gate/per_class.json",
    )


def _log_gate_artifacts(dest: Destination, evaluation: Evaluation, report: GateReport) -> None:
    """`gate/` artifacts on the active run: the report (Markdown and JSON) and the gate,
    confusion-matrix and reliability images."""
    import mlflow

    pool = evaluation.pool or GoldPool(0.0, 1.0, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "gate_report.md").write_text(
            gate_markdown(report, next_step(report, pool, dest.cli_args))
        )
        (d / "gate_report.json").write_text(json.dumps(report.to_dict(), indent=2))
        (d / "gate_checks.png").write_bytes(plot_gate(report, "gate on gold (test)"))
        (d / "confusion_matrix.png").write_bytes(
            plot_confusion(evaluation.candidate, dest.classes, "candidate on gold (test)")
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
    tags = _version_tags(trained, evaluation, report)
    version = register_candidate(ref, trained.model_uri, trained.mlflow_run_id, tags)
    outcome = _promote_on_pass(dest, version, evaluation, report)
    if not outcome.promoted:
        tag_version(ref, version, TAG_PROMOTION, fit_tag(f"not promoted: {outcome.reason}"))
    decision = _decision(dest, trained, evaluation, report, version, outcome)
    return _described(dest, decision, report, trained, evaluation)


def _version_tags(
    trained: TrainSummary, evaluation: Evaluation, report: GateReport
) -> dict[str, str]:
    """The candidate version's tags: the gate's verdict and evidence, the data, the code,
    the champion it was compared with, and its gate-time gold metrics (`gate.<metric>`,
    the baseline monitoring compares against)."""
    cand = evaluation.candidate
    return {
        TAG_GATE: report.decision,
        "semilabel.gate_summary": fit_tag(report.summary()),
        "semilabel.snapshot_id": trained.snapshot_id,
        "semilabel.gold_snapshot_id": evaluation.gold.snapshot_id,
        "semilabel.code_version": code_version(),
        "semilabel.champion_at_gate": evaluation.champion_version or "none",
        **{f"gate.{k}": f"{v:.6f}" for k, v in cand.scalars().items()},
        "gate.n_gold": str(cand.n),
    }


@dataclass(frozen=True)
class _Outcome:
    """Whether the registered version was promoted, the champion it replaced, and why."""

    promoted: bool
    previous: str | None
    reason: str


def _promote_on_pass(
    dest: Destination, version: str, evaluation: Evaluation, report: GateReport
) -> _Outcome:
    """Promote `version` when the gate passed and the champion is still the one it was
    compared against; otherwise say why not."""
    ref = dest.ref
    if not report.passed:
        reason = report.summary()
        log.warning(
            "candidate %s v%s %s by the gate: %s", ref.model_name, version, report.verdict, reason
        )
        return _Outcome(False, None, reason)
    try:
        previous = promote(
            ref, version, expected_champion=evaluation.champion_version, lease=dest.lease
        ).previous
    except ChampionMoved as exc:
        log.warning("%s", exc)
        return _Outcome(False, None, str(exc))
    except RegistryLeaseLost as exc:
        log.error("%s", exc)
        return _Outcome(False, None, str(exc))
    reason = "gate passed; promoted" + (
        f" (accuracy vs v{report.champion_version}: {report.gain}, "
        + ("a significant gain)" if report.significant_gain else "no significant gain)")
        if report.gain is not None
        else ""
    )
    return _Outcome(True, previous, reason)


def _decision(
    dest: Destination,
    trained: TrainSummary,
    evaluation: Evaluation,
    report: GateReport,
    version: str,
    outcome: _Outcome,
) -> RetrainDecision:
    ref, cand = dest.ref, evaluation.candidate
    experiment_id = ref.client().get_run(trained.mlflow_run_id).info.experiment_id
    pool = evaluation.pool or GoldPool(0.0, 1.0, 0, 0)
    return RetrainDecision(
        model_name=ref.model_name,
        version=version,
        gate=report.decision,
        promoted=outcome.promoted,
        reason=outcome.reason,
        champion_version=version if outcome.promoted else champion_version(ref),
        previous_champion=outcome.previous,
        gate_summary=report.summary(),
        mlflow_run_id=trained.mlflow_run_id,
        gold_accuracy=cand.accuracy,
        gold_macro_f1=cand.macro_f1,
        gold_sizes=report.gold_sizes,
        run_url=run_url(dest.ui_url, experiment_id, trained.mlflow_run_id),
        next_step=next_step(report, pool, dest.cli_args),
        checks=check_lines(report),
        gold_labels_requested=gold_to_request(report, pool),
    )


def _described(
    dest: Destination,
    decision: RetrainDecision,
    report: GateReport,
    trained: TrainSummary,
    evaluation: Evaluation,
) -> RetrainDecision:
    """`decision`, described on its run and version (`describe_decision`, retried); a
    description that still fails is a warning on the decision, which stands."""
    try:
        after_decision(
            lambda: describe_decision(
                dest, decision, report, trained.snapshot_id, evaluation.gold.snapshot_id
            )
        )
    except Exception as exc:  # noqa: BLE001 - the decision stands; the run says what failed
        warning = (
            f"describing the decision on the MLflow run and version failed "
            f"({AFTER_DECISION_TRIES} tries): {type(exc).__name__}: {exc}"
        )
        log.warning("%s", warning)
        return dataclasses.replace(decision, warnings=(*decision.warnings, warning))
    return decision


AFTER_DECISION_DELAYS_S = (2.0, 10.0)  # between the tries of a step after the decision
AFTER_DECISION_TRIES = len(AFTER_DECISION_DELAYS_S) + 1


def after_decision(step: Callable[[], T]) -> T:
    """Run `step`, a step after the registry decision (the alias may have moved already),
    trying AFTER_DECISION_TRIES times: a tracking server that blinks must not turn a
    made decision into a failed run. Raises the last try's error."""
    for attempt, delay in enumerate(AFTER_DECISION_DELAYS_S, start=1):
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - tried again; the last try's error is raised
            log.warning(
                "a step after the decision failed (try %d of %d: %s); trying again in %.0f s",
                attempt,
                AFTER_DECISION_TRIES,
                exc,
                delay,
            )
            time.sleep(delay)
    return step()


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
