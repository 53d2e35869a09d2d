"""The label event log: event ids per act of labeling, resolution, the model-derived cap."""

import pytest

from tasks.store import (
    LatestLabels,
    SourceEvent,
    SourceLog,
    Store,
    human_labels,
    label_event_id,
    resolve_labels,
)
from tests.conftest import label_events
from tests.tasks.store.conftest import at, weak_event


def test_latest_human_label_wins_over_everything(store_root: str):
    store = Store(store_root)
    store.write(
        "labels",
        label_events(
            [
                {"event_id": "e1", "example_id": "x", "label": "3", "source_name": "alice"},
                {  # a later correction, in a later run
                    "event_id": "e2",
                    "example_id": "x",
                    "label": "5",
                    "source_name": "bob",
                    "created_at": at(10),
                    "run_id": "review",
                },
                {
                    "event_id": "e3",
                    "example_id": "x",
                    "label": "7",
                    "source_kind": "label_model",
                    "confidence": 0.99,
                    "created_at": at(20),
                },
                {
                    "event_id": "e4",
                    "example_id": "y",
                    "label": "1",
                    "source_kind": "label_model",
                    "confidence": 0.95,
                },
                {  # below the floor
                    "event_id": "e5",
                    "example_id": "z",
                    "label": "2",
                    "source_kind": "label_model",
                    "confidence": 0.5,
                },
                {"event_id": "e6", "example_id": "w", "label": "4", "source_kind": "rule"},
            ]
        ),
    )
    got = resolve_labels(store, confidence_floor=0.8, max_model_share=0.2).to_pylist()
    by_id = {r["example_id"]: r for r in got}
    assert set(by_id) == {"x", "y"}  # raw rule votes are not labels; z is below the floor
    assert (by_id["x"]["label"], by_id["x"]["source_name"], by_id["x"]["event_id"]) == (
        "5",
        "bob",
        "e2",
    )
    assert (by_id["y"]["label"], by_id["y"]["source_kind"]) == ("1", "label_model")

    # a reader of human labels alone reads no weak label, and gets the same human labels
    everything = LatestLabels.read(store)
    human_only = LatestLabels.read(store, kinds=("human",))
    assert sorted(everything.by_kind["label_model"]) == ["x", "y", "z"]
    assert human_only.by_kind["label_model"] == {} and human_only.by_kind["model"] == {}
    assert human_only.human("0123456789") == everything.human("0123456789") == {"x": ("5", "e2")}
    assert human_labels(store, "0123456789") == {"x": ("5", "e2")}
    with pytest.raises(ValueError, match="unknown label source kinds \\['rule'\\]"):
        LatestLabels.read(store, kinds=("human", "rule"))


def test_model_originated_labels_are_capped_most_confident_first(store_root: str):
    store = Store(store_root)
    rows = [{"event_id": f"h{i}", "example_id": f"h{i}", "label": "0"} for i in range(8)]
    rows += [
        {
            "event_id": f"m{i}",
            "example_id": f"m{i}",
            "label": "1",
            "source_kind": "model",
            "source_name": "clf@3",
            "confidence": 0.90 + i / 100,
        }
        for i in range(6)
    ]
    store.write("labels", label_events(rows))
    got = resolve_labels(store, confidence_floor=0.8, max_model_share=0.2)
    kinds = got.column("source_kind").to_pylist()
    assert kinds.count("human") == 8
    # share <= 0.2 -> at most 0.25 * 8 = 2 model labels: the two most confident.
    model_ids = sorted(
        i for i, k in zip(got.column("example_id").to_pylist(), kinds, strict=True) if k == "model"
    )
    assert model_ids == ["m4", "m5"]


