"""Progress for long stages: a Prefect progress artifact inside a run, and a CLI bar.

Stages call `stage_progress(name, total)` and then `.update(done)` (or
`.update(done, total=n)` when the total changed on the way). Inside a Prefect
flow or task run this keeps a progress artifact current (visible in the Prefect UI);
when the CLI has installed a listener with `set_listener`, it also drives the
terminal progress bar. Updates are throttled so a hot loop costs nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from uuid import UUID

log = logging.getLogger(__name__)

Listener = Callable[[str, int, int | None], None]  # (stage, done, total)
_listener: Listener | None = None
MIN_INTERVAL_S = 0.5


def set_listener(listener: Listener | None) -> None:
    """Install (or clear, with None) the function that receives every progress update."""
    global _listener
    _listener = listener


def _in_prefect_run() -> bool:
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency
        return False
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class StageProgress:
    def __init__(self, stage: str, total: int | None):
        self.stage = stage
        self.total = total
        self._artifact: UUID | None = None
        self._last = 0.0
        if _in_prefect_run():
            from prefect.artifacts import create_progress_artifact

            try:
                self._artifact = create_progress_artifact(
                    0.0, key=_artifact_key(stage), description=f"{stage}: starting"
                )
            except Exception as exc:  # noqa: BLE001 - progress must never fail a run
                log.debug("progress artifact unavailable: %s", exc)
        self.update(0)

    def update(self, done: int, *, total: int | None = None, force: bool = False) -> None:
        """`done` of the stage's total; `total` when the stage learned its size late (a
        seeded start lengthens the student's schedule once training has begun)."""
        if total is not None:
            self.total = total
        if _listener is not None:
            _listener(self.stage, done, self.total)
        now = time.monotonic()
        if self._artifact is None or (not force and now - self._last < MIN_INTERVAL_S):
            return
        self._last = now
        pct = 100.0 * done / self.total if self.total else 0.0
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(
                self._artifact,
                min(pct, 100.0),
                description=f"{self.stage}: {done}/{self.total if self.total else '?'}",
            )
        except Exception as exc:  # noqa: BLE001
            log.debug("progress update failed: %s", exc)

    def finish(self, done: int) -> None:
        if self.total is None:
            self.total = done
        self.update(done, force=True)


def _artifact_key(stage: str) -> str:
    # Prefect artifact keys allow lowercase letters, digits and dashes only.
    return "".join(c if c.isalnum() else "-" for c in stage.lower()) + "-progress"


def stage_progress(stage: str, total: int | None) -> StageProgress:
    return StageProgress(stage, total)
