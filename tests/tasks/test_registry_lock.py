"""One writer per registered model: the Prefect global concurrency limit under a server,
the store lease without one."""

import threading
import time

import pytest

import tasks.registry_lock as registry_lock_module
from tasks.registry import RegistryRef
from tasks.registry_lock import RegistryLockTimeout, lock_name, registry_lock

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
            limit = client.read_global_concurrency_limit_by_name(lock_name("model-x"))
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
        "from tasks.registry import RegistryRef; from tasks.registry_lock import registry_lock;"
        "ref = RegistryRef('sqlite:///unused.db', 'model-x');"
        'exec(\'try:\\n with registry_lock(ref, sys.argv[2], 1.0): print("GOT")\\n'
        "except Exception as e: print(type(e).__name__, e)')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a plain CLI run
    with registry_lock(REF, store_root, 60):  # as a retrain under a worker holds it
        done = subprocess.run(
            [sys.executable, "-c", code, str(Path(__file__).resolve().parents[2]), store_root],
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

    name = lock_name("model-x")
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
