"""Exclusive leases over a store, on local disk and on object stores alike.

A writer that must not run beside another (an ingest committing a chunk, say) takes a
lease: it writes its own small lock file into the lease's folder, then lists the folder.
If its file is the only live one, the lease is its own; otherwise it deletes its file,
waits a random moment and tries again. Two writers can never both hold the lease: each
lists only after its own file is visible, so whichever of the two listed later sees the
other's file and steps back. That needs nothing but read-after-write consistent create,
list and delete, which local filesystems and S3 (since 2020) give; not an atomic
create-if-absent, which pyarrow's S3 filesystem does not offer.

A holder refreshes its file while it holds (a heartbeat thread). A file whose writer on
this host is no longer running is stale at once; a file from another host is stale when
a contender has watched it go unrefreshed for `stale_after_s` of its own clock (never
by comparing clocks across machines). The contender deletes it and goes on, so a writer
killed with SIGKILL blocks others for a moment (same host) or about `stale_after_s`
(another host), never for good. A holder whose file was deleted anyway (it stalled for
longer than that) notices at its next heartbeat and reports the lease `lost`, which
writers check before they commit.
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


class StoreLockLost(RuntimeError):
    """A holder's lease was cleared as stale by another writer while it held it."""


@dataclass(frozen=True)
class LockHolder:
    path: str
    host: str
    pid: int
    age_s: float  # how long the contender has seen it unrefreshed

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (unchanged for {self.age_s:.0f} s)"


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this host."""
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
        note: dict[str, str] | None = None,
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
        self._watched: dict[str, tuple[float | None, float]] = {}  # path -> (mtime, seen at)
        self.lost = False
        self.note = dict(note or {})  # who holds it, in words: written into the lock file
        self._taken_at = 0.0

    # -- the lease's files ---------------------------------------------------------------

    def _write_own(self) -> str:
        name = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:12]}{LOCK_SUFFIX}"
        path = f"{self.folder}/{name}"
        self._taken_at = time.time()
        body = self._body()
        if self._local:
            os.makedirs(self.folder, exist_ok=True)
        with self.fs.open_output_stream(path) as fh:  # one PUT on object stores
            fh.write(body.encode())
        return path

    def _touch_own(self) -> None:
        """Refresh our file; never re-create it: if it is gone, the lease is lost."""
        assert self._path is not None
        if self._local:
            try:
                os.utime(self._path)
            except FileNotFoundError:
                self._mark_lost()
        elif self.fs.get_file_info(self._path).type != pafs.FileType.File:
            self._mark_lost()
        else:
            with self.fs.open_output_stream(self._path) as fh:
                fh.write(self._body().encode())

    def _body(self) -> str:
        return json.dumps(
            {**self.note, "host": self.host, "pid": self.pid, "taken_at": self._taken_at}
        )

    def _mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            log.error(
                "store lock %s was cleared by another writer while this process held it "
                "(it was not refreshed for %.0f s); writes under it are refused",
                self._path,
                self.stale_after_s,
            )

    def check(self) -> None:
        """Raise `StoreLockLost` if the lease was lost; writers call it before committing.
        Looks at the lock file itself (one stat), not only at what the heartbeat saw."""
        if self._path is not None and not self.lost:
            info = self.fs.get_file_info(self._path)
            if info.type != pafs.FileType.File:
                self._mark_lost()
        if self.lost or self._path is None:
            raise StoreLockLost(
                f"the store lock {self.folder!r} is no longer held by this process; "
                "nothing was written. Re-run: the next attempt catches up with what "
                "others wrote."
            )

    def _delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_file(path)

    def _holder(self, info: pafs.FileInfo) -> LockHolder:
        stem = info.base_name[: -len(LOCK_SUFFIX)]
        host, pid = "?", -1
        parts = stem.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit():
            host, pid = parts[0], int(parts[1])
        # How long *we* have seen this file go unrefreshed, on our own clock.
        mtime = info.mtime.timestamp() if info.mtime else None
        now = time.monotonic()
        seen = self._watched.get(info.path)
        if seen is None or seen[0] != mtime:
            self._watched[info.path] = seen = (mtime, now)
        return LockHolder(info.path, host, pid, now - seen[1])

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
            if (dead_here and not pid_alive(holder.pid)) or holder.age_s > self.stale_after_s:
                log.warning(
                    "removing a stale store lock %s left by %s", info.path, holder.describe()
                )
                self._delete(info.path)
                continue
            live.append(holder)
        return live

    def holder_notes(self) -> list[dict]:
        """What the live holders wrote into their lock files (`note`, host, pid and
        `taken_at`, seconds since the epoch); a file that cannot be read is skipped."""
        notes = []
        for holder in self.live_holders():
            try:
                with self.fs.open_input_stream(holder.path) as fh:
                    notes.append(json.loads(fh.read().decode()))
            except (OSError, ValueError):
                continue
        return notes

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
                    self.lost = False
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
            time.sleep(random.uniform(0.0, min(MAX_BACKOFF_S, 0.02 * 2 ** min(attempt, 8))))
            attempt += 1

    def release(self) -> None:
        self._stop.set()
        self._watched.clear()
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
