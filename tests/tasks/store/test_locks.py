"""Store leases: mutual exclusion between real processes, and no lease outlives its
holder for long (SIGKILL on this host, a silent holder on another host)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tasks.store import Store, StoreLockLost, StoreLockTimeout

REPO = Path(__file__).resolve().parents[3]

WORKER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from tasks.store import Store
    store = Store({root!r})
    counter = {counter!r}
    for _ in range({rounds}):
        with store.lock("test", timeout_s=120):
            # read-modify-write with a pause: any overlap loses an increment
            n = int(open(counter).read())
            time.sleep(0.002)
            open(counter, "w").write(str(n + 1))
    """
)


def test_processes_never_hold_the_lease_together(tmp_path: Path):
    root, counter = str(tmp_path / "store"), tmp_path / "counter"
    counter.write_text("0")
    code = WORKER.format(repo=str(REPO), root=root, counter=str(counter), rounds=25)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    assert int(counter.read_text()) == 100
    assert not list((tmp_path / "store" / "_locks" / "test").iterdir())  # all released


def test_a_killed_holder_on_this_host_frees_the_lease_at_once(tmp_path: Path):
    root = str(tmp_path / "store")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                sys.path.insert(0, {str(REPO)!r})
                from tasks.store import Store
                lock = Store({root!r}).lock("test")
                lock.acquire()
                print("HELD", flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(StoreLockTimeout, match=f"process {holder.pid} on"):
            Store(root).lock("test", timeout_s=0.5).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        start = time.monotonic()
        with Store(root).lock("test", timeout_s=10):
            assert time.monotonic() - start < 2
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_silent_holder_on_another_host_expires_once_watched_for_stale_after_s(tmp_path):
    store = Store(tmp_path / "store")
    folder = Path(store.base) / "_locks" / "test"
    folder.mkdir(parents=True)
    other = folder / "build-box-7-4242-abcdef123456.lock"
    other.write_text("{}")
    old = time.time() - 3600
    os.utime(other, (old, old))  # an old mtime alone proves nothing across clocks
    lock = store.lock("test", timeout_s=0.5)
    lock.stale_after_s = 4.0
    first_seen_after = time.monotonic()
    with pytest.raises(StoreLockTimeout, match="process 4242 on build-box-7"):
        lock.acquire()
    # Watched long enough without a refresh (on our own clock, from the first look in the
    # failed attempt, however long that took on a busy machine): cleared, lease taken.
    lock.timeout_s = 30
    with lock:
        assert not other.exists()
        assert 4.0 <= time.monotonic() - first_seen_after < 15


def test_a_holder_whose_lease_was_cleared_knows_it_lost_it(tmp_path: Path):
    store = Store(tmp_path / "store")
    lock = store.lock("test")
    lock.stale_after_s = 0.4  # heartbeat every 0.1 s
    with lock:
        lock.check()  # held: fine
        (path,) = (Path(store.base) / "_locks" / "test").iterdir()
        path.unlink()  # what a contender does to a lease it judged stale
        time.sleep(0.3)
        assert lock.lost and not path.exists()  # the heartbeat did not re-create it
        with pytest.raises(StoreLockLost, match="no longer held"):
            lock.check()


def test_a_long_wait_ends_in_a_timeout_that_names_the_holder(tmp_path: Path, monkeypatch):
    # Thousands of retries (a six-hour wait for the registry lock) must not overflow the
    # backoff: the wait ends in StoreLockTimeout, on a fake clock.
    import tasks.store.locks as locks

    store = Store(tmp_path / "store")
    folder = Path(store.base) / "_locks" / "test"
    folder.mkdir(parents=True)
    (folder / "other-host-77-abcdef123456.lock").write_text("{}")
    clock = iter(range(10**7))
    monkeypatch.setattr(locks.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(locks.time, "sleep", lambda s: None)
    lock = store.lock("test", timeout_s=6 * 3600)
    lock.stale_after_s = 10**9
    with pytest.raises(StoreLockTimeout, match="process 77 on other-host"):
        lock.acquire()


def test_the_holder_refreshes_its_lease_while_it_holds(tmp_path: Path):
    store = Store(tmp_path / "store")
    lock = store.lock("test")
    lock.stale_after_s = 0.4  # heartbeat every 0.1 s
    with lock:
        (path,) = (Path(store.base) / "_locks" / "test").iterdir()
        first = path.stat().st_mtime
        time.sleep(0.5)
        assert path.stat().st_mtime > first
        # a contender with the same staleness limit still sees it as live
        contender = store.lock("test", timeout_s=0.6)
        contender.stale_after_s = 0.4
        with pytest.raises(StoreLockTimeout):
            contender.acquire()
