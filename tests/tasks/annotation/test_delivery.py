"""Answers and requests through the delivery functions the `annotate` flow runs, on a real
Parquet store: CSV imports (times, annotators, blank labels) and the export of open
requests (ties included)."""

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from configs.schema import load_config
from tasks.annotation.answers import import_answers
from tasks.annotation.delivery import Delivery, export_open, import_file, push_open
from tasks.annotation.files import parse_label_studio_export
from tasks.annotation.label_studio import LabelStudioError
from tasks.sampling.requests import Request, write_requests
from tasks.store import LABELS, LatestLabels, Store
from tests.conftest import store_with_images

CLASSES = ["0", "1", "2"]


def _setup(tmp_path: Path, n: int = 3):
    cfg = load_config(
        overrides={
            "store.root": str(tmp_path / "store"),
            "taxonomy.classes": CLASSES,
            "sampling.export_dir": str(tmp_path / "out"),
        }
    )
    store, ids = store_with_images(cfg.store.root, n)
    return cfg, store, ids


def _csv(path: Path, rows: list[tuple[str, ...]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["example_id", "label", "annotator", "timestamp"])
        w.writerows(rows)
    return path


def test_csv_corrections_with_zoneless_timestamps_import_again_and_again(tmp_path):
    cfg, store, (a, b, _) = _setup(tmp_path)
    first = _csv(tmp_path / "1.csv", [(a, "0", "alice", "2026-01-02T10:00:00")])
    import_file(store, cfg.taxonomy, first, "imp-1")
    # the second import compares its times with the zoned times already in the store
    second = _csv(
        tmp_path / "2.csv",
        [(a, "1", "alice", "2026-01-03T10:00:00"), (b, "2", "alice", "2026-01-03T09:00:00")],
    )
    summary = import_file(store, cfg.taxonomy, second, "imp-2")
    assert summary.events_written == 2
    third = import_file(store, cfg.taxonomy, second, "imp-3")  # the same file again: nothing new
    assert (third.events_written, third.already_present) == (0, 2)
    times = {(e["example_id"], e["label"]): e["created_at"] for e in store.read(LABELS).to_pylist()}
    assert times[(a, "0")] == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert times[(a, "1")] == datetime(2026, 1, 3, 10, tzinfo=UTC)
    assert LatestLabels.read(store).human(CLASSES)[a][0] == "1"  # the correction won


def test_csv_answers_without_annotator_are_unknown_and_blank_labels_are_blank(tmp_path):
    cfg, store, (a, b, c) = _setup(tmp_path)
    path = _csv(tmp_path / "answers.csv", [(a, "0", "", ""), (b, "", "", ""), (c, " ", "bo", "")])
    summary = import_file(store, cfg.taxonomy, path, "imp-1")
    assert (summary.answers, summary.events_written) == (1, 1)
    assert (summary.blank, summary.skipped) == (2, 0)  # blank, not skipped or cancelled
    assert summary.annotators == ["unknown"]
    (event,) = store.read(LABELS).to_pylist()
    assert event["source_name"] == "csv:unknown"
    rows = {r["metric"]: r["value"] for r in summary.rows()}
    assert rows["blank labels (not answered yet)"] == 2
    assert "skipped or cancelled (dropped)" not in rows  # a CSV has no skips


def test_a_tie_goes_back_into_the_export_with_the_tie_shown(tmp_path):
    cfg, store, (a, b, _) = _setup(tmp_path)
    write_requests(
        store,
        [Request(a, "train", "random", 1.0, "none"), Request(b, "train", "random", 1.0, "none")],
        run_id="sample-1",
        batch_id="batch-1",
    )
    answers = _csv(
        tmp_path / "answers.csv",
        [(a, "0", "alice", ""), (a, "0", "bob", ""), (b, "1", "alice", ""), (b, "2", "bob", "")],
    )
    summary = import_file(store, cfg.taxonomy, answers, "imp-1")
    assert summary.agreement.ties == [b]

    delivery = export_open(store, cfg.sampling.export_dir)
    assert delivery.tasks == 1  # a is settled; b tied: it is asked again
    (tasks_json,) = Path(cfg.sampling.export_dir).glob("*.tasks.json")
    (task,) = json.loads(tasks_json.read_text())
    assert task["meta"]["example_id"] == b and task["meta"]["tie"] == "tied: 1 1, 2 1"
    assert task["data"]["tie"] == "tied: 1 1, 2 1"  # shown in the labeling view
    assert "predictions" not in task  # no suggestion to tip the balance
    (csv_path,) = Path(cfg.sampling.export_dir).glob("*.csv")
    (row,) = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert (row["example_id"], row["tie"]) == (b, "tied: 1 1, 2 1")

    # a third opinion settles it, and the request leaves the queue
    import_file(store, cfg.taxonomy, _csv(tmp_path / "third.csv", [(b, "2", "carol", "")]), "imp-2")
    assert LatestLabels.read(store).human(CLASSES)[b][0] == "2"
    assert export_open(store, cfg.sampling.export_dir).tasks == 0


def test_annotators_named_by_email_where_earlier_imports_named_them_by_id(tmp_path):
    cfg, store, (a, _, _) = _setup(tmp_path)
    export = [
        {
            "id": 1,
            "meta": {"example_id": a},
            "annotations": [
                {
                    "id": 10,
                    "completed_by": 7,
                    "updated_at": "2026-01-02T10:00:00Z",
                    "result": [{"type": "choices", "value": {"choices": ["1"]}}],
                }
            ],
        }
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    first = import_file(store, cfg.taxonomy, path, "imp-1")  # no directory: the id is all there is
    assert first.annotators == ["user7"]
    # the same annotation, now that the directory names user 7: nothing is written twice
    answers, rejected, skipped = parse_label_studio_export(
        export, "project 1", users={7: "ann@x.org"}
    )
    assert [x.annotator for x in answers] == ["ann@x.org"]
    again = import_answers(
        store,
        answers,
        rejected,
        cfg.taxonomy,
        tool="label_studio",
        run_id="pull-1",
        skipped=skipped,
    )
    assert (again.events_written, again.already_present) == (0, 1)
    # a later change of that annotation is written under the email
    export[0]["annotations"][0].update(updated_at="2026-01-03T10:00:00Z")
    export[0]["annotations"][0]["result"][0]["value"]["choices"] = ["2"]
    answers, _, _ = parse_label_studio_export(export, "project 1", users={7: "ann@x.org"})
    third = import_answers(
        store,
        answers,
        [],
        cfg.taxonomy,
        tool="label_studio",
        run_id="pull-2",
    )
    assert third.events_written == 1
    latest = [e for e in store.read(LABELS).to_pylist() if e["label"] == "2"]
    assert [e["source_name"] for e in latest] == ["label_studio:ann@x.org"]
    assert LatestLabels.read(store).human(CLASSES)[a][0] == "2"


@pytest.mark.parametrize(
    "project_url",
    [
        "http://admin:S3CRET@ls.example:8080/projects/7",  # user info in label_studio.url
        "http://ls.example:8080/projects/7?token=S3CRET",
    ],
)
def test_a_label_studio_delivery_shows_its_url_without_credentials(project_url):
    delivery = Delivery("label_studio", "open", 2, project_url)  # as push_open returns it
    shown = [str(row["value"]) for row in delivery.rows()] + [delivery.summary()]
    assert not any("S3CRET" in text for text in shown), shown
    assert any("ls.example:8080/projects/7" in text and "***" in text for text in shown)
    assert delivery.where == project_url  # the field keeps what was delivered to


def test_an_unreachable_label_studio_is_named_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMILABEL_TEST_LS_TOKEN", "a-token")
    cfg = load_config(
        overrides={
            "store.root": str(tmp_path / "store"),
            "label_studio.url": "http://admin:S3CRET@127.0.0.1:9",  # nothing listens there
            "label_studio.api_key_env": "SEMILABEL_TEST_LS_TOKEN",
        }
    )
    with pytest.raises(LabelStudioError) as failed:
        push_open(Store(cfg.store.root), cfg.label_studio, cfg.taxonomy)
    assert "127.0.0.1:9" in str(failed.value) and "S3CRET" not in str(failed.value)
