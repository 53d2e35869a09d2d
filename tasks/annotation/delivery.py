"""Getting a batch of annotation requests to people, by `sampling.mode`: written as files
(`export`), pushed to Label Studio (`label_studio`), or answered at once by the
simulated annotator (`simulate`, the embedded default only); and their answers back in
(`annotate pull` / `annotate import`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.data import DataSpec, SourceConfig, TaxonomyConfig
from configs.redact import redact_text
from configs.sampling import LabelStudioConfig, SamplingConfig
from tasks.annotation.answers import ImportSummary, import_answers
from tasks.annotation.files import (
    AnnotationFileError,
    TaskInput,
    read_answers_csv,
    read_label_studio_export,
    write_exports,
)
from tasks.sampling import SamplingResult
from tasks.sampling.requests import RequestLog
from tasks.store import EXAMPLES, Store, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnotationInputs:
    """What annotation takes from the config, built by the flows
    (`flows.annotate.annotation_inputs`)."""

    data: DataSpec  # the store, the taxonomy (classes and version), the seed
    sampling: SamplingConfig  # mode, export_dir, simulate_error_rate
    label_studio: LabelStudioConfig
    source: SourceConfig  # simulate: only the embedded MNIST source has the truth


@dataclass(frozen=True)
class Delivery:
    mode: str
    batch_id: str
    tasks: int
    where: str  # files written, project URL, or the import's summary
    imported: ImportSummary | None = None
    sampled: tuple[dict[str, object], ...] = ()  # what sampling chose, when it did

    @property
    def shown_where(self) -> str:
        """`where` as logs, artifacts and summaries show it: a Label Studio URL without
        the credentials it may carry."""
        return redact_text(self.where)

    def summary(self) -> str:
        return f"{self.tasks} requests ({self.mode}): {self.shown_where}"

    def rows(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = [
            *self.sampled,
            {"metric": "delivery", "value": self.mode},
            {"metric": "tasks", "value": self.tasks},
            {"metric": "where", "value": self.shown_where},
        ]
        return rows + (self.imported.rows() if self.imported else [])


def task_inputs(store: Store, requests: list[dict]) -> list[TaskInput]:
    """The requests with their images, in request order. Gold requests never carry a
    suggestion: it would pull the holdout's labels toward the model. A request made
    again after a tie shows the tie instead of a suggestion."""
    ids = [r["example_id"] for r in requests]
    images: dict[str, bytes] = {}
    if ids:
        for rb in store.iter_batches(
            EXAMPLES, ["example_id", "image"], filter=pc.field("example_id").isin(ids)
        ):
            images.update(zip(rb.column(0).to_pylist(), rb.column(1).to_pylist(), strict=True))
    return [
        TaskInput(
            request_id=r["request_id"],
            example_id=r["example_id"],
            stream=r["stream"],
            image=images[r["example_id"]],
            suggestion=None if r["stream"] == "gold" else r.get("suggestion"),
            score=r.get("suggestion_confidence"),
            model_version=r["model_version"]
            if r["stream"] != "review"
            else "current label (under review)",
            tie=r.get("tie"),
        )
        for r in requests
    ]


def open_request_rows(store: Store) -> list[dict]:
    """Open requests, ties asked again included (see `tasks.sampling.requests`)."""
    return RequestLog.read(store).open_requests()


def deliver(
    store: Store, inputs: AnnotationInputs, result: SamplingResult, run_id: str
) -> Delivery:
    """Hand a sampled batch to people as `sampling.mode` says."""
    mode, batch = inputs.sampling.mode, result.batch_id
    tasks = task_inputs(store, result.requests)
    if mode == "off" or (mode == "export" and not tasks):
        delivered = Delivery(mode, batch, len(tasks), "recorded only (sampling.mode: off)")
    elif mode == "export":
        json_path, csv_path = write_exports(tasks, Path(inputs.sampling.export_dir), batch)
        delivered = Delivery(mode, batch, len(tasks), f"{json_path} and {csv_path}")
    elif mode == "label_studio":
        delivered = _push_batch(inputs, batch, tasks)
    elif mode == "simulate":
        delivered = _simulate_answers(store, inputs, result, run_id, n_tasks=len(tasks))
    else:
        raise ValueError(f"unknown sampling.mode {mode!r}")
    return dataclasses.replace(delivered, sampled=tuple(result.rows()))


def _push_batch(inputs: AnnotationInputs, batch: str, tasks: list[TaskInput]) -> Delivery:
    """mode=label_studio: the batch's tasks pushed to the Label Studio project."""
    from tasks.annotation.label_studio import LabelStudio

    ls = LabelStudio.connect(inputs.label_studio)
    project = ls.ensure_project(inputs.label_studio.project, inputs.data.classes)
    ls.push(project, tasks)
    return Delivery("label_studio", batch, len(tasks), f"{ls.url}/projects/{project}")


def _simulate_answers(
    store: Store, inputs: AnnotationInputs, result: SamplingResult, run_id: str, *, n_tasks: int
) -> Delivery:
    """mode=simulate: the simulated annotator answers the batch from the MNIST truth."""
    from tasks.annotation.simulated import mnist5k_truth, simulated_answers

    if inputs.source.kind != "mnist5k":
        raise ValueError(
            "sampling.mode=simulate answers from the embedded MNIST truth: it needs "
            "source.kind=mnist5k; use export or label_studio for your own data"
        )
    taxonomy = inputs.data.taxonomy
    answers = simulated_answers(
        result.requests,
        mnist5k_truth(),
        taxonomy.classes,
        inputs.sampling.simulate_error_rate,
        np.random.default_rng(inputs.data.seed),
    )
    summary = import_answers(store, answers, [], taxonomy, tool="simulated", run_id=run_id)
    return Delivery(
        "simulate", result.batch_id, n_tasks, "answered by the simulated annotator", summary
    )


