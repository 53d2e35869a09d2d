"""The label-health tasks the flows run: the drift checks, what a monitor measures, and
the report (compute the SLIs, keep them, publish them as Prefect artifacts:
`label-health-slis`, and `label-health` listing each breach with its runbook line)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.slis.catalog import METRICS
from tasks.slis.compute import RunFacts
from tasks.slis.drift import DriftCheck
from tasks.slis.drift_check import check_drift
from tasks.slis.health import LabelHealth
from tasks.slis.inputs import LabelHealthInputs
from tasks.slis.measure import load_model, measure_monitor
from tasks.slis.record import label_health, log_slis_to_mlflow
from tasks.store import Store


@task(name="report-label-health", cache_policy=NO_CACHE)
def report_label_health(
    inputs: LabelHealthInputs, facts: RunFacts, run_id: str, mlflow_run_id: str | None = None
) -> LabelHealth:
    """Compute the SLIs, keep them (store, MLflow, Pushgateway) and publish them."""
    health = label_health(Store(inputs.data.root), inputs, facts, run_id)
    m = inputs.mlflow
    log_slis_to_mlflow(health, m.tracking_uri, m.experiment, mlflow_run_id, m.artifact_root)
    publish_label_health(health)
    return health


def publish_label_health(health: LabelHealth) -> None:
    """The SLIs and the breaches as the run's artifacts; each breach a warning."""
    create_table_artifact(
        table=health.rows(), key="label-health-slis", description=f"{len(health.slis)} SLIs"
    )
    create_markdown_artifact(
        health.markdown(), key="label-health", description=f"{len(health.breaches)} breach(es)"
    )
    logger = get_run_logger()
    for s in health.breaches:
        logger.warning(
            "label health: %s %s = %.4f (threshold %s): %s",
            s.metric,
            dict(s.labels),
            s.value,
            s.threshold,
            METRICS[s.metric].runbook,
        )


@task(name="check-drift", cache_policy=NO_CACHE)
def drift_task(
    inputs: LabelHealthInputs, model_uri: str | None
) -> tuple[list[DriftCheck], list[str]]:
    """The drift checks, on the embeddings of the model at `model_uri` (None: the
    intensity histograms only)."""
    model = load_model(model_uri, inputs.mlflow)
    store = Store(inputs.data.root)
    checks, newest = check_drift(store, inputs.data, inputs.health.drift, inputs.labels, model)
    for c in checks:
        (get_run_logger().warning if c.breached else get_run_logger().info)(
            "drift %s%s", c.describe(), f": {c.why}" if c.breached else ""
        )
    return checks, newest


@task(name="measure-label-health", cache_policy=NO_CACHE)
def monitor_facts(inputs: LabelHealthInputs, run_id: str) -> RunFacts:
    """What a monitor run measures for the SLIs (`measure.measure_monitor`)."""
    return measure_monitor(inputs, run_id)
