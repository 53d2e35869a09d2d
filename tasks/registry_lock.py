"""One writer of a registered model at a time: retrain, monitor and rollback each hold
this lock for their whole run, across processes, machines and deployments.

Two locks, always taken in this order:

1. With a Prefect server (PREFECT_API_URL set, as under a worker): a Prefect global
   concurrency limit, `semilabel-registry-<model>` with one slot, created on first use
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
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from tasks.registry import RegistryRef
from tasks.store import Store, StoreLockTimeout

log = logging.getLogger(__name__)

LEASE_S = 300.0  # Prefect renews the slot's lease well within this while the run lives


class RegistryLockTimeout(RuntimeError):
    """Another retrain, monitor or rollback held the registry lock for too long."""


def lock_name(model_name: str) -> str:
    return "semilabel-registry-" + re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")


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
def registry_lock(ref: RegistryRef, store_root: str, timeout_s: float) -> Iterator[str]:
    """Hold the one write slot of the registered model `ref` for the body; yields where
    the lock lives. Raises `RegistryLockTimeout` after `timeout_s` without it."""
    model_name = ref.model_name
    start = time.monotonic()
    lease = f"registry-{lock_name(model_name)}-{_digest(ref.tracking_uri)}"
    with ExitStack() as held:
        where = []
        if prefect_server_configured():
            from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
            from prefect.concurrency.sync import concurrency

            name = lock_name(model_name)
            _ensure_limit(name)
            try:
                held.enter_context(
                    concurrency(
                        name,
                        occupy=1,
                        timeout_seconds=timeout_s,
                        strict=True,
                        lease_duration=LEASE_S,
                    )
                )
            except AcquireConcurrencySlotTimeoutError as exc:
                raise RegistryLockTimeout(_timeout_message(model_name, name, timeout_s)) from exc
            where.append(f"prefect:{name}")
        left = max(1.0, timeout_s - (time.monotonic() - start))
        try:
            held.enter_context(Store(store_root).lock(lease, timeout_s=left))
        except StoreLockTimeout as exc:
            raise RegistryLockTimeout(
                f"{_timeout_message(model_name, lease, timeout_s)} ({exc})"
            ) from exc
        where.append(f"store:{lease}")
        _log_wait(model_name, " + ".join(where), start)
        yield " + ".join(where)


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
