"""The label event log: event ids per act of labeling, each source's latest word."""

import pytest

from tasks.store import (
    SourceEvent,
    SourceLog,
    Store,
    label_event_id,
    resolve_labels,
)
from tests.conftest import label_events
from tests.tasks.store.conftest import at


def test_a_correction_back_and_forth_from_one_source_is_three_events(store_root: str):
    # A -> B -> A from the same source: the third act is new, so the latest label is A.
    store = Store(store_root)
    log = SourceLog.read(store, "human", "manifest:labels.csv")
    for minute, label in enumerate(["A", "B", "A"]):
        event_id = log.next_event("x", label)
        assert event_id is not None
        log.record("x", SourceEvent(event_id, label, 1.0), (at(minute), event_id))
        store.write(
            "labels",
            label_events(
                [
                    {
                        "event_id": event_id,
                        "example_id": "x",
                        "label": label,
                        "source_name": "manifest:labels.csv",
                        "created_at": at(minute),
                    }
                ]
            ),
        )
    assert len(log.event_ids) == 3
    (row,) = resolve_labels(store, confidence_floor=0.8, max_model_share=0.2).to_pylist()
    assert row["label"] == "A"
    # Re-reading the unchanged source (it still says A) adds nothing...
    again = SourceLog.read(store, "human", "manifest:labels.csv")
    assert again.next_event("x", "A") is None
    # ...and two readers of the same change compute the same id, so they dedupe.
    assert again.next_event("x", "C") == SourceLog.read(
        store, "human", "manifest:labels.csv"
    ).next_event("x", "C")


def test_a_label_model_rerun_with_a_new_confidence_is_a_new_event(store_root: str):
    store = Store(store_root)
    log = SourceLog("label_model", "dawid_skene:abc")
    first = log.next_event("x", "3", 0.91)
    assert first is not None
    log.record("x", SourceEvent(first, "3", 0.91), (at(0), first))
    assert log.next_event("x", "3", 0.91) is None
    assert log.next_event("x", "3", 0.97) not in (None, first)
    assert store.uri  # the log needs no store to decide


@pytest.mark.parametrize("field", ["label", "source_kind", "source_name", "act"])
def test_event_ids_differ_in_every_part(field):
    base = {"label": "1", "source_kind": "human", "source_name": "a", "act": "first"}
    other = {**base, field: "changed"}
    assert label_event_id(
        "x", base["label"], base["source_kind"], base["source_name"], act=base["act"]
    ) != label_event_id(
        "x", other["label"], other["source_kind"], other["source_name"], act=other["act"]
    )
