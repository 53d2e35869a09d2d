"""A flow run killed by stopping its worker becomes Crashed, and its retry resumes it.

Prefect 3.9's process worker, stopped with Ctrl-C, kills the flow runs it started
without reporting a state; the heartbeat automation that `prefect deploy` makes
(tasks/crashed_runs.py) marks them Crashed.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.crashed_runs import (
    AUTOMATION_NAME,
    TAG,
    HeartbeatSettingError,
    crash_after_s,
    crash_automation,
    ensure_crash_automation,
)
from tests.conftest import tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
STEP = "tasks.crashed_runs.ensure_crash_automation"


def test_every_deployment_sends_the_heartbeats_the_crash_automation_expects():
    (step,) = [s[STEP] for s in SPEC["build"] if STEP in s]
    heartbeat_s = step["heartbeat_s"]
    for d in SPEC["deployments"]:
        assert TAG in d["tags"], d["name"]
        env = d["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == heartbeat_s, d["name"]


@pytest.mark.parametrize("heartbeat_s", [10, 29, "soon", True])
def test_a_heartbeat_prefect_cannot_send_is_refused_and_named(heartbeat_s):
    with pytest.raises(HeartbeatSettingError, match="PREFECT_FLOWS_HEARTBEAT_FREQUENCY"):
        ensure_crash_automation(heartbeat_s)


def test_the_crash_automation_is_made_once_and_follows_the_settings(prefect_api):
    from prefect.client.orchestration import get_client

    first = ensure_crash_automation("30")
    assert first["action"] in {"created", "unchanged", "updated"}
    assert ensure_crash_automation("30") == {**first, "action": "unchanged"}
    assert ensure_crash_automation(60) == {**first, "action": "updated"}
    with get_client(sync_client=True) as client:
        (found,) = client.read_automations_by_name(AUTOMATION_NAME)
        assert found.trigger.within.total_seconds() == crash_after_s(60)
        client.pause_automation(found.id)
    assert ensure_crash_automation(30)["action"] == "updated"
    with get_client(sync_client=True) as client:
        (found,) = client.read_automations_by_name(AUTOMATION_NAME)
        client.resume_automation(found.id)  # a paused one stays paused until resumed
    assert not found.enabled
    assert found.trigger == crash_automation(30).trigger


def _cli_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if k != "SEMILABEL_HOME"}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _start_worker(cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "semilabel"],
        cwd=cwd,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.kill()
        worker.wait(timeout=30)


def _wait_for(what, deadline_s: float, step_s: float = 1.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(step_s)
    return what()


@pytest.mark.slow
def test_a_run_killed_by_stopping_its_worker_is_crashed_and_its_retry_resumes_it(
    prefect_api, store_cfg, tmp_path: Path
):
    """As an operator does it: deploy, start a worker, start a training run, stop the
    worker with Ctrl-C (SIGINT) mid-training. The run ends Crashed within 3 heartbeats,
    not Running for ever; `prefect flow-run retry` is accepted and the next worker
    resumes training from the run's checkpoint and completes it. (The train deployment:
    a retrain would first wait for the registry lock the killed run held, whose lease
    the test server, having no repossessor service, never expires.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        LogFilter,
        LogFilterFlowRunId,
        LogFilterTextSearch,
    )
    from prefect.deployments import run_deployment

    from models.checkpoint import CHECKPOINT

    env = _cli_env()
    _prefect("work-pool", "create", "semilabel", "--type", "process", env=env)
    deployed = _prefect("deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(AUTOMATION_NAME)
    heartbeat_s = int(automation.trigger.within.total_seconds()) // crash_after_s(1)
    assert automation.enabled and heartbeat_s == 30

    overrides = {  # store_cfg's store (ingested), with a run long enough to stop midway
        **tiny_run_overrides(tmp_path, tmp_path / "images", store_cfg.mlflow.tracking_uri),
        "train.student_steps": 400,
        "train.checkpoint_every": 10,
        "train.eval_every": 400,
    }
    run = run_deployment("train/train-manual", parameters={"overrides": overrides}, timeout=0)
    worker_log = tmp_path / "worker.log"
    worker = _start_worker(tmp_path, env, worker_log)
    try:
        checkpoint = _wait_for(
            lambda: next((tmp_path / "runs").glob(f"train-*-{run.id}/{CHECKPOINT}"), None), 300
        )
        assert checkpoint, worker_log.read_text()[-3000:]
        signalled = time.monotonic()
        worker.send_signal(signal.SIGINT)  # what Ctrl-C sends
        worker.wait(timeout=180)  # 60 s was once too short beside a busy suite
        stopped_s = time.monotonic() - signalled
    finally:
        _stop(worker)

    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_running()  # killed, not reported
        state = _wait_for(
            lambda: (s := client.read_flow_run(run.id).state).is_final() and s,
            crash_after_s(heartbeat_s) + 60,
        )
    crashed_s = time.monotonic() - signalled
    assert state and state.is_crashed(), (state, worker_log.read_text()[-3000:])
    assert f"No heartbeat from this flow run for {crash_after_s(heartbeat_s)} s" in state.message
    # The last heartbeat came at most one interval before the signal.
    assert crashed_s <= crash_after_s(heartbeat_s) + 30, crashed_s

    retried = _prefect("flow-run", "retry", str(run.id), env=env)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    worker = _start_worker(tmp_path, env, worker_log)
    try:
        with get_client(sync_client=True) as client:
            final = _wait_for(
                lambda: (s := client.read_flow_run(run.id).state).is_final() and s, 300, 2
            )
            resumed = client.read_logs(
                LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[run.id]),
                    text=LogFilterTextSearch(query='"resumed training from"'),
                )
            )
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=60)
        _stop(worker)
    assert final and final.is_completed(), (final, worker_log.read_text()[-3000:])
    resumed = [log.message for log in resumed]
    assert len(resumed) == 1 and " at step 0 " not in resumed[0], resumed
    print(
        f"\nworker stopped {stopped_s:.1f} s after SIGINT; run Crashed {crashed_s:.1f} s "
        f"after SIGINT; retry: {resumed[0]}"
    )
