"""The monitor flow: re-evaluate the live champion on the current gold test part (new gold
labels arrive between runs) and roll back automatically when it has regressed beyond
`monitor.tolerance` against its own gate-time metrics.

    semilabel monitor                  # exit 0 whatever it found; the report says what
    semilabel monitor --strict         # exit 3 unless the champion was checked and is ok
    semilabel monitor --fail-on-alert  # exit 4 on any label-health breach

Every run also computes the label SLIs (`tasks.slis`): the store's `slis` dataset, an
MLflow run, the `label-health` artifact, and the Pushgateway when configured.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import Config, load_config
from tasks.registry import RegistryRef, registry_lock
from tasks.registry.monitoring import ChampionNotVerified, Evidence, check_champion
from tasks.slis import (
    LabelHealthAlert,
    LabelHealthInputs,
    monitor_facts,
    report_label_health,
)
from tasks.validation import MonitorReport
from tasks.validation.gold import GoldSpec


@flow(name="monitor")
def monitor(
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    strict: bool = False,
    fail_on_alert: bool = False,
) -> MonitorReport | State:
    """Check the champion on current gold; roll back on regression.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file.
        strict: fail the run when something is left for a person (`MonitorReport.settled`):
            a regression that was not rolled back, or a champion that cannot be vouched
            for (no gate baseline, too little gold). No champion yet completes and says
            so; a rollback completes as `RolledBack`, naming the new champion.
        fail_on_alert: fail the run when a label SLI breaches its threshold.

    A failure the caller asked for (`strict`, `fail_on_alert`) is a Failed state
    carrying its exception (the caller of `monitor()` gets it raised), not an exception
    raised here: that would print a traceback although nothing crashed.
    """
    cfg = load_config(config_path, overrides)
    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    with registry_lock(ref, cfg.store.root, cfg.mlflow.registry_lock_timeout_s) as lease:
        report = check_champion(
            cfg.store.root,
            GoldSpec.from_data(cfg.data_spec()),
            ref,
            cfg.monitor,
            cfg.mlflow.trust_pickled_models,
            Evidence(cfg.gate.confidence, cfg.gate.bootstrap_samples, cfg.seed),
            lease,
        )
    run_id = str(flow_run.id or "local")
    health_inputs = label_health_inputs(cfg)
    facts = dataclasses.replace(
        monitor_facts(health_inputs, run_id), gold_shifted=report.action == "gold_shifted"
    )
    health = report_label_health(health_inputs, facts, run_id)
    report = dataclasses.replace(report, label_health=health.markdown())
    if strict and not report.settled:
        return _failed(ChampionNotVerified(report))
    if fail_on_alert and health.breaches:
        return _failed(LabelHealthAlert(health))
    if report.action == "rolled_back":  # completed, under a name of its own
        return Completed(name="RolledBack", message=report.state_message(), data=report)
    return Completed(message=report.state_message(), data=report)


def label_health_inputs(cfg: Config) -> LabelHealthInputs:
    """What the label-health tasks take from the config (the retrain flow's too)."""
    return LabelHealthInputs(
        data=cfg.data_spec(),
        health=cfg.health,
        labels=cfg.labels,
        weak_labeling=cfg.weak_labeling,
        metrics=cfg.metrics,
        mlflow=cfg.mlflow,
        tau=cfg.train.tau,
    )


def _failed(exc: Exception) -> State:
    return Failed(message=f"{type(exc).__name__}: {exc}", data=exc)


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("monitor", monitor))
