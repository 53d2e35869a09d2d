"""Flow runs whose process died are marked *Crashed*, so they can be retried.

A Prefect 3.9 process worker stopped with Ctrl-C (SIGINT) or SIGTERM cancels the flow
runs it started, and their processes are killed (SIGKILL) without reporting any state:
the runs stay *Running* for ever, `prefect flow-run retry` refuses them and `cancel`
leaves them *Cancelling* (PrefectHQ/prefect#16746). A machine that dies, or a flow-run
process killed by the OOM killer, leaves the same. Prefect's answer is flow-run
heartbeats plus an automation (https://docs.prefect.io/v3/advanced/detect-zombie-flows):
each run sends a `prefect.flow-run.heartbeat` event every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`
seconds, and the automation marks a run *Crashed* when `MISSED_HEARTBEATS` heartbeats in
a row did not arrive and the run did not finish either.

semilabel's deployments (prefect.yaml) set the frequency and the tag `TAG`;
`prefect deploy` runs `ensure_crash_automation` as a build step, which creates the
automation, or brings it back to these settings, and only for runs with that tag: a
run sending heartbeats at Prefect's default (every 180 s) is never marked crashed by
an automation expecting one every 30 s.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL

log = logging.getLogger(__name__)

AUTOMATION_NAME = "semilabel: crash flow runs whose heartbeats stopped"
TAG = "semilabel"  # on every deployment in prefect.yaml, hence on their flow runs
HEARTBEAT_S = 30  # Prefect's minimum: a dead run is found soonest
MISSED_HEARTBEATS = 3  # as Prefect's guide: a late heartbeat or two is no crash
# The events that show a run is alive or done. A run that ends under a custom state name
# (e.g. Completed(name="RolledBack")) sends another event name; the automation then
# fires once after it and is refused: Prefect never moves a finished run to Crashed.
ALIVE_OR_DONE = (
    "prefect.flow-run.heartbeat",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
)


class HeartbeatSettingError(ValueError):
    """The heartbeat frequency asked for cannot work with Prefect."""

    def __init__(self, heartbeat_s: object):
        self.heartbeat_s = heartbeat_s
        super().__init__(
            f"heartbeat_s={heartbeat_s!r}: flow runs send a heartbeat every "
            f"{MINIMUM_HEARTBEAT_INTERVAL} s at the least (Prefect's minimum), so an "
            "automation expecting them more often would mark live runs as crashed. In "
            "prefect.yaml, set PREFECT_FLOWS_HEARTBEAT_FREQUENCY (and the "
            f"ensure_crash_automation step's heartbeat_s) to a whole number >= "
            f"{MINIMUM_HEARTBEAT_INTERVAL}."
        )


def crash_after_s(heartbeat_s: int) -> int:
    """Seconds without a heartbeat after which a run counts as crashed."""
    return MISSED_HEARTBEATS * heartbeat_s


def crash_automation(heartbeat_s: int = HEARTBEAT_S, tag: str = TAG) -> AutomationCore:
    """The automation that marks a run tagged `tag` *Crashed* when no heartbeat (and no
    final state) followed its last heartbeat within `crash_after_s(heartbeat_s)`."""
    if isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, int):
        raise HeartbeatSettingError(heartbeat_s)
    if heartbeat_s < MINIMUM_HEARTBEAT_INTERVAL:
        raise HeartbeatSettingError(heartbeat_s)
    after_s = crash_after_s(heartbeat_s)
    return AutomationCore(
        name=AUTOMATION_NAME,
        description=(
            f"Flow runs tagged {tag!r} send a heartbeat every {heartbeat_s} s; one that "
            f"sent none for {after_s} s and did not finish lost its process (its worker "
            "was stopped, its machine died). Marking it Crashed lets "
            "`prefect flow-run retry` run it again. Made by semilabel's `prefect deploy` "
            "(tasks/crashed_runs.py); a later deploy brings it back to these settings."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect=set(ALIVE_OR_DONE),
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"No heartbeat from this flow run for {after_s} s: its process is gone "
                    "(its worker was stopped or killed, or its machine died). "
                    "`prefect flow-run retry <id>` runs it again; training resumes from "
                    "its last checkpoint."
                ),
            )
        ],
    )


def _same(existing: AutomationCore, wanted: AutomationCore) -> bool:
    """Whether the automation read back from the API already has these settings.
    Compared as Python values: the trigger's `expect` and `after` are sets, and a set
    read back from the server may list its names in another order than ours (a JSON
    dump would then differ with nothing changed)."""
    fields = {"description", "trigger", "actions", "actions_on_trigger", "actions_on_resolve"}
    return existing.model_dump(include=fields) == wanted.model_dump(include=fields)


def ensure_crash_automation(heartbeat_s: int | str = HEARTBEAT_S, tag: str = TAG) -> dict:
    """Create the crash automation on the Prefect API in use, or bring the one of that
    name back to these settings; idempotent. A `prefect deploy` build step: returns
    `{"automation_id": ..., "action": "created" | "updated" | "unchanged"}`. An
    automation someone paused stays paused (with a warning)."""
    try:
        beat = int(heartbeat_s)
    except (TypeError, ValueError):
        raise HeartbeatSettingError(heartbeat_s) from None
    wanted = crash_automation(beat, tag)
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(AUTOMATION_NAME)
        if not found:
            automation_id = client.create_automation(wanted)
            log.info(
                "created the Prefect automation %r (%s): runs tagged %r are marked Crashed "
                "after %d s without a heartbeat",
                AUTOMATION_NAME,
                automation_id,
                tag,
                crash_after_s(beat),
            )
            return {"automation_id": str(automation_id), "action": "created"}
        existing, *duplicates = found
        if duplicates:
            log.warning(
                "%d more Prefect automations are named %r (%s); only %s is kept up to date",
                len(duplicates),
                AUTOMATION_NAME,
                ", ".join(str(a.id) for a in duplicates),
                existing.id,
            )
        if not existing.enabled:
            log.warning(
                "the Prefect automation %r (%s) is paused: runs whose worker was stopped "
                "stay Running until it is resumed (prefect automation resume --id %s)",
                AUTOMATION_NAME,
                existing.id,
                existing.id,
            )
        if _same(existing, wanted):
            return {"automation_id": str(existing.id), "action": "unchanged"}
        client.update_automation(
            existing.id, wanted.model_copy(update={"enabled": existing.enabled})
        )
        log.info("updated the Prefect automation %r (%s)", AUTOMATION_NAME, existing.id)
        return {"automation_id": str(existing.id), "action": "updated"}
