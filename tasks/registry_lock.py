"""One writer of a registered model at a time: retrain, monitor and rollback each hold
this lock for their whole run, across processes, machines and deployments.

With a Prefect server (PREFECT_API_URL set, as under a worker) it is a Prefect global
concurrency limit, `semilabel-registry-<model>` with one slot, created on first use and
visible in the Prefect UI (Concurrency). Its lease is renewed while the run lives and
expires when the run's process dies, so a crashed run frees it.

Without a server, each command starts its own temporary Prefect server, whose leases die
with it: a run killed while holding a slot would leave the slot taken for good. There,
the lock is a lease in the store (`tasks.store.locks`), which has the same meaning for
every run that shares the store and frees itself when its holder dies.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
                log.info("created Prefect global concurrency limit %s (1 slot)", name)
            except ObjectAlreadyExists:  # another run created it first
                pass


@contextmanager
def registry_lock(model_name: str, store_root: str, timeout_s: float) -> Iterator[str]:
    """Hold the one write slot of `model_name` for the body; yields where the lock lives.
    Raises `RegistryLockTimeout` after `timeout_s` without it."""
    start = time.monotonic()
    if prefect_server_configured():
        from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
        from prefect.concurrency.sync import concurrency

        name = lock_name(model_name)
        _ensure_limit(name)
        try:
            with concurrency(
                name, occupy=1, timeout_seconds=timeout_s, strict=True, lease_duration=LEASE_S
            ):
                _log_wait(model_name, f"prefect:{name}", start)
                yield f"prefect:{name}"
        except AcquireConcurrencySlotTimeoutError as exc:
            raise RegistryLockTimeout(_timeout_message(model_name, name, timeout_s)) from exc
        return
    where = f"registry-{lock_name(model_name)}"
    try:
        with Store(store_root).lock(where, timeout_s=timeout_s):
            _log_wait(model_name, f"store:{where}", start)
            yield f"store:{where}"
    except StoreLockTimeout as exc:
        raise RegistryLockTimeout(
            f"{_timeout_message(model_name, where, timeout_s)} ({exc})"
        ) from exc


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
