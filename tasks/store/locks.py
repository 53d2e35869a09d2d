"""Exclusive leases over a store, on local disk and on object stores alike.

A writer that must not run beside another (an ingest committing a chunk, say) takes a
lease: it writes its own small lock file into the lease's folder, then lists the folder.
If its file is the only live one, the lease is its own; otherwise it deletes its file,
waits a random moment and tries again. Two writers can never both hold the lease: each
lists only after its own file is visible, so whichever of the two listed later sees the
other's file and steps back. That needs nothing but read-after-write consistent create,
list and delete, which local filesystems and S3 (since 2020) give; not an atomic
create-if-absent, which pyarrow's S3 filesystem does not offer.

A holder refreshes its file while it holds (a heartbeat thread). A file not refreshed for
`stale_after_s`, or whose writer on this host is no longer running, is stale: the next
contender deletes it and goes on, so a writer killed with SIGKILL blocks others for a
moment (same host) or `stale_after_s` (another host), never for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType

import pyarrow.fs as pafs

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
MAX_BACKOFF_S = 1.0


class StoreLockTimeout(RuntimeError):
    """A store lease could not be taken in time; the message names who holds it."""


@dataclass(frozen=True)
class LockHolder:
    path: str
    host: str
    pid: int
    age_s: float

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (refreshed {self.age_s:.0f} s ago)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """One exclusive lease; a context manager. Not re-entrant."""

    def __init__(
        self,
        fs: pafs.FileSystem,
        folder: str,
        *,
        timeout_s: float = 600.0,
        stale_after_s: float = 120.0,
    ):
        self.fs = fs
        self.folder = folder.rstrip("/")
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._path: str | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._local = fs.type_name == "local"

    # -- the lease's files ---------------------------------------------------------------

    def _write_own(self) -> str:
        name = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:12]}{LOCK_SUFFIX}"
        path = f"{self.folder}/{name}"
        body = json.dumps({"host": self.host, "pid": self.pid, "taken_at": time.time()})
        if self._local:
            os.makedirs(self.folder, exist_ok=True)
        with self.fs.open_output_stream(path) as fh:  # one PUT on object stores
            fh.write(body.encode())
        return path

    def _touch_own(self) -> None:
        assert self._path is not None
        if self._local:
            os.utime(self._path)
        else:
            with self.fs.open_output_stream(self._path) as fh:
                fh.write(json.dumps({"host": self.host, "pid": self.pid}).encode())

    def _delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_file(path)

    def _holder(self, info: pafs.FileInfo) -> LockHolder:
        stem = info.base_name[: -len(LOCK_SUFFIX)]
        host, pid = "?", -1
        parts = stem.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit():
            host, pid = parts[0], int(parts[1])
        age = time.time() - info.mtime.timestamp() if info.mtime else 0.0
        return LockHolder(info.path, host, pid, max(age, 0.0))

    def live_holders(self) -> list[LockHolder]:
        """Every other live lock file in the folder; stale ones are deleted on the way."""
        sel = pafs.FileSelector(self.folder, allow_not_found=True)
        live = []
        for info in self.fs.get_file_info(sel):
            if info.type != pafs.FileType.File or not info.base_name.endswith(LOCK_SUFFIX):
                continue
            if info.path == self._path:
                continue
            holder = self._holder(info)
            dead_here = holder.host == self.host and holder.pid != self.pid
            if (dead_here and not _pid_alive(holder.pid)) or holder.age_s > self.stale_after_s:
                log.warning(
                    "removing a stale store lock %s left by %s", info.path, holder.describe()
                )
                self._delete(info.path)
                continue
            live.append(holder)
        return live

    # -- taking and giving back ------------------------------------------------------------

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            holders = self.live_holders()
            if not holders:
                self._path = self._write_own()
                holders = self.live_holders()
                if not holders:
                    self._start_heartbeat()
                    return
                self._delete(self._path)  # someone else wrote at the same time: step back
                self._path = None
            if time.monotonic() >= deadline:
                who = "; ".join(h.describe() for h in holders)
                raise StoreLockTimeout(
                    f"could not take the store lock {self.folder!r} within {self.timeout_s:.0f} s: "
                    f"held by {who}. If that process is gone, its lock expires "
                    f"{self.stale_after_s:.0f} s after its last refresh (or delete "
                    f"{holders[0].path!r})."
                )
            time.sleep(random.uniform(0.0, min(MAX_BACKOFF_S, 0.02 * 2**attempt)))
            attempt += 1

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self._path is not None:
            self._delete(self._path)
            self._path = None

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        every = self.stale_after_s / 4

        def beat() -> None:
            while not self._stop.wait(every):
                try:
                    self._touch_own()
                except OSError as exc:  # the next beat may work; staleness is far off
                    log.warning("could not refresh store lock %s: %s", self._path, exc)

        self._heartbeat = threading.Thread(target=beat, name="store-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
