"""The label-health tasks in real flow runs: the report keeps the SLIs (store, MLflow)
and publishes them as artifacts; the drift task and a monitor's measure."""

import json

import mlflow
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.runtime import flow_run

from flows.monitor import label_health_inputs
from tasks.slis.compute import RunFacts
from tasks.slis.run import drift_task, monitor_facts, report_label_health
from tasks.store import SLIS, Store


def _artifacts(run_id: str) -> dict:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["label-health", "label-health-slis"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    return {a.key: a for a in found}


def test_the_report_keeps_and_publishes_the_slis(prefect_api, store_cfg):
    cfg = store_cfg.model_copy(
        update={"health": store_cfg.health.model_copy(update={"max_label_age_h": 1e-6})}
    )
    inputs = label_health_inputs(cfg)

    @flow(name="label-health-test")
    def report():
        return report_label_health(inputs, RunFacts(flow="monitor"), "m-1"), str(flow_run.id)

    health, run_id = report()
    assert health.breaches and {s.metric for s in health.breaches} >= {"label_age_median_seconds"}
    store = Store(cfg.store.root)
    assert {r["run_id"] for r in store.read(SLIS).to_pylist()} == {"m-1"}
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "monitor-label-health"
    assert run.data.metrics["sli/label_coverage_ratio"] > 0
    published = _artifacts(run_id)
    assert json.loads(published["label-health-slis"].data) == health.rows()
    assert published["label-health"].data == health.markdown()
    assert published["label-health"].description == f"{len(health.breaches)} breach(es)"


def test_the_drift_task_and_the_monitor_measure_in_a_flow(prefect_api, store_cfg):
    inputs = label_health_inputs(store_cfg)

    @flow(name="drift-test")
    def measure():
        return drift_task(inputs, None), monitor_facts(inputs, "m-2")

    (checks, newest), facts = measure()
    assert [c.name for c in checks] == ["labeled_vs_unlabeled"]  # one ingest: no batch check
    assert newest == [] and all(c.mmd2 is None for c in checks)
    assert facts.flow == "monitor" and [c.name for c in facts.drift] == [c.name for c in checks]
