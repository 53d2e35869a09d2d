"""Annotation files: the tasks we write, and the exports and CSVs we read, row by row."""

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.annotation.files import (
    AnnotationFileError,
    TaskInput,
    labeling_config,
    parse_answers_csv,
    parse_label_studio_export,
    write_exports,
)
from tests.conftest import png


def test_tasks_carry_the_image_meta_and_a_pre_annotation_but_gold_does_not(tmp_path):
    image = png(1)
    tasks = [
        TaskInput("r1", "ex1", "train", image, "3", 0.71, "semilabel-classifier@v4"),
        TaskInput("r2", "ex2", "gold", image, None, None, "none"),
    ]
    json_path, csv_path = write_exports(tasks, tmp_path, "batch-1")
    out = json.loads(json_path.read_text())
    head, data = out[0]["data"]["image"].split(",", 1)
    assert head == "data:image/png;base64" and base64.b64decode(data) == image
    assert out[0]["meta"] == {"example_id": "ex1", "stream": "train", "request_id": "r1"}
    (pred,) = out[0]["predictions"]
    assert pred["model_version"] == "semilabel-classifier@v4" and pred["score"] == 0.71
    assert pred["result"][0]["value"] == {"choices": ["3"]}
    assert (pred["result"][0]["from_name"], pred["result"][0]["to_name"]) == ("label", "image")
    assert "predictions" not in out[1]
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert [r["example_id"] for r in rows] == ["ex1", "ex2"] and rows[0]["label"] == ""


def test_the_labeling_config_lists_every_class_escaped():
    import xml.etree.ElementTree as ET

    classes = ["0", 'a "quoted" & <odd> class', "it's"]
    root = ET.fromstring(labeling_config(classes))
    choices = root.find("Choices")
    assert (choices.get("name"), choices.get("toName")) == ("label", "image")
    assert [c.get("value") for c in choices.findall("Choice")] == classes
    assert root.find("Image").get("value") == "$image"


def _ann(i, choices, who=1, cancelled=False, when="2026-11-30T10:00:00.000000Z"):
    return {
        "id": i,
        "completed_by": who,
        "was_cancelled": cancelled,
        "updated_at": when,
        "result": [
            {
                "from_name": "label",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": choices},
            }
        ],
    }


def test_a_label_studio_export_is_read_row_by_row():
    export = [
        {
            "id": 1,
            "meta": {"example_id": "ex1"},
            "annotations": [_ann(10, ["3"]), _ann(11, ["4"], who={"id": 2, "email": "bo@x.org"})],
        },
        {"id": 2, "meta": {"example_id": "ex2"}, "annotations": [_ann(12, ["3"], cancelled=True)]},
        {"id": 3, "meta": {"example_id": "ex3"}, "annotations": [_ann(13, [])]},  # no choice
        {"id": 4, "data": {"example_id": "ex4"}, "annotations": [_ann(14, ["1", "2"])]},  # two
        {"id": 5, "annotations": [_ann(15, ["1"])]},  # no example id
        "not a task",
        {"id": 7, "meta": {"example_id": "ex7"}, "annotations": "nope"},
    ]
    answers, rejected, skipped = parse_label_studio_export(export, "export.json")
    assert [(a.example_id, a.label, a.annotator) for a in answers] == [
        ("ex1", "3", "user1"),  # an id alone, and no directory to look it up in
        ("ex1", "4", "bo@x.org"),
    ]
    assert answers[0].act == "annotation 10 at 2026-11-30T10:00:00.000000Z"
    assert answers[0].answered_at is not None and skipped == 1
    assert [(r.origin, r.reason) for r in rejected] == [
        ("export.json task 3 annotation 13", "malformed"),
        ("export.json task 4 annotation 14", "malformed"),
        ("export.json task 5 annotation 15", "malformed"),
        ("export.json task 5", "malformed"),
        ("export.json task 7", "malformed"),
    ]
    with pytest.raises(AnnotationFileError, match="expected a JSON list of tasks"):
        parse_label_studio_export({"tasks": []}, "export.json")


def test_a_csv_of_answers_is_read_row_by_row():
    text = (
        "example_id,label,annotator,timestamp\n"
        "ex1,3,alice,\n"
        "ex2,,,\n"  # not answered yet: counted as blank, not an error
        "ex3,4,,\n"  # no annotator: recorded as `unknown`
        "ex4,5,bob,yesterday\n"  # bad timestamp
        "ex5,6,bob,2026-11-30T09:00:00+00:00\n"
        "ex6,7,bob,2026-11-30T09:00:00+00:00,extra\n"
        ",8,bob,\n"  # no example id
    )
    answers, rejected, blank = parse_answers_csv(text, "answers.csv")
    assert [(a.example_id, a.label, a.annotator, a.act) for a in answers] == [
        ("ex1", "3", "alice", None),
        ("ex3", "4", "unknown", None),
        ("ex5", "6", "bob", "at 2026-11-30T09:00:00+00:00"),
    ]
    assert blank == 1
    assert [(r.origin, r.reason) for r in rejected] == [
        ("answers.csv line 5", "malformed"),
        ("answers.csv line 7", "malformed"),
        ("answers.csv line 8", "malformed"),
    ]
    with pytest.raises(AnnotationFileError, match="missing column.*label"):
        parse_answers_csv("example_id,annotator\nex1,bob\n", "short.csv")
    # the annotator column itself may be left out: every answer is then `unknown`'s
    (a,), _, _ = parse_answers_csv("example_id,label\nex1,3\n", "short.csv")
    assert a.annotator == "unknown"


