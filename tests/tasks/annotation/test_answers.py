"""Answers into the label log: agreement, quarantine row by row, corrections, rounds."""

import math
from datetime import UTC, datetime

import pyarrow.compute as pc

from configs.data import TaxonomyConfig
from tasks.annotation.answers import Answer, Rejected, agreement, import_answers, krippendorff_alpha
from tasks.store import LABELS, QUARANTINE, LatestLabels
from tests.conftest import store_with_images

CLASSES = ("0", "1", "2")
TAXONOMY = TaxonomyConfig(version="v1", classes=CLASSES)


def test_krippendorff_alpha_matches_a_hand_computation():
    # Units (a,a), (a,b), (b,b): coincidences o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b
    # = 3, n = 6. alpha = 1 - (n - 1) * (o_ab + o_ba) / (n_a n_b + n_b n_a) = 1 - 10/18.
    assert math.isclose(krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]]), 4 / 9)
    assert krippendorff_alpha([["a", "a"], ["b", "b", "b"]]) == 1.0  # full agreement
    # Three coders: one unit split 2-1, one unanimous.
    units = [["a", "a", "b"], ["b", "b", "b"]]
    # unit 1: counts a=2, b=1 -> o_aa += 2*1/2 = 1, o_ab += 2*1/2 = 1, o_ba += 1, o_bb 0
    # unit 2: b=3 -> o_bb += 3*2/2 = 3.   n_a = 2, n_b = 4, n = 6
    # alpha = 1 - 5 * 2 / (2*4*2) = 1 - 10/16
    assert math.isclose(krippendorff_alpha(units), 1 - 10 / 16)


def test_agreement_per_class_and_ties():
    answers = [
        Answer("x", "0", "ann-1", "csv", "r1"),
        Answer("x", "0", "ann-2", "csv", "r2"),
        Answer("y", "1", "ann-1", "csv", "r3"),
        Answer("y", "2", "ann-2", "csv", "r4"),  # a tie: listed, and asked again
        Answer("z", "2", "ann-1", "csv", "r5"),  # one annotator: not pairable
    ]
    agr = agreement(answers, CLASSES)
    assert agr.examples == 2 and agr.ties == ["y"]
    assert math.isclose(agr.alpha, krippendorff_alpha([["0", "0"], ["1", "2"]]))
    assert agr.per_class["0"] == 1.0  # both units agree on "0 or not"
    assert set(agr.per_class) == {"0", "1", "2"}


def _import(store, answers, rejected=(), run_id="imp-1"):
    return import_answers(
        store,
        list(answers),
        list(rejected),
        TAXONOMY,
        tool="label_studio",
        run_id=run_id,
        skipped=1,
    )


def test_bad_rows_are_quarantined_one_by_one_and_the_rest_import(store_root: str):
    store, (a, b, c) = store_with_images(store_root)
    answers = [
        Answer(a, "0", "ann-1", "label_studio", "export.json task 1 annotation 1", act="1@t1"),
        Answer(
            "f" * 64, "1", "ann-1", "label_studio", "export.json task 2 annotation 2", act="2@t1"
        ),
        Answer(b, "cat", "ann-2", "label_studio", "export.json task 3 annotation 3", act="3@t1"),
        Answer(c, "2", "ann-2", "label_studio", "export.json task 4 annotation 4", act="4@t1"),
    ]
    malformed = Rejected("export.json task 5", "malformed", "expected one chosen class, found []")
    summary = _import(store, answers, [malformed])
    assert (summary.events_written, summary.skipped) == (2, 1)
    assert summary.quarantined == {"unknown_example": 1, "label_not_in_taxonomy": 1, "malformed": 1}
    q = {r["reason"]: r for r in store.read(QUARANTINE).to_pylist()}
    assert q["unknown_example"]["source_uri"] == "export.json task 2 annotation 2"
    assert "'cat' is not one of taxonomy.classes" in q["label_not_in_taxonomy"]["detail"]
    assert q["malformed"]["source_uri"] == "export.json task 5"
    events = store.read(LABELS).to_pylist()
    assert sorted(e["example_id"] for e in events) == sorted([a, c])
    assert {e["source_name"] for e in events} == {"label_studio:ann-1", "label_studio:ann-2"}
    # the same export again: nothing new, no second quarantine row
    again = _import(store, answers, [malformed], run_id="imp-2")
    assert again.events_written == 0 and again.already_present == 2
    assert store.count(QUARANTINE) == 3


def test_an_updated_annotation_is_a_correction(store_root: str):
    store, (a, _, _) = store_with_images(store_root)
    t1 = datetime(2026, 11, 1, tzinfo=UTC)
    t2 = datetime(2026, 11, 2, tzinfo=UTC)
    _import(store, [Answer(a, "1", "ann-1", "label_studio", "t1", act="7@t1", answered_at=t1)])
    _import(
        store,
        [Answer(a, "2", "ann-1", "label_studio", "t1 updated", act="7@t2", answered_at=t2)],
        run_id="imp-2",
    )
    assert store.read(LABELS, filter=pc.field("example_id") == a).num_rows == 2
    assert LatestLabels.read(store).human(CLASSES)[a][0] == "2"


def test_several_annotators_are_settled_by_majority_ties_wait(store_root: str):
    store, (a, b, _) = store_with_images(store_root)
    answers = [
        Answer(a, "1", "ann-1", "label_studio", "a1", act="1"),
        Answer(a, "1", "ann-2", "label_studio", "a2", act="2"),
        Answer(a, "2", "ann-3", "label_studio", "a3", act="3"),
        Answer(b, "0", "ann-1", "label_studio", "b1", act="4"),
        Answer(b, "2", "ann-2", "label_studio", "b2", act="5"),
    ]
    summary = _import(store, answers)
    assert summary.events_written == 5  # every answer kept
    assert summary.agreement.ties == [b]
    latest = LatestLabels.read(store)
    assert latest.human(CLASSES) == {a: ("1", latest.human(CLASSES)[a][1])}
    assert latest.unresolved == {b: ["0", "2"]}
