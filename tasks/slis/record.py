"""Where a run's SLIs are kept: the store's `slis` history and its flow's latest
(`latest`, what a scrape serves), MLflow metrics under `sli/`, and a Prometheus
Pushgateway when `metrics.pushgateway_url` is set."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa

from tasks.slis.compute import RunFacts, compute_slis
from tasks.slis.health import LabelHealth, run_rows
from tasks.slis.inputs import LabelHealthInputs
from tasks.slis.latest import write_latest
from tasks.slis.prometheus import push_slis
from tasks.store import SCHEMAS, SLIS, Store, utcnow
from tasks.tracking import ensure_experiment


def label_health(
    store: Store, inputs: LabelHealthInputs, facts: RunFacts, run_id: str
) -> LabelHealth:
    """The run's SLIs, recorded in the store and pushed (when a Pushgateway is set)."""
    health = LabelHealth(facts.flow, run_id, compute_slis(store, inputs, facts))
    record_slis(store, health)
    if inputs.metrics.pushgateway_url:
        error = push_slis(inputs.metrics.pushgateway_url, inputs.metrics.job, health)
        health = dataclasses.replace(health, push_error=error)
    return health


def record_slis(store: Store, health: LabelHealth) -> None:
    """Append the run's SLIs to the store's `slis` dataset, and make them its flow's
    latest (what `/metrics` serves)."""
    now = utcnow()
    rows = [
        {
            "run_id": health.run_id,
            "flow": health.flow,
            "computed_at": now,
            "metric": s.metric,
            "labels": json.dumps(dict(s.labels), sort_keys=True),
            "value": float(s.value),
            "threshold": s.threshold,
            "breached": s.breached,
        }
        for s in [*health.slis, *run_rows(health)]
    ]
    table = pa.Table.from_pylist(rows, schema=SCHEMAS[SLIS])
    store.write(SLIS, table, when=now)
    write_latest(store, health.flow, table)


def mlflow_metrics(health: LabelHealth) -> dict[str, float]:
    """`sli/<metric>[/<label values>]` -> value, for each SLI with a value (not NaN), in
    the characters MLflow accepts in a metric name."""
    metrics = {
        "sli/" + s.metric + "".join(f"/{v}" for _, v in s.labels): float(s.value)
        for s in health.slis
        if s.value == s.value
    }
    return {k.replace(":", "_").replace("@", "_"): v for k, v in metrics.items()}


def log_slis_to_mlflow(
    health: LabelHealth,
    tracking_uri: str,
    experiment: str,
    run_id: str | None,
    artifact_root: str | None = None,
) -> None:
    """`mlflow_metrics` on `run_id` (a new run of `experiment` when None)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    metrics = mlflow_metrics(health)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metrics)
    else:
        ensure_experiment(tracking_uri, experiment, artifact_root)
        with mlflow.start_run(
            run_name=f"{health.flow}-label-health", tags={"semilabel.stage": health.flow}
        ):
            mlflow.log_metrics(metrics)
