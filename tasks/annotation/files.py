"""Annotation files: Label Studio tasks (JSON) and a plain CSV out; Label Studio's JSON
export and a CSV of answers in.

Out, one task per annotation request: the image as a data URI (so the file works in any
Label Studio without storage set-up), `meta` with the example id, stream and request
id, and, for the `train` stream, the scoring model's class and score as a
pre-annotation (`predictions`, with its `model_version`). Gold requests carry no
pre-annotation: a suggestion would pull the holdout's labels toward the model. Review
requests carry the label under review as the suggestion.

A request that goes back to people because its annotators tied carries the tie
(`tie`, e.g. "tied: cat 1, dog 1") in `meta`, in `data` (the labeling view shows it)
and in the CSV; it has no pre-annotation, so nothing tips the balance.

In, every row either becomes an `Answer` or a `Rejected` with the reason (malformed
structure, no choice, several choices); skipped and cancelled annotations are counted
and dropped, as are CSV rows whose label is still blank. Times without a zone are UTC.
Label Studio names annotators by user id; given its user directory, the importer names
them by email (or username), which is what people search for.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from tasks.annotation.answers import UNKNOWN_ANNOTATOR, Answer, Rejected

FROM_NAME, TO_NAME = "label", "image"
TIE = "tie"  # the task data key that shows a tie to the annotator
CSV_COLUMNS = ("example_id", "label")  # required; `annotator` and `timestamp` are optional


class AnnotationFileError(ValueError):
    """A whole annotation file is unusable (not JSON, a CSV without its columns)."""


def labeling_config(classes: Iterable[str]) -> str:
    """Label Studio's labeling config for single-choice image classification."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Header value="${TIE}"/>\n'  # empty unless the annotators tied
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
    tie: str | None = None  # "tied: cat 1, dog 1" when asked again after a tie


def task_json(t: TaskInput) -> dict[str, Any]:
    task: dict[str, Any] = {
        # `tie` always present: the labeling config's header reads it
        "data": {TO_NAME: data_uri(t.image), "example_id": t.example_id, TIE: t.tie or ""},
        "meta": {"example_id": t.example_id, "stream": t.stream, "request_id": t.request_id},
    }
    if t.tie:
        task["meta"][TIE] = t.tie
    if t.suggestion is not None and not t.tie:
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
        w.writerow(["example_id", "label", "annotator", "stream", "request_id", "suggestion", TIE])
        for t in tasks:
            suggestion = "" if t.tie else t.suggestion or ""
            w.writerow([t.example_id, "", "", t.stream, t.request_id, suggestion, t.tie or ""])
    return json_path, csv_path


