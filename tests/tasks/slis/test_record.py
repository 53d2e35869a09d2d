"""Where a run's SLIs are kept: the store's history and latest rows, MLflow metrics,
and a Pushgateway; `label_health` computes them on a real store and keeps them."""

import json

import mlflow

from flows.monitor import label_health_inputs
from tasks.slis.compute import RunFacts, Sli
from tasks.slis.health import LabelHealth, run_rows
from tasks.slis.latest import read_latest
from tasks.slis.record import label_health, log_slis_to_mlflow, mlflow_metrics, record_slis
from tasks.store import SLIS, Store

HEALTH = LabelHealth(
    "monitor",
    "run-1",
    [
        Sli("label_coverage_ratio", 0.5),
        Sli("label_age_median_seconds", 100.0, (), 50.0, True),
        Sli("label_accuracy_gold_ratio", 0.9, (("source_kind", "rule"), ("source", "lf:a@b"))),
        Sli("pseudo_label_coverage_ratio", float("nan")),
    ],
)


def test_the_slis_and_the_run_rows_go_to_the_history_and_the_flows_latest(tmp_path):
    store = Store(str(tmp_path / "store"))
    record_slis(store, HEALTH)
    history = store.read(SLIS).to_pylist()
    want = [*HEALTH.slis, *run_rows(HEALTH)]
    assert [(r["metric"], json.loads(r["labels"])) for r in history] == [
        (s.metric, dict(s.labels)) for s in want
    ]
    assert {(r["run_id"], r["flow"]) for r in history} == {("run-1", "monitor")}
    assert len({r["computed_at"] for r in history}) == 1  # one computation, one time
    age = history[1]
    assert (age["value"], age["threshold"], age["breached"]) == (100.0, 50.0, True)
    latest = read_latest(store).to_pylist()
    assert [(r["metric"], r["labels"], r["computed_at"]) for r in latest] == [
        (r["metric"], r["labels"], r["computed_at"]) for r in history
    ]


def test_mlflow_metric_names_carry_the_label_values_in_characters_mlflow_takes():
    assert mlflow_metrics(HEALTH) == {
        "sli/label_coverage_ratio": 0.5,
        "sli/label_age_median_seconds": 100.0,
        "sli/label_accuracy_gold_ratio/rule/lf_a_b": 0.9,
    }  # NaN left out


def test_the_slis_go_on_the_given_mlflow_run_or_a_new_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_slis_to_mlflow(HEALTH, uri, "health-test", None, str(tmp_path / "artifacts"))
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("health-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "monitor-label-health"
    assert run.data.tags["semilabel.stage"] == "monitor"
    assert run.data.metrics == mlflow_metrics(HEALTH)

    with mlflow.start_run(experiment_id=experiment.experiment_id) as training:
        pass
    log_slis_to_mlflow(HEALTH, uri, "health-test", training.info.run_id)
    assert client.get_run(training.info.run_id).data.metrics == mlflow_metrics(HEALTH)
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_label_health_computes_records_and_pushes_the_slis_of_a_real_store(store_cfg, pushgateway):
    port, pushed = pushgateway
    url = f"http://127.0.0.1:{port}"
    cfg = store_cfg.model_copy(
        update={"metrics": store_cfg.metrics.model_copy(update={"pushgateway_url": url})}
    )
    store = Store(cfg.store.root)
    health = label_health(store, label_health_inputs(cfg), RunFacts(flow="monitor"), "m-1")
    assert health.push_error is None and (health.flow, health.run_id) == ("monitor", "m-1")
    coverage = next(s.value for s in health.slis if s.metric == "label_coverage_ratio")
    assert 0 < coverage <= 1
    ((path, body, _),) = pushed
    assert path == "/metrics/job/semilabel/flow/monitor"
    assert f"semilabel_label_coverage_ratio {coverage}" in body
    recorded = {r["metric"] for r in store.read(SLIS).to_pylist()}
    assert {s.metric for s in health.slis} | {"run_success", "sli_breach"} <= recorded
