"""prefect.yaml is valid for Prefect, and every deployment points at a real flow."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import Flow, load_flow_from_entrypoint

from tests.conftest import digit_folder, tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_prefect_yaml_matches_prefects_schema():
    model = PrefectYamlModel.model_validate(SPEC)
    names = {d.name: d for d in model.deployments}
    assert {"retrain-nightly", "retrain-manual", "monitor-hourly", "rollback-manual"} <= set(names)
    assert names["retrain-nightly"].schedules[0].cron == "0 3 * * *"
    assert names["monitor-hourly"].schedules
    assert not names["retrain-manual"].schedules and not names["rollback-manual"].schedules


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: d["name"])
def test_entrypoint_is_a_flow_and_parameters_fit_its_signature(deployment, monkeypatch):
    monkeypatch.chdir(REPO)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    params = deployment.get("parameters") or {}
    assert flow.validate_parameters(params) == params
    assert deployment.get("concurrency_limit") == 1


def _cli_env(**extra: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if k != "SEMILABEL_HOME"}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(extra)
    return env


def _prefect(*args: str, env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_deploy_fails_early_and_names_the_variable_when_the_checkout_is_unknown(
    prefect_api, tmp_path: Path
):
    env = _cli_env(SEMILABEL_HOME=str(tmp_path))
    _prefect("work-pool", "create", "semilabel", "--type", "process", env=env)
    done = _prefect("deploy", "--all", env=env)
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "SEMILABEL_HOME" in said and "is not a semilabel checkout" in said


@pytest.mark.slow
def test_deployments_run_from_the_checkout_and_two_retrains_never_overlap(
    prefect_api, tmp_path: Path
):
    """As a new user sets them up: a process work pool, `prefect deploy --all` from the
    checkout, a worker; then the nightly and the manual retrain started together. The
    second waits for the first (one registry lock for every deployment) and is gated
    against the champion the first promoted."""
    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    env = _cli_env()
    _prefect("work-pool", "create", "semilabel", "--type", "process", env=env)
    deployed = _prefect("deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("retrain/retrain-manual")
    (step,) = dep.pull_steps
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(
        REPO.resolve()
    )

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = {
        **tiny_run_overrides(tmp_path, digit_folder(tmp_path / "images"), uri),
        "mlflow.model_name": "deployed",
        "gate.min_gold_labels": 20,
    }
    runs = [  # both scheduled before the worker starts: its first poll takes both
        run_deployment(name, parameters={"overrides": overrides}, timeout=0)
        for name in ("retrain/retrain-nightly", "retrain/retrain-manual")
    ]
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "semilabel", "--limit", "2"],
        cwd=tmp_path,  # not the checkout: the pull step must take the runs there
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 420
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                states = [client.read_flow_run(r.id).state for r in runs]
                if all(s.is_final() for s in states):
                    break
                time.sleep(2)
        assert all(s.is_completed() for s in states), [s.message for s in states]
        # Both flow runs started at once, but their work (every task run) never overlaps.
        with get_client(sync_client=True) as client:
            spans = []
            for r in runs:
                tasks = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id]))
                )
                spans.append((min(t.start_time for t in tasks), max(t.end_time for t in tasks)))
            flows = [client.read_flow_run(r.id) for r in runs]
        first, second = sorted(spans)
        assert first[1] <= second[0], spans
        assert max(f.start_time for f in flows) < first[1]  # the second run was waiting
        # ... and its logs (the UI's, the API's) said so: for whom, since when
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with get_client(sync_client=True) as client:
            said = {
                f.name: [
                    log.message
                    for log in client.read_logs(
                        LogFilter(flow_run_id=LogFilterFlowRunId(any_=[f.id]))
                    )
                    if "waiting for the registry lock" in log.message
                ]
                for f in flows
            }
        waited = [msgs for msgs in said.values() if msgs]
        assert len(waited) == 1, said
        (holder,) = [name for name, msgs in said.items() if not msgs]
        assert f"held by retrain flow run {holder!r}" in waited[0][0], waited
    finally:
        worker.send_signal(signal.SIGINT)  # the documented way to stop a worker
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = sorted(
        client.search_model_versions("name = 'deployed'"), key=lambda v: int(v.version)
    )
    assert [str(v.version) for v in versions] == ["1", "2"]
    assert versions[0].tags["semilabel.champion_at_gate"] == "none"
    assert versions[1].tags["semilabel.champion_at_gate"] == "1"  # it waited, then compared


def test_prefect_yaml_names_the_prefect_that_is_required_and_installed():
    """`prefect-version` is the version the deployments were written for: the lowest one
    pyproject.toml accepts, and not newer than the one installed (same major)."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    named = Version(SPEC["prefect-version"])
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (prefect,) = [Requirement(d) for d in deps if Requirement(d).name == "prefect"]
    lowest = min(Version(s.version) for s in prefect.specifier if s.operator == ">=")
    installed = Version(version("prefect"))
    assert named == lowest, f"prefect.yaml names {named}, pyproject requires >= {lowest}"
    assert named <= installed and named.major == installed.major


LOAD_BY_PATH = """
import logging, sys
from prefect.flows import load_flow_from_entrypoint
from prefect.logging.handlers import APILogHandler

for entrypoint in sys.argv[1:]:
    for name in ("tasks", "models", "configs"):  # as in a fresh flow-run process
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, APILogHandler)]
    sys.modules.pop("flows", None)
    load_flow_from_entrypoint(entrypoint)  # by path, as a worker's flow-run process does
    routed = [
        name for name in ("tasks", "models", "configs")
        if any(isinstance(h, APILogHandler) for h in logging.getLogger(name).handlers)
    ]
    print(entrypoint, ",".join(routed))
"""


def test_every_deployment_sends_our_log_lines_to_its_run_logs():
    """A worker loads a deployment's flow file by path, not the `flows` package: each flow
    file still routes our loggers to the run's logs (flows/__init__.py)."""
    entrypoints = sorted({d["entrypoint"] for d in SPEC["deployments"]})
    done = subprocess.run(
        [sys.executable, "-c", LOAD_BY_PATH, *entrypoints],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert lines == {e: "tasks,models,configs" for e in entrypoints}
