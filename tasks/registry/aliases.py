"""The MLflow model registry: register every candidate, move the `champion` alias on a
passing gate, keep the previous champion reachable, and roll back. MLflow only: no
Prefect, no PyTorch.

Every alias move is a compare-and-set: the caller names the version it believes is the
champion (the one it evaluated or measured), and the move happens only if the alias
still points there (`ChampionMoved` otherwise, naming both versions). Writers also hold
the registry lock (`tasks.registry.lock`), so the check and the move are not raced by
another semilabel run; the check is the last line of defence against anything else
(a person moving the alias in the UI, a run of an older version).

Only a missing model or alias means "no champion": any other registry error raises
`RegistryUnavailable`, so an outage can never turn a gate into a floors-only gate.

Who was champion when lives in version tags, so the history survives alias moves:
`semilabel.gate` (passed | rejected), `semilabel.promotion`, `semilabel.promoted_at`,
`semilabel.previous_champion`, `semilabel.rolled_back`, `semilabel.rollback_reason`,
and the gate-time gold metrics `gate.<metric>` that monitoring compares against.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tasks.tracking import prepare_local_store

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
TAG_GATE = "semilabel.gate"
TAG_PROMOTION = "semilabel.promotion"
TAG_PROMOTED_AT = "semilabel.promoted_at"
TAG_PREVIOUS = "semilabel.previous_champion"
TAG_ROLLED_BACK = "semilabel.rolled_back"
TAG_ROLLBACK_REASON = "semilabel.rollback_reason"
TAG_RESTORED_AT = "semilabel.restored_at"
GATE_METRIC_PREFIX = "gate."
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why and what to do."""


class RegistryUnavailable(RegistryError):
    """The registry could not be read or written (not: the model has no champion)."""


class ChampionMoved(RegistryError):
    """The champion is no longer the version the caller compared against."""

    def __init__(self, model_name: str, expected: str | None, actual: str | None, action: str):
        self.expected, self.actual = expected, actual
        was = f"v{expected}" if expected else "no champion"
        now = f"v{actual}" if actual else "no champion"
        super().__init__(
            f"{model_name}: champion moved from {was} to {now} during this run; {action}"
        )


class RegistryLeaseLost(RegistryError):
    """The run's registry lock was taken from it (it stalled past the lease) before an
    alias write: the write is not made, since another writer may be at work."""


class Lease(Protocol):
    """The registry lock a run holds (`tasks.registry.lock`): `check` raises
    `RegistryLeaseLost` once it is no longer this run's."""

    def check(self) -> None: ...


class RollbackError(RegistryError):
    """There is nothing to roll back to."""


@dataclass(frozen=True)
class RegistryRef:
    """Where the registered model lives: the typed value registry functions take."""

    tracking_uri: str
    model_name: str

    def client(self) -> MlflowClient:
        prepare_local_store(self.tracking_uri)  # a new SQLite store is made atomically
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def version_uri(self, version: str) -> str:
        """A pinned URI: always that version, wherever the aliases move."""
        return f"models:/{self.model_name}/{version}"


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None  # the champion it replaced


@dataclass(frozen=True)
class RollbackResult:
    model_name: str
    from_version: str
    to_version: str
    reason: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _unavailable(ref: RegistryRef, what: str, exc: Exception) -> RegistryUnavailable:
    return RegistryUnavailable(
        f"MLflow registry at {ref.tracking_uri} failed while {what} for {ref.model_name!r}: "
        f"{exc}. Nothing was changed; check that the tracking server is reachable and "
        "re-run."
    )


def champion_version(ref: RegistryRef) -> str | None:
    """The version `champion` points at; None only when the model or the alias does not
    exist. Any other error raises `RegistryUnavailable`."""
    try:
        model = ref.client().get_registered_model(ref.model_name)
    except MlflowException as exc:
        if exc.error_code == NOT_FOUND:
            return None
        raise _unavailable(ref, "reading the champion", exc) from exc
    except Exception as exc:  # noqa: BLE001 - network errors surface as many types
        raise _unavailable(ref, "reading the champion", exc) from exc
    version = (model.aliases or {}).get(CHAMPION)
    return str(version) if version is not None else None


def get_version(ref: RegistryRef, version: str) -> ModelVersion:
    try:
        return ref.client().get_model_version(ref.model_name, version)
    except MlflowException as exc:
        raise _unavailable(ref, f"reading version {version}", exc) from exc


def tag_version(ref: RegistryRef, version: str, key: str, value: str) -> None:
    try:
        ref.client().set_model_version_tag(ref.model_name, version, key, value[:4000])
    except MlflowException as exc:
        raise _unavailable(ref, f"tagging version {version}", exc) from exc


