"""The automation that marks a flow run Crashed when its heartbeats stop: what it listens
for, after how long, for which runs, and what it does. (Creating and updating it on a
real Prefect server, and a worker really stopped: tests/test_worker_stop.py.)"""

import json
import os
import subprocess
import sys

import pytest
from prefect.client.schemas.objects import StateType
from prefect.events.schemas.automations import Posture
from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL

from tasks.crashed_runs import (
    ALIVE_OR_DONE,
    AUTOMATION_NAME,
    MISSED_HEARTBEATS,
    HeartbeatSettingError,
    crash_after_s,
    crash_automation,
)


def test_a_run_is_crashed_after_three_missed_heartbeats():
    assert MISSED_HEARTBEATS == 3
    assert crash_after_s(30) == 90 and crash_after_s(45) == 135


def test_the_automation_waits_for_a_heartbeat_or_an_end_after_each_heartbeat_of_a_tagged_run():
    automation = crash_automation(45, "nightly")
    trigger = automation.trigger
    assert automation.name == AUTOMATION_NAME
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == set(ALIVE_OR_DONE) and "prefect.flow-run.Completed" in trigger.expect
    assert trigger.posture == Posture.Proactive and trigger.threshold == 1
    assert trigger.within.total_seconds() == 135
    assert trigger.for_each == {"prefect.resource.id"}  # each flow run on its own
    assert trigger.match_related.root == {  # only runs with the tag
        "prefect.resource.id": "prefect.tag.nightly",
        "prefect.resource.role": "tag",
    }
    assert trigger.match.root == {"prefect.resource.id": "prefect.flow-run.*"}
    (action,) = automation.actions
    assert action.state == StateType.CRASHED and "prefect flow-run retry" in action.message
    assert "every 45 s" in automation.description and "none for 135 s" in automation.description


@pytest.mark.parametrize("heartbeat_s", [MINIMUM_HEARTBEAT_INTERVAL - 1, 0, 30.0, True, "30"])
def test_a_heartbeat_prefect_cannot_send_is_refused_with_the_setting_to_fix(heartbeat_s):
    with pytest.raises(HeartbeatSettingError) as raised:
        crash_automation(heartbeat_s)
    assert raised.value.heartbeat_s == heartbeat_s
    assert "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in str(raised.value)
    assert crash_automation(MINIMUM_HEARTBEAT_INTERVAL).trigger.within.total_seconds() == (
        3 * MINIMUM_HEARTBEAT_INTERVAL
    )


_READ_BACK_IN_EVERY_ORDER = """
import itertools, json
from tasks.crashed_runs import ALIVE_OR_DONE, _same, crash_automation
wanted = crash_automation(30)
reordered = same = 0
for names in itertools.permutations(ALIVE_OR_DONE):
    trigger = wanted.trigger.model_copy(update={"expect": set(names)})
    read_back = wanted.model_copy(update={"trigger": trigger})
    reordered += read_back.model_dump(mode="json") != wanted.model_dump(mode="json")
    same += _same(read_back, wanted)
print(json.dumps({"reordered": reordered, "same": same}))
"""


def test_an_automation_read_back_with_its_event_names_in_another_order_is_unchanged():
    """The server returns the trigger's sets in its own order; whether that order differs
    from ours depends on the string hash seed (CI once got 'updated' twice in a row). Run
    with seed 12, where 75 of the 120 orders dump differently as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", _READ_BACK_IN_EVERY_ORDER],
        env={**os.environ, "PYTHONHASHSEED": "12"},
        capture_output=True,
        text=True,
        check=True,
    )
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["reordered"] > 0  # the case happens under this seed
    assert counts["same"] == 120  # and every order still counts as the same settings
