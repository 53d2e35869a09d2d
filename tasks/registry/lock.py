"""One writer of a registered model at a time: retrain, monitor and rollback each hold
this lock for their whole run, across processes, machines and deployments.

Two locks, always taken in this order:

1. With a Prefect server (PREFECT_API_URL set, as under a worker): a Prefect global
   concurrency limit, `semilabel-registry-<model>-<registry>` with one slot (the
   registry part is a digest of the tracking URI, so models of the same name in two
   registries do not wait for each other), created on first use
   (and put back to one active slot if someone changed it) and visible in the Prefect
   UI (Concurrency). Its lease is renewed while the run lives and expires when the
   run's process dies. It orders every run that talks to that server, whatever store
   they use.
2. Always: a lease in the store (`tasks.store.locks`) named after the registry and the
   model, which a run of a `semilabel` command without a server takes too, so a manual
   rollback at a terminal and a retrain under a worker exclude each other. (Without a
   server there is no limit 1: each command starts its own temporary Prefect server,
   whose leases die with it, so a run killed while holding a slot would keep it taken
   for good.)

The store lease's file says who holds it (flow, run name and id, since when): a run
that has to wait logs that, once, to its Prefect run logs, before it waits. Before
every alias write the registry checks that the lease is still this run's
(`RegistryLease.check`, `tasks.registry.promote`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from tasks.registry.aliases import RegistryLeaseLost, RegistryRef
from tasks.store import Store, StoreLock, StoreLockLost, StoreLockTimeout

log = logging.getLogger(__name__)

LEASE_S = 300.0  # Prefect renews the slot's lease well within this while the run lives
FIRST_TRY_S = 1.0  # a lock not taken within this is worth saying who holds it


class RegistryLockTimeout(RuntimeError):
    """Another retrain, monitor or rollback held the registry lock for too long."""


def lock_name(ref: RegistryRef) -> str:
    """The Prefect concurrency limit's name: the model and a digest of its registry."""
    model = re.sub(r"[^a-z0-9-]+", "-", ref.model_name.lower()).strip("-")
    return f"semilabel-registry-{model}-{_digest(ref.tracking_uri)}"


@dataclass(frozen=True)
class RegistryLease:
    """The registry lock a run holds: where it lives, and a check that it still does."""

    where: str
    store_lock: StoreLock

    def check(self) -> None:
        """Raise `RegistryLeaseLost` if another writer cleared this run's store lease
        (the run stalled for longer than the lease lasts)."""
        try:
            self.store_lock.check()
        except StoreLockLost as exc:
            raise RegistryLeaseLost(
                f"this run lost the registry lock {self.where} ({exc}) Re-run it to "
                "gate against the current champion."
            ) from exc


def holder_note() -> dict[str, str]:
    """Who takes the lock, in words: the Prefect flow run (flow, name, id) when there is
    one, else this process; and since when (UTC)."""
    from prefect.runtime import flow_run

    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    run_id = flow_run.id
    if run_id:
        who = f"{flow_run.flow_name} flow run {flow_run.name!r} ({run_id})"
    else:
        host = socket.gethostname()
        who = f"a semilabel command outside Prefect (process {os.getpid()} on {host})"
    return {"who": who, "since": since}


def describe_holders(notes: list[dict]) -> str:
    """The holders' notes as a phrase: "retrain flow run 'x' (id) since ..."."""
    parts = []
    for note in notes:
        who = note.get("who") or f"process {note.get('pid')} on {note.get('host')}"
        since = note.get("since")
        parts.append(f"{who} since {since}" if since else who)
    return "; ".join(parts)