def gate_baseline(mv: ModelVersion) -> dict[str, float]:
    """A version's gate-time gold metrics (`gate.<metric>` tags); empty when it has none
    (e.g. registered by hand)."""
    out = {}
    for key, value in (mv.tags or {}).items():
        if key.startswith(GATE_METRIC_PREFIX) and key != "gate.n_gold":
            with contextlib.suppress(ValueError):
                out[key[len(GATE_METRIC_PREFIX) :]] = float(value)
    return out


def versions(ref: RegistryRef) -> list[ModelVersion]:
    """All versions, oldest first."""
    try:
        found = ref.client().search_model_versions(f"name = '{ref.model_name}'")
    except MlflowException as exc:
        raise _unavailable(ref, "listing versions", exc) from exc
    return sorted(found, key=lambda v: int(v.version))


def register_candidate(
    ref: RegistryRef,
    model_uri: str,
    run_id: str,
    tags: Mapping[str, str],
    description: str = "",
) -> str:
    """A new version of the model for the candidate, tagged with everything behind it.
    Creates the registered model only when it does not exist. Returns the version."""
    import mlflow

    client = ref.client()
    try:
        client.get_registered_model(ref.model_name)
    except MlflowException as exc:
        if exc.error_code != NOT_FOUND:
            raise _unavailable(ref, "reading the registered model", exc) from exc
        try:
            client.create_registered_model(
                ref.model_name,
                description="semilabel classifier; alias `champion` is the serving model.",
            )
        except MlflowException as exc2:
            if exc2.error_code != ALREADY_EXISTS:  # created meanwhile by another run: fine
                raise _unavailable(ref, "creating the registered model", exc2) from exc2
    # mlflow.register_model resolves a logged-model URI (models:/m-...) to its source and
    # model id, which a tracking server requires; it uses the global URIs, so set them.
    mlflow.set_tracking_uri(ref.tracking_uri)
    mlflow.set_registry_uri(ref.tracking_uri)
    try:
        mv = mlflow.register_model(model_uri, ref.model_name, tags=dict(tags))
        if description:
            client.update_model_version(ref.model_name, mv.version, description=description)
    except MlflowException as exc:
        raise _unavailable(ref, "registering the candidate", exc) from exc
    log.info("registered %s version %s from run %s", ref.model_name, mv.version, run_id)
    return str(mv.version)


def _set_alias(ref: RegistryRef, alias: str, version: str | None, lease: Lease | None) -> None:
    """Point `alias` at `version` (None: remove it), right after checking that `lease`,
    the run's registry lock, is still held."""
    if lease is not None:
        lease.check()
    client = ref.client()
    if version is None:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model_alias(ref.model_name, alias)
    else:
        client.set_registered_model_alias(ref.model_name, alias, version)


def _aliases(ref: RegistryRef) -> dict[str, str]:
    try:
        model = ref.client().get_registered_model(ref.model_name)
    except MlflowException as exc:
        raise _unavailable(ref, "reading the aliases", exc) from exc
    return {k: str(v) for k, v in (model.aliases or {}).items()}


def promote(
    ref: RegistryRef,
    version: str,
    *,
    expected_champion: str | None,
    lease: Lease | None = None,
) -> Promotion:
    """Point `champion` at `version` if the champion is still `expected_champion` (the
    version the gate compared against; None: there was none). The old champion becomes
    `previous_champion`. All or nothing: if a step fails, both aliases are put back.
    Every alias write first checks `lease` (the run's registry lock): once it is lost,
    nothing more is written, not even the restoring writes (`RegistryLeaseLost`)."""
    before = _aliases(ref)
    current = before.get(CHAMPION)
    if current != expected_champion:
        raise ChampionMoved(
            ref.model_name,
            expected_champion,
            current,
            f"v{version} was compared against the old champion, so it is not promoted. "
            "Re-run retrain to gate it against the current one.",
        )
    try:
        _set_alias(ref, CHAMPION, version, lease)
        if current is not None and current != version:
            _set_alias(ref, PREVIOUS_CHAMPION, current, lease)
            ref.client().set_model_version_tag(ref.model_name, version, TAG_PREVIOUS, current)
        ref.client().set_model_version_tag(ref.model_name, version, TAG_PROMOTED_AT, _now())
        ref.client().set_model_version_tag(ref.model_name, version, TAG_PROMOTION, "promoted")
    except RegistryLeaseLost as exc:
        raise RegistryLeaseLost(
            f"v{version} of {ref.model_name!r} stays registered, not promoted: {exc}"
        ) from exc
    except Exception as exc:
        with contextlib.suppress(Exception):  # restore what we can, then report
            _set_alias(ref, CHAMPION, current, lease)
            _set_alias(ref, PREVIOUS_CHAMPION, before.get(PREVIOUS_CHAMPION), lease)
        raise _unavailable(ref, f"promoting v{version} (aliases restored)", exc) from exc
    log.info(
        "champion of %s: %s -> v%s", ref.model_name, f"v{current}" if current else "none", version
    )
    return Promotion(version, current if current != version else None)


