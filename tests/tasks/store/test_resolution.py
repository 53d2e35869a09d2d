"""Label resolution (tasks/store/resolution.py): the latest word per kind, human rounds
settled by majority, the model-derived cap; and the columnar reading equals the rules
written out one event at a time, on random logs."""

from collections import Counter

import numpy as np
import pytest

import tasks.store.resolution as resolution
from tasks.store import (
    LABELS,
    LatestLabels,
    Store,
    human_labels,
    resolve_labels,
)
from tasks.store.holdout import GoldSplit
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
    assert everything.by_kind["label_model"].column("example_id").to_pylist() == ["x", "y", "z"]
    assert human_only.by_kind["label_model"].num_rows == human_only.by_kind["model"].num_rows == 0
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


# -- the columnar reading against the rules written out one event at a time ---------------


def _rules(rows: list[dict], floor: float, share: float, leave_out, classes):
    """The resolution rules, one Python object per event (as resolution read the log
    before it went columnar): (human {example: (label, event)}, unresolved, weak
    {kind: {example: event}}, resolved rows)."""
    latest: dict[str, dict] = {"label_model": {}, "model": {}}
    rounds: dict[str, dict] = {}
    for e in rows:
        e = {**e, "key": (e["created_at"], e["event_id"]), "confidence": e["confidence"] or 0.0}
        if e["model_influenced"] is None:
            e["model_influenced"] = e["source_kind"] == "model"
        if e["source_kind"] == "human":
            table, key = (
                rounds.setdefault(e["example_id"], {}).setdefault(e["run_id"], {}),
                e["source_name"],
            )
        else:
            table, key = latest[e["source_kind"]], e["example_id"]
        if key not in table or e["key"] > table[key]["key"]:
            table[key] = e
    weak = {k: {ex: e for ex, e in t.items() if e["label"] is not None} for k, t in latest.items()}
    human, unresolved = {}, {}
    for ex, by_run in rounds.items():
        last = max(by_run.values(), key=lambda votes: max(v["key"] for v in votes.values()))
        counts = Counter(v["label"] for v in last.values())
        best = max(counts.values())
        top = [label for label, n in counts.items() if n == best]
        if len(top) > 1:
            unresolved[ex] = sorted(counts)
        else:
            human[ex] = max(
                (v for v in last.values() if v["label"] == top[0]), key=lambda v: v["key"]
            )

    def usable(table):
        gold = (
            set()
            if leave_out is None
            else {ex for ex, g in zip(table, leave_out.is_gold(list(table)), strict=True) if g}
        )
        return {ex: e for ex, e in table.items() if e["label"] in classes and ex not in gold}

    chosen = usable(human)
    influenced = {}
    for ex, e in usable(weak["label_model"]).items():
        if ex not in chosen and e["confidence"] >= floor:
            (influenced if e["model_influenced"] else chosen)[ex] = e
    for ex, e in usable(weak["model"]).items():
        if ex not in chosen and ex not in influenced and e["confidence"] >= floor:
            influenced[ex] = e
    cap = len(influenced) if share >= 1 else int(share / (1 - share) * len(chosen))
    top = sorted(influenced.items(), key=lambda t: (-t[1]["confidence"], t[0]))[:cap]
    chosen.update(top)
    names = [
        "example_id",
        "label",
        "source_kind",
        "source_name",
        "confidence",
        "event_id",
        "model_influenced",
    ]
    resolved = [{n: chosen[ex][n] for n in names} for ex in sorted(chosen)]
    human_out = {
        ex: (e["label"], e["event_id"]) for ex, e in human.items() if e["label"] in classes
    }
    weak_out = {k: {ex: e["event_id"] for ex, e in t.items()} for k, t in weak.items()}
    return human_out, unresolved, weak_out, resolved


def _random_log(rng: np.random.Generator, n: int) -> list[dict]:
    """`n` events about 30 examples: human answers from 3 annotators in 3 runs, label-model
    runs with withdrawals, model predictions; few distinct times, so ties of time are
    common and the event id decides; confidences on a grid that hits the floor exactly."""
    rows = []
    for i in range(n):
        kind = rng.choice(["human", "human", "label_model", "label_model", "model"])
        label = str(rng.integers(0, 5))  # "4" is outside the taxonomy
        if kind == "label_model" and rng.random() < 0.2:
            label = None  # a withdrawal
        rows.append(
            {
                "event_id": f"{rng.integers(0, 2**40):010x}-{i}",
                "example_id": f"x{rng.integers(0, 30):02d}",
                "label": label,
                "source_kind": str(kind),
                "source_name": str(rng.choice(["ann-1", "ann-2", "ann-3"]))
                if kind == "human"
                else str(rng.choice(["ds:A", "ds:B"])),
                "confidence": None
                if rng.random() < 0.05
                else float(rng.choice([0.5, 0.8, 0.85, 0.9, 0.97])),
                "created_at": at(int(rng.integers(0, 6))),
                "run_id": str(rng.choice(["r1", "r2", "r3"])),
                "model_influenced": [None, True, False][rng.integers(0, 3)],
            }
        )
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_columnar_resolution_equals_the_rules_event_by_event(store_root, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(resolution, "REDUCE_ROWS", 16)  # reduce many times while reading
    store = Store(store_root)
    rows = _random_log(rng, 240)
    for start in range(0, len(rows), 40):  # six files, read in batches
        store.write(LABELS, label_events(rows[start : start + 40]))
    written = store.read(LABELS).to_pylist()  # as stored: float32 confidences
    classes = ["0", "1", "2", "3"]
    split = GoldSplit(0.2, "salt", 0.5)
    latest = LatestLabels.read(store)
    for floor, share, leave_out in [(0.8, 0.2, split), (0.85, 0.5, None), (0.0, 1.0, split)]:
        human, unresolved, weak, resolved = _rules(written, floor, share, leave_out, classes)
        got = latest.resolve(
            confidence_floor=floor, max_model_share=share, leave_out=leave_out, classes=classes
        )
        assert got.to_pylist() == resolved
    assert latest.human(classes) == human and len(human) > 5
    assert latest.unresolved == unresolved and unresolved  # the log has ties
    for kind in ("label_model", "model"):
        table = latest.by_kind[kind]
        assert (
            dict(
                zip(*(table.column(c).to_pylist() for c in ("example_id", "event_id")), strict=True)
            )
            == weak[kind]
        )
    # time travel: only the events up to minute 2
    cut = at(2)
    early = [r for r in written if r["created_at"] <= cut]
    human, unresolved, _, resolved = _rules(early, 0.8, 0.2, split, classes)
    before = LatestLabels.read(store, as_of=cut)
    assert before.human(classes) == human and before.unresolved == unresolved
    got = before.resolve(
        confidence_floor=0.8, max_model_share=0.2, leave_out=split, classes=classes
    )
    assert got.to_pylist() == resolved