def test_a_timestamp_without_a_zone_is_utc():
    text = (
        "example_id,label,annotator,timestamp\n"
        "ex1,3,alice,2026-01-02T10:00:00\n"  # no zone: UTC, as everywhere else
        "ex2,3,alice,2026-01-02T11:00:00+01:00\n"  # the same instant
        "ex3,3,alice,2026-01-02\n"  # a date: midnight UTC
    )
    answers, rejected, _ = parse_answers_csv(text, "answers.csv")
    assert not rejected
    assert [a.answered_at for a in answers] == [
        datetime(2026, 1, 2, 10, tzinfo=UTC),
        datetime(2026, 1, 2, 10, tzinfo=UTC),
        datetime(2026, 1, 2, tzinfo=UTC),
    ]
    export = [{"id": 1, "meta": {"example_id": "ex1"}, "annotations": [_ann(10, ["3"])]}]
    export[0]["annotations"][0]["updated_at"] = "2026-01-02T10:00:00.5"
    (a,), _, _ = parse_label_studio_export(export, "export.json")
    assert a.answered_at == datetime(2026, 1, 2, 10, 0, 0, 500000, tzinfo=UTC)


def test_label_studio_annotators_are_named_by_email_or_username():
    export = [
        {
            "id": 1,
            "meta": {"example_id": "ex1"},
            "annotations": [
                _ann(10, ["3"], who=7),  # the default export: a user id
                _ann(11, ["3"], who={"id": 8, "email": "", "username": "carol"}),
                _ann(12, ["3"], who={"id": 9, "email": "dan@x.org", "first_name": "Dan"}),
                _ann(13, ["3"], who=99),  # not in the directory: the id is all there is
            ],
        }
    ]
    users = {7: "ann@x.org", 8: "carol@x.org"}
    answers, _, _ = parse_label_studio_export(export, "export.json", users=users)
    assert [a.annotator for a in answers] == ["ann@x.org", "carol", "dan@x.org", "user99"]


# -- fuzzing: any input gets answers, named rejections, or one clear file error ---------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "data",
                    "meta",
                    "example_id",
                    "annotations",
                    "result",
                    "value",
                    "choices",
                    "completed_by",
                    "created_at",
                    "was_cancelled",
                    "id",
                    "email",
                    "from_name",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


_STORED = datetime(2026, 1, 1, tzinfo=UTC)  # times in the store carry a zone


def _shape_ok(out) -> None:
    answers, rejected, skipped = out
    assert isinstance(skipped, int) and skipped >= 0
    for a in answers:
        assert a.example_id and a.label and a.annotator
        # every answer's time compares with the store's zoned times (no naive times)
        assert a.answered_at is None or isinstance(a.answered_at < _STORED, bool)
    for r in rejected:
        assert r.reason


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, max_size=5))
def test_any_label_studio_export_is_parsed_or_refused_clearly(tasks):
    try:
        _shape_ok(parse_label_studio_export(tasks, "export.json"))
    except AnnotationFileError as exc:
        assert "export.json" in str(exc)


_zones = (
    st.none()
    | st.just(UTC)
    | st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    )
)
_timestamps = st.datetimes(timezones=_zones).map(datetime.isoformat) | st.dates().map(str)
_cells = st.text(max_size=12) | _timestamps


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_cells, _cells, _cells, _timestamps | st.text(max_size=12)).map(list)
        | st.lists(_cells, max_size=5),
        max_size=6,
    ),
    st.booleans(),
)
def test_any_answers_csv_is_parsed_or_refused_clearly(rows, with_header):
    buf = io.StringIO()
    w = csv.writer(buf)
    if with_header:  # the real columns, timestamp included
        w.writerow(["example_id", "label", "annotator", "timestamp"])
    w.writerows(rows)
    try:
        _shape_ok(parse_answers_csv(buf.getvalue(), "answers.csv"))
    except AnnotationFileError as exc:
        assert "answers.csv" in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_as_answers_csv_is_parsed_or_refused_clearly(text):
    try:
        _shape_ok(parse_answers_csv(text, "answers.csv"))
    except AnnotationFileError as exc:
        assert "answers.csv" in str(exc)
