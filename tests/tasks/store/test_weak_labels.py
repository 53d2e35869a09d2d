"""The weak labels in force: each example's latest label-model event, what a new run
writes where its word differs, and the withdrawals where it gives none."""

import pyarrow as pa
import pytest

from tasks.store import LABELS, LabelModelLog, Store, WeakEvent, label_event_id
from tests.conftest import label_events
from tests.tasks.store.conftest import at, weak_event


def test_the_log_holds_each_examples_latest_label_model_event_from_the_store(store_root: str):
    store = Store(store_root)
    store.write(
        LABELS,
        label_events(
            [
                weak_event("a-x", "x", "3", "ds:A", at(0)),
                weak_event("b-x", "x", "5", "ds:B", at(10), influenced=True),
                weak_event("a-y", "y", "3", "ds:A", at(0)),
                weak_event("b-y", "y", None, "ds:B", at(10)),  # withdrawn
                {"event_id": "h-z", "example_id": "z", "label": "1"},  # human: not weak
            ]
        ),
    )
    log = LabelModelLog.read(store)
    assert log.event_ids == {"a-x", "b-x", "a-y", "b-y"}
    x = log.latest("x")
    assert (x.event_id, x.label, x.source_name, x.model_influenced) == ("b-x", "5", "ds:B", True)
    assert x.confidence == pytest.approx(0.9)
    assert log.latest("y").label is None and log.latest("z") is None
    # an old event without the flag: a label model's label is not a model's own output
    assert LabelModelLog.read(store).latest("y").model_influenced is False

    # ids follow from the word and the event before it: the same on every reader
    assert log.next_event("x", "5", 0.9, source_name="ds:B", influenced=True) is None
    assert log.next_event("x", "3", 0.9, source_name="ds:B", influenced=True) == label_event_id(
        "x", "3", "label_model", "ds:B", act="after:b-x"
    )
    assert log.next_event("w", "3", 0.9, source_name="ds:B", influenced=False) == (
        label_event_id("w", "3", "label_model", "ds:B", act="first")
    )
    # y's label is already withdrawn: only x has one to withdraw
    gone, events = log.withdrawals(pa.chunked_array([], pa.string()), source_name="ds:C")
    assert gone == ["x"]
    assert events == [label_event_id("x", "", "label_model", "ds:C", act="withdrawn after:b-x")]
    assert log.withdrawals(pa.chunked_array([["w"], ["x"]]), source_name="ds:C") == ([], [])


def test_events_added_from_later_files_catch_the_log_up(store_root: str):
    store = Store(store_root)
    store.write(LABELS, label_events([weak_event("a-x", "x", "3", "ds:A", at(0))]))
    read = store.files(LABELS)
    log = LabelModelLog()
    log.add_files(store, read)
    store.write(LABELS, label_events([weak_event("b-x", "x", "5", "ds:B", at(10))]))
    log.add_files(store, sorted(set(store.files(LABELS)) - set(read)))
    assert log.latest("x").event_id == "b-x" and log.event_ids == {"a-x", "b-x"}
    log.add_files(store, [])  # nothing to read: nothing changes
    assert log.latest("x").event_id == "b-x"


def test_a_weak_label_in_force_is_the_latest_run_whatever_its_functions(store_root: str):
    store = Store(store_root)
    log = LabelModelLog()
    first = log.next_event("x", "3", 0.91, source_name="ds:A", influenced=False)
    log.record("x", WeakEvent(first, "3", 0.91, "ds:A", False), (at(0), first))
    assert log.next_event("x", "3", 0.91, source_name="ds:A", influenced=False) is None
    assert log.next_event("x", "3", 0.91 + 1e-6, source_name="ds:A", influenced=False) is None
    assert log.next_event("x", "3", 0.92, source_name="ds:A", influenced=False) is not None
    # the same label from other functions, or now shaped by a model, is a new word
    assert log.next_event("x", "3", 0.91, source_name="ds:B", influenced=False) is not None
    assert log.next_event("x", "3", 0.91, source_name="ds:A", influenced=True) is not None
    second = log.next_event("x", "5", 0.8, source_name="ds:B", influenced=False)
    log.record("x", WeakEvent(second, "5", 0.8, "ds:B", False), (at(1), second))
    # back to A's word: a new event (A's old one is no longer in force)
    assert log.next_event("x", "3", 0.91, source_name="ds:A", influenced=False) not in (
        None,
        first,
    )
    gone, events = log.withdrawals(pa.array(["y"]), source_name="ds:A")
    assert gone == ["x"] and len(events) == 1 and events[0] not in log.event_ids
    assert log.withdrawals(pa.array(["x"]), source_name="ds:A") == ([], [])
    assert store.uri  # the log needs no store to decide
