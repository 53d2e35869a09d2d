"""No credential reaches what people read: a retrain and a monitor run whose store is on
S3 (a local moto server) with its keys in the URI, whose MLflow tracking server is
reached with a password in its URI, and whose Pushgateway URL carries a password and a
token; then every experiment, run (params, tags, dataset sources, every artifact's
bytes), registered model and version (description, tags) and every Prefect artifact of
the two flow runs is searched for the secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import mlflow
import pytest
from moto.server import ThreadedMotoServer

from flows.monitor import monitor
from flows.retrain import retrain
from tests.conftest import digit_folder, free_port, start_mlflow_server, tiny_run_overrides

pytestmark = pytest.mark.slow

BUCKET = "semilabel-secret-store"
STORE_SECRET, TRACKING_SECRET = "STORE-SECRET-1", "TRACKING-SECRET-2"
PUSH_SECRET, PUSH_TOKEN = "PUSH-SECRET-3", "PUSH-TOKEN-4"
SECRETS = (STORE_SECRET, TRACKING_SECRET, PUSH_SECRET, PUSH_TOKEN)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server with the store's bucket; host:port. Its keys are any keys: the
    store passes them in its URI only."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="admin",
            aws_secret_access_key="admin",
        ).create_bucket(Bucket=BUCKET)
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> Iterator[str]:
    """`mlflow server` on SQLite; its URL without credentials (it ignores basic auth, as
    one behind an authenticating proxy sees it)."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _mlflow_texts(uri: str, dst: Path) -> tuple[list[str], dict[str, bytes]]:
    """Everything MLflow shows about every experiment: texts, and artifacts by path."""
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    texts: list[str] = []
    files: dict[str, bytes] = {}
    for exp in client.search_experiments():
        texts += [exp.name, exp.artifact_location or "", json.dumps(exp.tags)]
        for run in client.search_runs([exp.experiment_id]):
            texts += [run.info.run_name or "", run.info.artifact_uri or ""]
            texts += [json.dumps(run.data.params), json.dumps(run.data.tags)]
            texts += list(run.data.metrics)
            for d in run.inputs.dataset_inputs:
                texts += [d.dataset.name, d.dataset.source, d.dataset.digest]
                texts.append(d.dataset.schema or "")
            local = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, tracking_uri=uri, dst_path=str(dst / run.info.run_id)
                )
            )
            for f in local.rglob("*"):
                if f.is_file():
                    files[f"{run.info.run_id}/{f.relative_to(local)}"] = f.read_bytes()
    for rm in client.search_registered_models():
        texts += [rm.description or "", json.dumps(rm.tags), json.dumps(rm.aliases)]
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            texts += [mv.description or "", json.dumps(mv.tags), mv.source or "", mv.run_link or ""]
    return texts, files


def _prefect_artifacts(flow_run_ids: list[str]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
    keys = {a.key for a in artifacts}
    assert {"ingest-summary", "gate-report", "retrain-decision", "label-health"} <= keys, keys
    return [f"{a.key} {a.description} {json.dumps(a.data)}" for a in artifacts]


def test_no_credential_reaches_mlflow_or_prefect_artifacts(
    prefect_api, s3_endpoint, tracking_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # the keys come from the URI only
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    tracking_uri = tracking_server.replace("://", f"://mlflow-user:{TRACKING_SECRET}@")
    store = (
        f"s3://semilabel-key:{STORE_SECRET}@{BUCKET}/store"
        f"?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    )
    closed = free_port()  # nothing listens: the push fails, as an outage does
    ov = {
        **tiny_run_overrides(tmp_path, digit_folder(tmp_path / "images"), tracking_uri),
        "store.root": store,
        "mlflow.model_name": "secret-test",
        "gate.min_gold_labels": 20,
        "gate.floors.accuracy": 1.0,  # not passed: the reports repeat the run's options
        "monitor.min_gold_labels": 20,
        "metrics.pushgateway_url": f"http://pusher:{PUSH_SECRET}@127.0.0.1:{closed}"
        f"/?token={PUSH_TOKEN}",
    }
    trained = retrain(overrides=ov, return_state=True)
    assert trained.is_completed(), trained.message
    watched = monitor(overrides=ov, return_state=True)
    assert watched.is_completed(), watched.message
    decision = trained.result()
    assert not decision.promoted and "--set 'store.root=s3://semilabel-key:***@" in (
        decision.next_step
    )
    assert decision.run_url.startswith(f"{tracking_server}/#/")  # a link: no user info

    texts, files = _mlflow_texts(tracking_server, tmp_path / "downloaded")
    ids = [str(s.state_details.flow_run_id) for s in (trained, watched)]
    texts += _prefect_artifacts(ids)
    configs = [v for k, v in files.items() if k.endswith("/config.json")]
    assert configs, sorted(files)  # the config was logged, and searched
    logged = json.loads(configs[0])
    # what the config said, less the secrets
    assert logged["store"]["root"] == store.replace(STORE_SECRET, "***")
    assert logged["mlflow"]["tracking_uri"] == tracking_uri.replace(TRACKING_SECRET, "***")
    assert PUSH_SECRET not in logged["metrics"]["pushgateway_url"]
    for secret in SECRETS:
        in_texts = [t for t in texts if secret in t]
        in_files = [p for p, data in files.items() if secret.encode() in data]
        assert not in_texts and not in_files, (secret, in_texts[:3], in_files)
