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

from configs.redact import redact_text
from configs.schema import Config
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


def deliver(store: Store, cfg: Config, result: SamplingResult, run_id: str) -> Delivery:
    """Hand a sampled batch to people as `sampling.mode` says."""
    return dataclasses.replace(_deliver(store, cfg, result, run_id), sampled=tuple(result.rows()))


def _deliver(store: Store, cfg: Config, result: SamplingResult, run_id: str) -> Delivery:
    mode = cfg.sampling.mode
    inputs = task_inputs(store, result.requests)
    if mode == "export" or mode == "off":
        if mode == "off" or not inputs:
            return Delivery(
                mode, result.batch_id, len(inputs), "recorded only (sampling.mode: off)"
            )
        json_path, csv_path = write_exports(inputs, Path(cfg.sampling.export_dir), result.batch_id)
        return Delivery(mode, result.batch_id, len(inputs), f"{json_path} and {csv_path}")
    if mode == "label_studio":
        from tasks.annotation.label_studio import LabelStudio

        ls = LabelStudio.connect(cfg.label_studio)
        project = ls.ensure_project(cfg.label_studio.project, tuple(cfg.taxonomy.classes))
        ls.push(project, inputs)
        return Delivery(mode, result.batch_id, len(inputs), f"{ls.url}/projects/{project}")
    if mode == "simulate":
        from tasks.annotation.simulated import mnist5k_truth, simulated_answers

        if cfg.source.kind != "mnist5k":
            raise ValueError(
                "sampling.mode=simulate answers from the embedded MNIST truth: it needs "
                "source.kind=mnist5k; use export or label_studio for your own data"
            )
        rng = np.random.default_rng(cfg.seed)
        answers = simulated_answers(
            result.requests,
            mnist5k_truth(),
            tuple(cfg.taxonomy.classes),
            cfg.sampling.simulate_error_rate,
            rng,
        )
        summary = import_answers(
            store,
            answers,
            [],
            classes=tuple(cfg.taxonomy.classes),
            taxonomy_version=cfg.taxonomy.version,
            tool="simulated",
            run_id=run_id,
        )
        return Delivery(
            mode, result.batch_id, len(inputs), "answered by the simulated annotator", summary
        )
    raise ValueError(f"unknown sampling.mode {mode!r}")


def export_open(store: Store, cfg: Config) -> Delivery:
    """`annotate export`: every open request (the backlog) as Label Studio tasks + CSV."""
    rows = open_request_rows(store)
    batch = f"open-{utcnow():%Y%m%dT%H%M%S}"
    if not rows:
        return Delivery("export", batch, 0, "no open requests: run `semilabel sample` first")
    json_path, csv_path = write_exports(
        task_inputs(store, rows), Path(cfg.sampling.export_dir), batch
    )
    return Delivery("export", batch, len(rows), f"{json_path} and {csv_path}")


def push_open(store: Store, cfg: Config) -> Delivery:
    """`annotate push`: open requests the Label Studio project does not have yet (a tie
    asked again is a new task, showing the tie)."""
    from tasks.annotation.label_studio import LabelStudio

    ls = LabelStudio.connect(cfg.label_studio)
    project = ls.ensure_project(cfg.label_studio.project, tuple(cfg.taxonomy.classes))
    there = {
        (t.get("meta") or {}).get("request_id") for t in ls.export(project) if isinstance(t, dict)
    }
    rows = [r for r in open_request_rows(store) if r["request_id"] not in there]
    ls.push(project, task_inputs(store, rows))
    return Delivery("label_studio", "open", len(rows), f"{ls.url}/projects/{project}")


def pull_answers(store: Store, cfg: Config, run_id: str) -> ImportSummary:
    """`annotate pull`: the project's annotations into the label log."""
    from tasks.annotation.label_studio import LabelStudio

    ls = LabelStudio.connect(cfg.label_studio)
    project = ls.ensure_project(cfg.label_studio.project, tuple(cfg.taxonomy.classes))
    answers, rejected, skipped = ls.pull(project)
    return import_answers(
        store,
        answers,
        rejected,
        classes=tuple(cfg.taxonomy.classes),
        taxonomy_version=cfg.taxonomy.version,
        tool="label_studio",
        run_id=run_id,
        skipped=skipped,
    )


def import_file(store: Store, cfg: Config, path: Path, run_id: str) -> ImportSummary:
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
        store,
        answers,
        rejected,
        classes=tuple(cfg.taxonomy.classes),
        taxonomy_version=cfg.taxonomy.version,
        tool=tool,
        run_id=run_id,
        skipped=skipped,
        blank=blank,
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="deliver-annotation-requests", cache_policy=NO_CACHE)
def deliver_requests(cfg: Config, result: SamplingResult, run_id: str) -> Delivery:
    delivery = deliver(Store(cfg.store.root), cfg, result, run_id)
    get_run_logger().info("%d annotation tasks: %s", delivery.tasks, delivery.shown_where)
    create_table_artifact(
        table=delivery.rows(), key="annotation-delivery", description=delivery.shown_where[:200]
    )
    return delivery


@task(name="import-annotations", cache_policy=NO_CACHE)
def import_annotations(cfg: Config, path: str, run_id: str) -> ImportSummary:
    summary = import_file(Store(cfg.store.root), cfg, Path(path), run_id)
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
def export_open_requests(cfg: Config) -> Delivery:
    delivery = export_open(Store(cfg.store.root), cfg)
    get_run_logger().info("%d open requests exported: %s", delivery.tasks, delivery.shown_where)
    return delivery


@task(name="annotate-push", cache_policy=NO_CACHE)
def push_open_requests(cfg: Config) -> Delivery:
    delivery = push_open(Store(cfg.store.root), cfg)
    get_run_logger().info("%d tasks pushed to %s", delivery.tasks, delivery.shown_where)
    return delivery


@task(name="annotate-pull", cache_policy=NO_CACHE)
def pull_annotations(cfg: Config, run_id: str) -> ImportSummary:
    summary = pull_answers(Store(cfg.store.root), cfg, run_id)
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