def export_open(store: Store, export_dir: str | Path) -> Delivery:
    """`annotate export`: every open request (the backlog) as Label Studio tasks + CSV
    in `export_dir`."""
    rows = open_request_rows(store)
    batch = f"open-{utcnow():%Y%m%dT%H%M%S}"
    if not rows:
        return Delivery("export", batch, 0, "no open requests: run `semilabel sample` first")
    json_path, csv_path = write_exports(task_inputs(store, rows), Path(export_dir), batch)
    return Delivery("export", batch, len(rows), f"{json_path} and {csv_path}")


def push_open(store: Store, label_studio: LabelStudioConfig, taxonomy: TaxonomyConfig) -> Delivery:
    """`annotate push`: open requests the Label Studio project does not have yet (a tie
    asked again is a new task, showing the tie)."""
    from tasks.annotation.label_studio import LabelStudio

    ls = LabelStudio.connect(label_studio)
    project = ls.ensure_project(label_studio.project, taxonomy.classes)
    there = {
        (t.get("meta") or {}).get("request_id") for t in ls.export(project) if isinstance(t, dict)
    }
    rows = [r for r in open_request_rows(store) if r["request_id"] not in there]
    ls.push(project, task_inputs(store, rows))
    return Delivery("label_studio", "open", len(rows), f"{ls.url}/projects/{project}")


def pull_answers(
    store: Store, label_studio: LabelStudioConfig, taxonomy: TaxonomyConfig, run_id: str
) -> ImportSummary:
    """`annotate pull`: the project's annotations into the label log."""
    from tasks.annotation.label_studio import LabelStudio

    ls = LabelStudio.connect(label_studio)
    project = ls.ensure_project(label_studio.project, taxonomy.classes)
    answers, rejected, skipped = ls.pull(project)
    return import_answers(
        store, answers, rejected, taxonomy, tool="label_studio", run_id=run_id, skipped=skipped
    )


def import_file(store: Store, taxonomy: TaxonomyConfig, path: Path, run_id: str) -> ImportSummary:
    """`annotate import`: a Label Studio JSON export or a CSV of answers."""
    path = Path(path)
    skipped = blank = 0
    if path.suffix.lower() == ".json":
        answers, rejected, skipped = read_label_studio_export(path)
        tool = "label_studio"
    elif path.suffix.lower() in (".csv", ".tsv"):
        answers, rejected, blank = read_answers_csv(path)
        tool = "csv"
    else:
        raise AnnotationFileError(f"{path}: expected a Label Studio .json export or a .csv")
    return import_answers(
        store, answers, rejected, taxonomy, tool=tool, run_id=run_id, skipped=skipped, blank=blank
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="deliver-annotation-requests", cache_policy=NO_CACHE)
def deliver_requests(inputs: AnnotationInputs, result: SamplingResult, run_id: str) -> Delivery:
    delivery = deliver(Store(inputs.data.root), inputs, result, run_id)
    get_run_logger().info("%d annotation tasks: %s", delivery.tasks, delivery.shown_where)
    create_table_artifact(
        table=delivery.rows(), key="annotation-delivery", description=delivery.shown_where[:200]
    )
    return delivery


@task(name="import-annotations", cache_policy=NO_CACHE)
def import_annotations(inputs: AnnotationInputs, path: str, run_id: str) -> ImportSummary:
    summary = import_file(Store(inputs.data.root), inputs.data.taxonomy, Path(path), run_id)
    get_run_logger().info(
        "imported %d answers: %d events written, %d quarantined, %d ties asked again, agreement %s",
        summary.answers,
        summary.events_written,
        sum(summary.quarantined.values()),
        len(summary.agreement.ties),
        summary.agreement.alpha,
    )
    create_table_artifact(table=summary.rows(), key="annotation-import", description=str(path))
    return summary


@task(name="annotate-export", cache_policy=NO_CACHE)
def export_open_requests(inputs: AnnotationInputs) -> Delivery:
    delivery = export_open(Store(inputs.data.root), inputs.sampling.export_dir)
    get_run_logger().info("%d open requests exported: %s", delivery.tasks, delivery.shown_where)
    return delivery


@task(name="annotate-push", cache_policy=NO_CACHE)
def push_open_requests(inputs: AnnotationInputs) -> Delivery:
    delivery = push_open(Store(inputs.data.root), inputs.label_studio, inputs.data.taxonomy)
    get_run_logger().info("%d tasks pushed to %s", delivery.tasks, delivery.shown_where)
    return delivery


@task(name="annotate-pull", cache_policy=NO_CACHE)
def pull_annotations(inputs: AnnotationInputs, run_id: str) -> ImportSummary:
    summary = pull_answers(
        Store(inputs.data.root), inputs.label_studio, inputs.data.taxonomy, run_id
    )
    create_table_artifact(
        table=summary.rows(), key="annotation-import", description="Label Studio pull"
    )
    get_run_logger().info(
        "pulled %d answers: %d events written, %d quarantined",
        summary.answers,
        summary.events_written,
        sum(summary.quarantined.values()),
    )
    return summary
