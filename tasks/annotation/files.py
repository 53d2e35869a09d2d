"""Annotation files: Label Studio tasks (JSON) and a plain CSV out; Label Studio's JSON
export and a CSV of answers in.

Out, one task per annotation request: the image as a data URI (so the file works in any
Label Studio without storage set-up), `meta` with the example id, stream and request
id, and, for the `train` stream, the scoring model's class and score as a
pre-annotation (`predictions`, with its `model_version`). Gold requests carry no
pre-annotation: a suggestion would pull the holdout's labels toward the model. Review
requests carry the label under review as the suggestion.

In, every row either becomes an `Answer` or a `Rejected` with the reason (malformed
structure, no choice, several choices); skipped and cancelled annotations are counted
and dropped.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from tasks.annotation.answers import Answer, Rejected

FROM_NAME, TO_NAME = "label", "image"
CSV_COLUMNS = ("example_id", "label", "annotator")


class AnnotationFileError(ValueError):
    """A whole annotation file is unusable (not JSON, a CSV without its columns)."""


def labeling_config(classes: Iterable[str]) -> str:
    """Label Studio's labeling config for single-choice image classification."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="${TO_NAME}"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def data_uri(image: bytes) -> str:
    mime = (
        "image/png"
        if image.startswith(b"\x89PNG")
        else "image/jpeg"
        if image.startswith(b"\xff\xd8")
        else "application/octet-stream"
    )
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


@dataclass(frozen=True)
class TaskInput:
    """What one Label Studio task is made of."""

    request_id: str
    example_id: str
    stream: str
    image: bytes
    suggestion: str | None  # the pre-annotation's class, if any
    score: float | None
    model_version: str


def task_json(t: TaskInput) -> dict[str, Any]:
    task: dict[str, Any] = {
        "data": {TO_NAME: data_uri(t.image), "example_id": t.example_id},
        "meta": {"example_id": t.example_id, "stream": t.stream, "request_id": t.request_id},
    }
    if t.suggestion is not None:
        task["predictions"] = [
            {
                "model_version": t.model_version,
                "score": float(t.score) if t.score is not None else None,
                "result": [
                    {
                        "id": t.request_id[:10],
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "choices",
                        "value": {"choices": [t.suggestion]},
                    }
                ],
            }
        ]
    return task


