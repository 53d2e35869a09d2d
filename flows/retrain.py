"""The retrain flow: ingest -> weak label (when enabled) -> train -> drift checks -> gate on
the gold test part against the pinned champion -> register -> promote (compare-and-set)
or reject -> label health (the SLIs) -> sample what people should label next (when
`sampling.mode` is not off). The README's `make run` runs it on the embedded default.

    semilabel retrain
    semilabel retrain --set train.device=cuda --set train.student_steps=5000

The whole run holds the registry lock of its model (`tasks.registry.lock`), so two
retrains, or a retrain and a monitor or rollback, never interleave.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from prefect import Task, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import Config, load_config
from flows.annotate import annotation_inputs
from flows.monitor import label_health_inputs
from flows.sample import sampling_inputs
from flows.train import training_inputs
from flows.weak_label import weak_label_inputs
from tasks.annotation.delivery import deliver_requests
from tasks.ingest import ingest_source, publish_ingest_summary
from tasks.registry import RegistryRef, registry_lock
from tasks.registry.promotion import (
    AFTER_DECISION_DELAYS_S,
    AFTER_DECISION_TRIES,
    Destination,
    RetrainDecision,
    evaluate_on_gold,
    gate_candidate,
    register_and_decide,
)
from tasks.sampling import sample_drifted, sample_examples
from tasks.slis import (
    DriftCheck,
    RunFacts,
    drift_gate_checks,
    drift_task,
    report_label_health,
    retrain_outcomes,
)
from tasks.tracking import ui_base
from tasks.training import TrainSummary, publish_train_summary, train_candidate
from tasks.validation import GatePolicy, GateReport
from tasks.validation.gold import GoldSpec
from tasks.validation.next_step import cli_args
from tasks.weak_labeling.run import weak_label_examples

P = ParamSpec("P")
R = TypeVar("R")


def with_gold_budget(cfg: Config, gold: int) -> Config:
    """`cfg` whose sampling asks for at least `gold` gold-stream labels."""
    budget = cfg.sampling.budget
    if gold <= budget.gold:
        return cfg
    sampling = cfg.sampling.model_copy(update={"budget": budget.model_copy(update={"gold": gold})})
    return cfg.model_copy(update={"sampling": sampling})


@flow(name="retrain")
def retrain(
    config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> RetrainDecision | State:
    """Ingest, train a candidate, gate it against the champion on gold, register it, and
    promote it only if the gate passes and the champion did not move meanwhile. Steps
    after the decision that fail even when retried leave a completed run whose message
    and `warnings` say what failed (the caller of `retrain()` gets the decision).

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file, e.g. {"train.student_steps": 3000}.
    """
    cfg = load_config(config_path, overrides)
    run_id = str(flow_run.id or "local")
    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    with registry_lock(ref, cfg.store.root, cfg.mlflow.registry_lock_timeout_s) as lease:
        ingested = ingest_source(cfg.data_spec(), cfg.source, cfg.ingest, run_id=run_id)
        publish_ingest_summary(ingested, cfg.store.root)
        weak = (
            weak_label_examples(weak_label_inputs(cfg), run_id=run_id)
            if cfg.weak_labeling.enabled
            else None
        )
        trained = train_candidate(training_inputs(cfg), owner=run_id)
        publish_train_summary(trained)
        drift, newest_batch = drift_task(label_health_inputs(cfg), trained.model_uri)
        args = cli_args(config_path, overrides)
        decision, report = _gate_and_register(
            cfg,
            Destination(
                ref,
                tuple(cfg.taxonomy.classes),
                str(cfg.store.root),
                ui_base(cfg.mlflow.tracking_uri, cfg.mlflow.ui_url),
                args,
                lease,
            ),
            trained,
            drift,
        )
        facts = RunFacts(
            flow="retrain",
            pseudo_label_precision=trained.pseudo_label_precision,
            pseudo_label_coverage=trained.pseudo_label_coverage,
            pseudo_labeling_off=trained.pseudo_labeling_off_at is not None,
            gate=report,
            label_model_gold_accuracy=weak.gold_accuracy if weak else None,
            retrain_outcomes=retrain_outcomes(cfg.health.retrain_window, exclude=run_id),
            drift=tuple(drift),
        )
        decision = _after_decision(cfg, run_id, decision, facts, trained, newest_batch)
        if decision.warnings:  # completed, and the run's state says what failed
            return Completed(message=decision.state_message(), data=decision)
        return decision


def _gate_and_register(
    cfg: Config, destination: Destination, trained: TrainSummary, drift: list[DriftCheck]
) -> tuple[RetrainDecision, GateReport]:
    """Candidate and champion on the same gold test snapshot, the gate, and the
    registration (and promotion, on a pass) of the candidate."""
    evaluation = evaluate_on_gold(
        cfg.store.root,
        GoldSpec.from_data(cfg.data_spec()),
        destination.ref,
        trained.model_uri,
        cfg.mlflow.trust_pickled_models,
    )
    report = gate_candidate(
        evaluation,
        GatePolicy.from_config(cfg.gate, cfg.seed),
        drift_gate_checks(drift, cfg.health.drift.on_breach),
        destination.cli_args,
    )
    return register_and_decide(destination, trained, evaluation, report), report


def _after_decision(
    cfg: Config,
    run_id: str,
    decision: RetrainDecision,
    facts: RunFacts,
    trained: TrainSummary,
    newest_batch: list[str],
) -> RetrainDecision:
    """The steps after the decision (the champion may have moved): each is retried, and
    one that still fails is a warning on a completed run, never a failed retrain."""
    warnings = list(decision.warnings)
    with _warn_on_failure("the label-health report", warnings):
        health = retried(report_label_health)(
            label_health_inputs(cfg), facts, run_id, trained.mlflow_run_id
        )
        if health.push_error:
            warnings.append(f"the label-health push failed: {health.push_error}")
    drifted = any(c.breached and c.name == "newest_batch" for c in facts.drift)
    if drifted and cfg.health.drift.on_breach == "sample":
        with _warn_on_failure("asking for labels on the drifted batch", warnings):
            drifted_sample = retried(sample_drifted)(
                cfg.data_spec(), cfg.sampling, run_id, newest_batch
            )
            retried(deliver_requests)(annotation_inputs(cfg), drifted_sample, run_id)
    if cfg.sampling.mode != "off":  # ask people for the labels the next run needs
        # An undecided gate asks for the gold it needs in the gold stream itself.
        asking = with_gold_budget(cfg, decision.gold_labels_requested)
        with _warn_on_failure("sampling and delivering the next labels", warnings):
            sampled = retried(sample_examples)(sampling_inputs(asking), run_id)
            delivery = retried(deliver_requests)(annotation_inputs(asking), sampled, run_id)
            decision = dataclasses.replace(decision, next_labels=delivery.summary())
    return dataclasses.replace(decision, warnings=tuple(warnings))


def retried(step: Task[P, R]) -> Task[P, R]:
    """`step` with the retries of a step after the decision."""
    return step.with_options(
        retries=AFTER_DECISION_TRIES - 1, retry_delay_seconds=list(AFTER_DECISION_DELAYS_S)
    )


@contextmanager
def _warn_on_failure(what: str, warnings: list[str]) -> Iterator[None]:
    """A failure in the body becomes a warning naming `what`, logged to the run."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the decision stands; the run says what failed
        warning = f"{what} failed ({AFTER_DECISION_TRIES} tries): {type(exc).__name__}: {exc}"
        get_run_logger().warning("%s; the registry decision stands", warning)
        warnings.append(warning)


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("retrain", retrain))