def test_label_model_labels_a_model_influenced_share_the_same_cap(store_root: str):
    # 8 human labels, 6 label-model labels fed by a model-backed function, 6 model
    # predictions: 12 model-influenced labels compete for 0.25 * 8 = 2 places.
    store = Store(store_root)
    rows = [{"event_id": f"h{i}", "example_id": f"h{i}", "label": "0"} for i in range(8)]
    rows += [
        {
            "event_id": f"lm{i}",
            "example_id": f"lm{i}",
            "label": "1",
            "source_kind": "label_model",
            "confidence": 0.99 - i / 100,
            "model_influenced": True,
        }
        for i in range(6)
    ]
    rows += [
        {
            "event_id": f"m{i}",
            "example_id": f"m{i}",
            "label": "2",
            "source_kind": "model",
            "confidence": 0.9,
        }
        for i in range(6)
    ]
    rows += [  # a plain label-model label (rules only): not capped
        {
            "event_id": "lm-rules",
            "example_id": "r",
            "label": "1",
            "source_kind": "label_model",
            "confidence": 0.85,
            "model_influenced": False,
        }
    ]
    store.write("labels", label_events(rows))
    got = resolve_labels(store, confidence_floor=0.8, max_model_share=0.2).to_pylist()
    influenced = sorted(r["example_id"] for r in got if r["model_influenced"])
    # 9 uninfluenced labels (8 human + r) -> cap int(0.25 * 9) = 2, most confident first
    assert influenced == ["lm0", "lm1"]
    assert "r" in {r["example_id"] for r in got}
    share = len(influenced) / len(got)
    assert share <= 0.2


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


def test_answers_of_one_round_are_settled_by_majority_and_a_tie_waits(store_root: str):
    store = Store(store_root)

    def answer(ev, ex, label, who, minute, run):
        return {
            "event_id": ev,
            "example_id": ex,
            "label": label,
            "source_name": who,
            "created_at": at(minute),
            "run_id": run,
        }

    store.write(
        "labels",
        label_events(
            [
                answer("a1", "x", "3", "ann-1", 0, "import-1"),
                answer("a2", "x", "3", "ann-2", 1, "import-1"),
                answer("a3", "x", "5", "ann-3", 2, "import-1"),  # outvoted, though latest
                answer("b1", "y", "1", "ann-1", 0, "import-1"),
                answer("b2", "y", "2", "ann-2", 1, "import-1"),  # 1 vs 1: a tie
            ]
        ),
    )
    latest = LatestLabels.read(store)
    assert latest.human(["1", "2", "3", "5"]) == {"x": ("3", "a2")}
    assert latest.unresolved == {"y": ["1", "2"]}
    # a later round (a reviewer) settles the tie
    store.write("labels", label_events([answer("c1", "y", "2", "reviewer", 9, "review-1")]))
    latest = LatestLabels.read(store)
    assert latest.human(["1", "2"])["y"] == ("2", "c1") and not latest.unresolved


def test_a_withdrawn_weak_label_is_no_label_from_then_on(store_root: str):
    # Run 1 (functions A) labels x and y; run 2 (functions B) relabels y and withdraws x.
    store = Store(store_root)

    store.write(
        "labels",
        label_events(
            [
                weak_event("a-x", "x", "3", "ds:A", at(0), run_id="run-1"),
                weak_event("a-y", "y", "3", "ds:A", at(0), run_id="run-1"),
                weak_event("b-y", "y", "5", "ds:B", at(10), run_id="run-2"),
                weak_event("b-x", "x", None, "ds:B", at(10), run_id="run-2"),  # withdrawn
            ]
        ),
    )

    def resolved(as_of=None):
        table = LatestLabels.read(store, as_of).resolve(confidence_floor=0.8, max_model_share=1)
        return {r["example_id"]: (r["label"], r["event_id"]) for r in table.to_pylist()}

    assert resolved() == {"y": ("5", "b-y")}
    assert resolved(at(5)) == {"x": ("3", "a-x"), "y": ("3", "a-y")}  # as run 1 left it
    assert resolve_labels(store, confidence_floor=0.0, max_model_share=1).num_rows == 1