def _when(text: Any) -> datetime | None:
    """An ISO 8601 time in UTC; one without a zone is UTC. None when it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: before year 1 once in UTC
        return None


def _annotator(completed_by: Any, users: Mapping[int, str]) -> tuple[str, tuple[str, ...]]:
    """Who answered, as people know them: the email (or username) Label Studio gives
    with the annotation or the user directory has for its id; `user<id>` when neither
    says more. Second, the names the same person had in earlier imports (`user<id>`),
    so that re-reading an annotation under the better name writes nothing twice."""
    user_id = completed_by.get("id") if isinstance(completed_by, dict) else completed_by
    if isinstance(user_id, bool) or user_id is None or user_id == "":
        by_id = None
    else:
        by_id = f"user{user_id}"
    name = None
    if isinstance(completed_by, dict):
        name = next(
            (
                completed_by[key].strip()
                for key in ("email", "username")
                if isinstance(completed_by.get(key), str) and completed_by[key].strip()
            ),
            None,
        )
    if name is None and isinstance(user_id, int) and not isinstance(user_id, bool):
        name = users.get(user_id)
    if name is None:
        return by_id or UNKNOWN_ANNOTATOR, ()
    return name, (by_id,) if by_id else ()


def parse_label_studio_export(
    tasks: Any, origin: str, *, users: Mapping[int, str] | None = None
) -> tuple[list[Answer], list[Rejected], int]:
    """(answers, rejected rows, skipped) from Label Studio's JSON export (a list of
    tasks). `origin` names the file in messages; `users` (user id -> email or username,
    from Label Studio's user directory) names annotators the export gives by id only."""
    users = users or {}
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
            read = _read_annotation(ann, where, example_id, users)
            if read is None:
                skipped += 1
            elif isinstance(read, Rejected):
                rejected.append(read)
            else:
                answers.append(read)
    return answers, rejected, skipped


def _read_annotation(
    ann: Any, where: str, example_id: Any, users: Mapping[int, str]
) -> Answer | Rejected | None:
    """One annotation of the task at `where` as an answer, a rejected row, or None when
    it was skipped or cancelled."""
    at = f"{where} annotation {ann.get('id') if isinstance(ann, dict) else '?'}"
    if not isinstance(ann, dict):
        return Rejected(at, "malformed", "an annotation is not a JSON object")
    if ann.get("was_cancelled"):
        return None
    if not isinstance(example_id, str) or not example_id:
        return Rejected(at, "malformed", "the task has no example_id in meta or data")
    choices = [
        c
        for r in ann.get("result") or []
        if isinstance(r, dict) and r.get("type") == "choices"
        for c in (r.get("value") or {}).get("choices") or []
    ]
    if len(choices) != 1 or not isinstance(choices[0], str):
        return Rejected(
            at, "malformed", f"expected one chosen class, found {choices!r}", example_id
        )
    when = ann.get("updated_at") or ann.get("created_at")
    annotator, formerly = _annotator(ann.get("completed_by"), users)
    return Answer(
        example_id=example_id,
        label=choices[0],
        annotator=annotator,
        tool="label_studio",
        origin=at,
        act=f"annotation {ann.get('id')} at {when}",
        answered_at=_when(when),
        formerly=formerly,
    )


def read_label_studio_export(path: Path) -> tuple[list[Answer], list[Rejected], int]:
    try:
        tasks = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationFileError(
            f"{path}: not a readable Label Studio JSON export: {exc}"
        ) from exc
    return parse_label_studio_export(tasks, Path(path).name)


def parse_answers_csv(text: str, origin: str) -> tuple[list[Answer], list[Rejected], int]:
    """(answers, rejected rows, rows whose label is blank) from a CSV with the columns
    example_id,label and optional annotator (blank or absent: `unknown`) and timestamp
    (ISO 8601; without a zone: UTC). Text that is not CSV at all is refused as a whole
    (AnnotationFileError naming the line)."""
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
            f"{', '.join(reader.fieldnames or [])}); expected example_id,label and "
            "optionally annotator,timestamp"
        )
    answers: list[Answer] = []
    rejected: list[Rejected] = []
    blank = 0
    for n, row in enumerate(reader, start=2):  # line 1 is the header
        at = f"{origin} line {n}"
        if None in row:  # more fields than the header has
            rejected.append(Rejected(at, "malformed", "more fields than columns"))
            continue
        ex = (row.get("example_id") or "").strip()
        label = (row.get("label") or "").strip()
        who = (row.get("annotator") or "").strip() or UNKNOWN_ANNOTATOR
        if not label:
            blank += 1
            continue
        if not ex:
            rejected.append(
                Rejected(at, "malformed", "the example_id is blank: fill it in", None, label)
            )
            continue
        stamp = (row.get("timestamp") or "").strip()
        when = _when(stamp)
        if stamp and when is None:
            rejected.append(
                Rejected(
                    at,
                    "malformed",
                    f"timestamp {stamp!r} is not an ISO 8601 time (e.g. 2026-01-02T10:00:00, "
                    "UTC when it has no zone)",
                    ex,
                    label,
                )
            )
            continue
        answers.append(
            Answer(
                ex, label, who, "csv", at, act=f"at {stamp}" if stamp else None, answered_at=when
            )
        )
    return answers, rejected, blank


def read_answers_csv(path: Path) -> tuple[list[Answer], list[Rejected], int]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationFileError(f"{path}: cannot read the CSV: {exc}") from exc
    return parse_answers_csv(text, Path(path).name)
