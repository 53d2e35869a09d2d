"""One writer per registered model: the Prefect global concurrency limit under a server,
the store lease without one."""

import threading
import time

import pytest

import tasks.registry.lock as registry_lock_module
from tasks.registry.aliases import RegistryRef
from tasks.registry.lock import RegistryLockTimeout, lock_name, registry_lock

REF = RegistryRef("sqlite:///unused.db", "model-x")


def _contend(store_root: str, hold_s: float, timeout_s: float) -> tuple[list, list]:
    """Thread A holds the lock for `hold_s`; thread B then asks with `timeout_s`.
    Returns (events in order, errors)."""
    events: list[tuple[str, float]] = []
    errors: list[Exception] = []
    held = threading.Event()

    def a() -> None:
        with registry_lock(REF, store_root, 60):
            events.append(("a-in", time.monotonic()))
            held.set()
            time.sleep(hold_s)
            events.append(("a-out", time.monotonic()))

    def b() -> None:
        held.wait(30)
        try:
            with registry_lock(REF, store_root, timeout_s):
                events.append(("b-in", time.monotonic()))
        except RegistryLockTimeout as exc:
            errors.append(exc)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return events, errors


@pytest.mark.parametrize("backend", ["store", "prefect"])
def test_a_second_writer_waits_for_the_first(backend, tmp_path, monkeypatch, request):
    if backend == "prefect":
        request.getfixturevalue("prefect_api")
        assert registry_lock_module.prefect_server_configured()
    else:
        monkeypatch.setattr(registry_lock_module, "prefect_server_configured", lambda: False)
    events, errors = _contend(str(tmp_path / "store"), hold_s=1.5, timeout_s=60)
    assert not errors
    assert [e for e, _ in events] == ["a-in", "a-out", "b-in"]
    if backend == "prefect":
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:  # made on first use, one slot
            limit = client.read_global_concurrency_limit_by_name(lock_name(REF))
        assert limit.limit == 1 and limit.active_slots == 0


@pytest.mark.parametrize("backend", ["store", "prefect"])
def test_a_writer_that_waits_too_long_gives_up_and_says_why(
    backend, tmp_path, monkeypatch, request
):
    if backend == "prefect":
        request.getfixturevalue("prefect_api")
    else:
        monkeypatch.setattr(registry_lock_module, "prefect_server_configured", lambda: False)
    events, errors = _contend(str(tmp_path / "store"), hold_s=3.0, timeout_s=0.5)
    assert [e for e, _ in events] == ["a-in", "a-out"]
    (err,) = errors
    assert "another retrain, monitor or rollback of 'model-x'" in str(err)
    assert "mlflow.registry_lock_timeout_s" in str(err)