def _restorable(ref: RegistryRef, current: str) -> list[ModelVersion]:
    """Earlier versions a rollback may restore, oldest first: they passed their gate, were
    promoted, and were not rolled back themselves."""
    return [
        v
        for v in versions(ref)
        if int(v.version) < int(current)
        and v.tags.get(TAG_GATE) == "passed"
        and TAG_PROMOTED_AT in v.tags
        and v.tags.get(TAG_ROLLED_BACK) != "true"
    ]


def rollback_target(ref: RegistryRef, current: str) -> str | None:
    """The version `rollback` would make the champion now, or None when there is none."""
    candidates = _restorable(ref, current)
    return str(candidates[-1].version) if candidates else None


def rollback(
    ref: RegistryRef,
    reason: str,
    *,
    expected_champion: str | None = None,
    lease: Lease | None = None,
) -> RollbackResult:
    """Move `champion` back to the latest earlier version that passed its gate, was
    promoted and has not itself been rolled back. With `expected_champion`, only if the
    champion is still that version (the one a monitor measured). Fails clearly when
    there is nothing to roll back to; nothing changes then. Every alias write first
    checks `lease`, as `promote` does."""
    current = _champion_to_roll_back(ref, expected_champion)
    candidates = _restorable(ref, current)
    if not candidates:
        raise RollbackError(
            f"model {ref.model_name!r}: no earlier passing version to roll back to; champion "
            f"stays at version {current}. Fix forward with a new `semilabel retrain`."
        )
    target = str(candidates[-1].version)
    earlier = [str(v.version) for v in candidates if int(v.version) < int(target)]
    before = _aliases(ref)
    if before.get(CHAMPION) != current:  # moved while we were reading the history
        raise ChampionMoved(
            ref.model_name, current, before.get(CHAMPION), "nothing was rolled back."
        )
    _move_back(ref, current, target, earlier[-1] if earlier else None, before, reason, lease)
    log.warning("rolled back %s: champion v%s -> v%s (%s)", ref.model_name, current, target, reason)
    return RollbackResult(ref.model_name, current, target, reason)


def _champion_to_roll_back(ref: RegistryRef, expected_champion: str | None) -> str:
    """The champion now, which must exist and, when given, be `expected_champion`."""
    current = champion_version(ref)
    if current is None:
        raise RollbackError(
            f"model {ref.model_name!r} has no champion: nothing to roll back. "
            "Run `semilabel retrain` to register and promote a model."
        )
    if expected_champion is not None and current != expected_champion:
        raise ChampionMoved(
            ref.model_name,
            expected_champion,
            current,
            f"v{expected_champion} was measured, so v{current} is not rolled back.",
        )
    return current


def _move_back(
    ref: RegistryRef,
    current: str,
    target: str,
    previous: str | None,
    before: dict[str, str],
    reason: str,
    lease: Lease | None,
) -> None:
    """`champion` to `target` and `previous_champion` to `previous`, `current` tagged as
    rolled back with `reason`. All or nothing: on a failure both aliases are put back as
    they were (`before`), unless the lease was lost."""
    client = ref.client()
    try:
        _set_alias(ref, CHAMPION, target, lease)
        _set_alias(ref, PREVIOUS_CHAMPION, previous, lease)
        client.set_model_version_tag(ref.model_name, current, TAG_ROLLED_BACK, "true")
        client.set_model_version_tag(ref.model_name, current, TAG_ROLLBACK_REASON, reason[:4000])
        client.set_model_version_tag(ref.model_name, target, TAG_RESTORED_AT, _now())
    except RegistryLeaseLost as exc:
        raise RegistryLeaseLost(
            f"v{current} of {ref.model_name!r} was not rolled back: {exc}"
        ) from exc
    except Exception as exc:
        with contextlib.suppress(Exception):
            _set_alias(ref, CHAMPION, current, lease)
            _set_alias(ref, PREVIOUS_CHAMPION, before.get(PREVIOUS_CHAMPION), lease)
        raise _unavailable(ref, f"rolling back v{current} (aliases restored)", exc) from exc