def write_exports(tasks: list[TaskInput], folder: Path, batch_id: str) -> tuple[Path, Path]:
    """`<batch>.tasks.json` (import it into Label Studio) and `<batch>.csv` (fill in the
    label and annotator columns, then `semilabel annotate import` it)."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{batch_id}.tasks.json"
    csv_path = folder / f"{batch_id}.csv"
    json_path.write_text(json.dumps([task_json(t) for t in tasks], indent=1))
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["example_id", "label", "annotator", "stream", "request_id", "suggestion"])
        for t in tasks:
            w.writerow([t.example_id, "", "", t.stream, t.request_id, t.suggestion or ""])
    return json_path, csv_path


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or f"user{completed_by.get('id')}")
    return f"user{completed_by}"


def parse_label_studio_export(tasks: Any, origin: str) -> tuple[list[Answer], list[Rejected], int]:
    """(answers, rejected rows, skipped) from Label Studio's JSON export (a list of
    tasks). `origin` names the file in messages."""
    if not isinstance(tasks, list):
        raise AnnotationFileError(
            f"{origin}: expected a JSON list of tasks, got {type(tasks).__name__}"
        )
    answers: list[Answer] = []
    rejected: list[Rejected] = []
    skipped = 0
    for n, task in enumerate(tasks):
        where = f"{origin} task {task.get('id', n) if isinstance(task, dict) else n}"
        if not isinstance(task, dict):
            rejected.append(Rejected(where, "malformed", "a task is not a JSON object"))
            continue
        meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        example_id = meta.get("example_id") or data.get("example_id")
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            rejected.append(Rejected(where, "malformed", "`annotations` is not a list"))
            continue
        for ann in annotations:
            at = f"{where} annotation {ann.get('id') if isinstance(ann, dict) else '?'}"
            if not isinstance(ann, dict):
                rejected.append(Rejected(at, "malformed", "an annotation is not a JSON object"))
                continue
            if ann.get("was_cancelled"):
                skipped += 1
                continue
            if not isinstance(example_id, str) or not example_id:
                rejected.append(
                    Rejected(at, "malformed", "the task has no example_id in meta or data")
                )
                continue
            choices = [
                c
                for r in ann.get("result") or []
                if isinstance(r, dict) and r.get("type") == "choices"
                for c in (r.get("value") or {}).get("choices") or []
            ]
            if len(choices) != 1 or not isinstance(choices[0], str):
                rejected.append(
                    Rejected(
                        at,
                        "malformed",
                        f"expected one chosen class, found {choices!r}",
                        example_id,
                    )
                )
                continue
            when = ann.get("updated_at") or ann.get("created_at")
            answers.append(
                Answer(
                    example_id=example_id,
                    label=choices[0],
                    annotator=_annotator(ann.get("completed_by")),
                    tool="label_studio",
                    origin=at,
                    act=f"annotation {ann.get('id')} at {when}",
                    answered_at=_when(when),
                )
            )
    return answers, rejected, skipped


def read_label_studio_export(path: Path) -> tuple[list[Answer], list[Rejected], int]:
    try:
        tasks = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationFileError(
            f"{path}: not a readable Label Studio JSON export: {exc}"
        ) from exc
    return parse_label_studio_export(tasks, Path(path).name)


def parse_answers_csv(text: str, origin: str) -> tuple[list[Answer], list[Rejected], int]:
    """(answers, rejected rows, rows without a label yet) from a CSV with the columns
    example_id,label,annotator and an optional timestamp (ISO 8601). Text that is not
    CSV at all is refused as a whole (AnnotationFileError naming the line)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))  # csv reads \r, \n, \r\n itself
    try:
        return _answers_from_rows(reader, origin)
    except csv.Error as exc:
        raise AnnotationFileError(
            f"{origin} line {reader.line_num}: not valid CSV ({exc}); nothing was imported"
        ) from None


def _answers_from_rows(
    reader: csv.DictReader, origin: str
) -> tuple[list[Answer], list[Rejected], int]:
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise AnnotationFileError(
            f"{origin}: missing column(s) {', '.join(missing)} (found: "
            f"{', '.join(reader.fieldnames or [])}); expected example_id,label,annotator"
        )
    answers: list[Answer] = []
    rejected: list[Rejected] = []
    unanswered = 0
    for n, row in enumerate(reader, start=2):  # line 1 is the header
        at = f"{origin} line {n}"
        if None in row:  # more fields than the header has
            rejected.append(Rejected(at, "malformed", "more fields than columns"))
            continue
        ex = (row.get("example_id") or "").strip()
        label = (row.get("label") or "").strip()
        who = (row.get("annotator") or "").strip()
        if not label:
            unanswered += 1
            continue
        if not ex or not who:
            rejected.append(
                Rejected(
                    at, "malformed", "example_id and annotator are required", ex or None, label
                )
            )
            continue
        stamp = (row.get("timestamp") or "").strip()
        when = _when(stamp)
        if stamp and when is None:
            rejected.append(
                Rejected(at, "malformed", f"timestamp {stamp!r} is not ISO 8601", ex, label)
            )
            continue
        answers.append(
            Answer(
                ex, label, who, "csv", at, act=f"at {stamp}" if stamp else None, answered_at=when
            )
        )
    return answers, rejected, unanswered


def read_answers_csv(path: Path) -> tuple[list[Answer], list[Rejected], int]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationFileError(f"{path}: cannot read the CSV: {exc}") from exc
    return parse_answers_csv(text, Path(path).name)