def test_a_run_without_a_server_and_one_under_a_worker_exclude_each_other(prefect_api, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    store_root = str(tmp_path / "store")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tasks.registry.aliases import RegistryRef;"
        "from tasks.registry.lock import registry_lock;"
        "ref = RegistryRef('sqlite:///unused.db', 'model-x');"
        'exec(\'try:\\n with registry_lock(ref, sys.argv[2], 1.0): print("GOT")\\n'
        "except Exception as e: print(type(e).__name__, e)')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a plain CLI run
    with registry_lock(REF, store_root, 60):  # as a retrain under a worker holds it
        done = subprocess.run(
            [sys.executable, "-c", code, str(Path(__file__).resolve().parents[3]), store_root],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.stdout.startswith("RegistryLockTimeout"), done.stdout + done.stderr
    assert "held by process" in done.stdout


def test_a_limit_someone_switched_off_is_put_back(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    name = lock_name(REF)
    with registry_lock(REF, str(tmp_path / "store"), 60):
        pass  # made on first use
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(active=False, limit=5)
        )
    with registry_lock(REF, str(tmp_path / "store"), 60):
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
        assert limit.active and limit.limit == 1 and limit.active_slots == 1


def test_models_of_one_name_in_two_registries_do_not_wait_for_each_other(prefect_api, tmp_path):
    here = RegistryRef("sqlite:///one.db", "model-x")
    there = RegistryRef("postgresql://db.example/mlflow", "model-x")
    assert lock_name(here) != lock_name(there)
    store = str(tmp_path / "store")
    with registry_lock(here, store, 60), registry_lock(there, store, 2.0) as lease:
        assert lock_name(there) in lease.where  # taken at once, not after 2 s


def test_a_run_that_waits_says_who_holds_the_lock_and_since_when(tmp_path, monkeypatch, caplog):
    import logging
    import os

    monkeypatch.setattr(registry_lock_module, "prefect_server_configured", lambda: False)
    caplog.set_level(logging.INFO, logger="tasks.registry.lock")
    events, errors = _contend(str(tmp_path / "store"), hold_s=4.0, timeout_s=60)
    assert not errors and [e for e, _ in events] == ["a-in", "a-out", "b-in"]
    (waiting,) = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert waiting.startswith("waiting for the registry lock of 'model-x' (store lease registry-")
    assert f"held by a semilabel command outside Prefect (process {os.getpid()} on " in waiting
    assert " since 20" in waiting and " UTC" in waiting
    assert "mlflow.registry_lock_timeout_s" in waiting


def test_the_wait_is_in_the_waiting_runs_prefect_logs(prefect_api, tmp_path):
    """What an operator sees in the UI for a run that is Running with no task runs."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    import flows  # noqa: F401  (as every entry point does: our loggers reach run logs)

    store = str(tmp_path / "store")
    held = threading.Event()
    release = threading.Event()

    @flow(name="holder")
    def holder() -> None:
        with registry_lock(REF, store, 60):
            held.set()
            release.wait(60)

    @flow(name="waiter")
    def waiter() -> str:
        from prefect.runtime import flow_run

        threading.Timer(2.0, release.set).start()  # the holder lets go meanwhile
        with registry_lock(REF, store, 60):
            return str(flow_run.id)

    first = threading.Thread(target=lambda: holder(return_state=True))
    first.start()
    assert held.wait(60)
    run_id = waiter()
    first.join(60)
    said: list[str] = []
    deadline = time.monotonic() + 30  # run logs are sent in batches
    while not said and time.monotonic() < deadline:
        time.sleep(0.5)
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        said = [log.message for log in logs if "waiting for the registry lock" in log.message]
    assert len(said) == 1, [log.message for log in logs]
    assert "held by holder flow run '" in said[0] and " since 20" in said[0]


def test_no_alias_is_written_once_the_lease_was_lost(tmp_path, monkeypatch):
    from tasks.registry.aliases import (
        TAG_GATE,
        RegistryLeaseLost,
        champion_version,
        promote,
        rollback,
        versions,
    )
    from tests.tasks.registry.test_aliases import register

    monkeypatch.setattr(registry_lock_module, "prefect_server_configured", lambda: False)
    ref = RegistryRef(f"sqlite:///{tmp_path / 'mlflow.db'}", "lease-test")
    store = tmp_path / "store"
    v1 = register(ref, {TAG_GATE: "passed"})
    with registry_lock(ref, str(store), 60) as lease:
        promote(ref, v1, expected_champion=None, lease=lease)  # held: written
        v2 = register(ref, {TAG_GATE: "passed"})
        promote(ref, v2, expected_champion=v1, lease=lease)
        v3 = register(ref, {TAG_GATE: "passed"})
        # the run stalls past its lease; another writer clears the lease as stale
        (lock_file,) = store.rglob("*.lock")
        lock_file.unlink()
        with pytest.raises(RegistryLeaseLost, match=f"v{v3} of 'lease-test' stays registered"):
            promote(ref, v3, expected_champion=v2, lease=lease)
        with pytest.raises(RegistryLeaseLost, match=f"v{v2} of 'lease-test' was not rolled"):
            rollback(ref, "monitor: accuracy dropped", lease=lease)
    assert champion_version(ref) == v2  # neither write was made
    assert [str(v.version) for v in versions(ref)][-1] == v3  # v3 stays registered
