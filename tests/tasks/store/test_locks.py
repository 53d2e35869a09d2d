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

from tasks.store import Store, StoreLockTimeout

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


def test_a_silent_holder_on_another_host_expires_after_stale_after_s(tmp_path: Path):
    store = Store(tmp_path / "store")
    folder = Path(store.base) / "_locks" / "test"
    folder.mkdir(parents=True)
    other = folder / "build-box-7-4242-abcdef123456.lock"
    other.write_text("{}")
    lock = store.lock("test", timeout_s=0.3)
    with pytest.raises(StoreLockTimeout, match="process 4242 on build-box-7"):
        lock.acquire()
    old = time.time() - 3600
    os.utime(other, (old, old))  # no heartbeat for an hour: stale
    with store.lock("test", timeout_s=5):
        assert not other.exists()


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