def prefect_server_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _ensure_limit(name: str) -> None:
    """The limit exists, is active and has one slot (an inactive limit is skipped by the
    server, which would silently lift the lock)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
                log.info("created Prefect global concurrency limit %s (1 slot)", name)
            except ObjectAlreadyExists:  # another run created it first
                pass
            return
        if not limit.active or limit.limit != 1:
            log.warning(
                "Prefect concurrency limit %s was %s with %d slot(s); setting it back to "
                "one active slot: it keeps two runs from writing the registry at once",
                name,
                "active" if limit.active else "inactive",
                limit.limit,
            )
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(active=True, limit=1)
            )


@contextmanager
def registry_lock(ref: RegistryRef, store_root: str, timeout_s: float) -> Iterator[RegistryLease]:
    """Hold the one write slot of the registered model `ref` for the body; yields the
    lease, which alias writes check. Raises `RegistryLockTimeout` after `timeout_s`
    without it. A run that does not get it within FIRST_TRY_S says, once, who holds it
    and since when, then waits."""
    deadline = time.monotonic() + timeout_s
    name = lock_name(ref)
    lease = f"registry-{name}"
    store_lock = Store(store_root).lock(lease, note=holder_note())
    wait = _Wait(ref.model_name, timeout_s, deadline, store_lock)
    with ExitStack() as held:
        where = []
        if prefect_server_configured():
            _take_prefect_slot(held, name, wait)
            where.append(f"prefect:{name}")
        _take_store_lease(held, store_lock, lease, wait)
        where.append(f"store:{lease}")
        _log_wait(ref.model_name, " + ".join(where), deadline - timeout_s)
        yield RegistryLease(" + ".join(where), store_lock)


@dataclass
class _Wait:
    """A run waiting for the registry lock: until when, and whether it has said, once,
    who holds the lock."""

    model_name: str
    timeout_s: float
    deadline: float  # time.monotonic() when it gives up
    store_lock: StoreLock  # whose notes say who holds the lock
    said: bool = False

    def left(self) -> float:
        return max(0.5, self.deadline - time.monotonic())

    def say_waiting(self, what: str) -> None:
        if self.said:
            return
        self.said = True
        log.warning(
            "waiting for the registry lock of %r (%s), held by %s; it is released when "
            "that run ends (this run gives up after %.0f s: mlflow.registry_lock_timeout_s)",
            self.model_name,
            what,
            describe_holders(self.store_lock.holder_notes())
            or (
                "a run with no lease in this store (a run on another store, or one that "
                f"died: its Prefect slot frees itself within {LEASE_S:.0f} s; Prefect UI: "
                "Concurrency)"
            ),
            self.timeout_s,
        )


def _take_prefect_slot(held: ExitStack, name: str, wait: _Wait) -> None:
    """The one slot of the Prefect concurrency limit `name`, held until `held` closes:
    first a short try, then, having said who holds it, until the deadline."""
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
    from prefect.concurrency.sync import concurrency

    _ensure_limit(name)

    def take_slot(wait_s: float) -> None:
        held.enter_context(
            concurrency(name, occupy=1, timeout_seconds=wait_s, strict=True, lease_duration=LEASE_S)
        )

    try:
        take_slot(min(FIRST_TRY_S, wait.timeout_s))
    except AcquireConcurrencySlotTimeoutError:
        wait.say_waiting(f"Prefect concurrency limit {name}")
        try:
            take_slot(wait.left())
        except AcquireConcurrencySlotTimeoutError as exc:
            raise RegistryLockTimeout(
                _timeout_message(wait.model_name, name, wait.timeout_s)
            ) from exc


def _take_store_lease(held: ExitStack, store_lock: StoreLock, lease: str, wait: _Wait) -> None:
    """The store lease `lease`, held until `held` closes: first a short try, then,
    having said who holds it, until the deadline."""
    try:
        store_lock.timeout_s = min(FIRST_TRY_S, wait.left())
        held.enter_context(store_lock)
    except StoreLockTimeout:
        wait.say_waiting(f"store lease {lease}")
        store_lock.timeout_s = wait.left()
        try:
            held.enter_context(store_lock)
        except StoreLockTimeout as exc:
            raise RegistryLockTimeout(
                f"{_timeout_message(wait.model_name, lease, wait.timeout_s)} ({exc})"
            ) from exc


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _log_wait(model_name: str, where: str, start: float) -> None:
    waited = time.monotonic() - start
    (log.info if waited > 1 else log.debug)(
        "registry lock for %s taken (%s) after %.1f s", model_name, where, waited
    )


def _timeout_message(model_name: str, name: str, timeout_s: float) -> str:
    return (
        f"another retrain, monitor or rollback of {model_name!r} held the registry lock "
        f"{name!r} for more than {timeout_s:.0f} s (mlflow.registry_lock_timeout_s); "
        "nothing was changed. Try again later, or see who holds it in the Prefect UI "
        "(Concurrency) or the store's _locks/ folder."
    )
