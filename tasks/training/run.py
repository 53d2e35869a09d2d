"""One training run: load the data, claim a run folder, train teacher then student
(models/), and log everything to MLflow (params, config, curves, the model).

`train_and_log` reads top to bottom: the data and its snapshot, the MLflow run and what
goes in (`log_run_inputs`), the training in its run folder (`fit_in_run_dir`), and what
comes out (`log_run_outcome`). The MLflow logging sits beside the training, never inside
it: the loop (models/) reports through callbacks (`MlflowMetrics`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.data import DataSpec
from configs.tracking import MlflowConfig
from configs.train import LabelsConfig, TrainConfig
from models import Callback, TrainResult, TrainSettings, fit
from models.distributed import DistributedSettings, fit_distributed
from tasks.progress import stage_progress
from tasks.registry.model_format import log_classifier
from tasks.store import Store
from tasks.tracking import (
    code_version,
    ensure_experiment,
    loop_metric_name,
    snapshot_dataset,
    tidy,
)
from tasks.training.collapse import report_pseudo_label_collapse
from tasks.training.data import TrainingSet, load_training_data
from tasks.training.decoded_cache import cache_root
from tasks.training.run_dir import claim_run_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingInputs:
    """What one training run takes, built from a config by the flows
    (`flows.train.training_inputs`)."""

    data: DataSpec
    train: TrainConfig  # time travel, run and cache folders, the memory budget
    labels: LabelsConfig  # which labels training reads
    mlflow: MlflowConfig
    settings: TrainSettings  # the loop's settings (`Config.train_settings()`)
    # health.pseudo_label_precision_floor: the collapse verdict's floor on gold dev
    pseudo_label_precision_floor: float | None
    distributed: DistributedSettings  # `Config.distributed_settings()`
    params: dict[str, str]  # the run's MLflow params: the config keys that change the model
    config: dict[str, Any]  # the resolved config, logged as the run's config.json


def train_and_log(
    inputs: TrainingInputs, progress: Any | None = None, *, owner: str | None = None
) -> tuple[TrainSummary, TrainResult]:
    """Load data, train, and log to MLflow (params, config, curves, model). `owner` (the
    flow run id) names the run's checkpoint folder, so a restarted flow run resumes its
    own checkpoint. The MLflow run stays the caller's if one is active; otherwise one is
    opened and closed here."""
    store = Store(inputs.data.root)
    training = load_training_data(
        store, inputs.data, inputs.train, inputs.labels, run_id=owner or "train"
    )
    key = run_key(inputs.settings, training, inputs.data.root)
    snapshot_id = store.write_snapshot(
        training.train_ids, training.label_event_ids, purpose="train", run_id=owner or key
    )
    with mlflow_run(inputs.mlflow, f"train-{snapshot_id}") as run_id:
        log_run_inputs(inputs, training, store.uri, snapshot_id)
        callbacks: list[Callback] = [MlflowMetrics(inputs.data.classes)]
        if progress is not None:
            callbacks.append(ProgressCallback(progress))
        with claim_run_dir(Path(inputs.train.run_dir), key, owner) as run_dir:
            result = fit_in_run_dir(run_dir, inputs, training, callbacks, snapshot_id)
        summary = log_run_outcome(inputs, training, result, run_id, snapshot_id, run_dir)
    return summary, result


def run_key(settings: TrainSettings, training: TrainingSet, store_root: str) -> str:
    """What makes a checkpoint resumable: the same settings, data and store."""
    key = json.dumps(
        {"settings": repr(settings), "data": training.data.fingerprint(), "store": store_root},
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@contextmanager
def mlflow_run(tracking: MlflowConfig, name: str) -> Iterator[str]:
    """The id of the active MLflow run, or of one opened here (and ended on the way out,
    whatever happens) in the configured experiment."""
    import mlflow

    ensure_experiment(tracking.tracking_uri, tracking.experiment, tracking.artifact_root)
    active = mlflow.active_run()
    run = active or mlflow.start_run(run_name=name)
    try:
        yield run.info.run_id
    finally:
        if active is None:
            mlflow.end_run()


def log_run_inputs(
    inputs: TrainingInputs, training: TrainingSet, store_uri: str, snapshot_id: str
) -> None:
    """What goes in, to the active MLflow run: the params, the data snapshot as the run's
    dataset, the data's counts, tags (snapshot, versions) and the config as config.json."""
    import mlflow

    mlflow.log_params(inputs.params)
    mlflow.log_input(
        snapshot_dataset(store_uri, snapshot_id, f"training-{snapshot_id}"), context="training"
    )
    mlflow.log_params(
        {
            "data.n_human": training.n_human,
            "data.n_weak": training.n_weak,
            "data.n_model_influenced": training.n_model_influenced,
            "data.n_unlabeled": training.n_unlabeled,
            "data.n_gold_dev": len(training.gold_ids),
        }
    )
    as_of = inputs.train.as_of
    mlflow.set_tags(
        {
            "semilabel.snapshot_id": snapshot_id,
            "semilabel.student_from_step": str(inputs.settings.teacher_steps),
            **({"semilabel.as_of": as_of.isoformat()} if as_of else {}),
            **environment_tags("pending"),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(inputs.config, indent=2))
        mlflow.log_artifact(str(cfg_path))


def fit_in_run_dir(
    run_dir: Path,
    inputs: TrainingInputs,
    training: TrainingSet,
    callbacks: Sequence[Callback],
    snapshot_id: str,
) -> TrainResult:
    """Teacher then student, checkpointed in `run_dir`: in this process, or under
    torchrun when `train.distributed` asks for several (rank 0's rows reach the
    callbacks)."""
    import mlflow

    mlflow.set_tag("semilabel.run_dir", str(run_dir))
    meta = {"code_version": code_version(), "snapshot_id": snapshot_id}
    spread = inputs.distributed
    # the pre-phase's weights, beside the decoded images: reused while the pool is
    pretrain_cache = cache_root(inputs.train.cache_dir, inputs.data.root) / "pretrain"
    if spread.world_size > 1:
        mlflow.set_tag("semilabel.world_size", str(spread.world_size))
        return fit_distributed(
            training.data,
            inputs.settings,
            spread,
            run_dir,
            callbacks=callbacks,
            checkpoint_meta=meta,
            pretrain_cache=pretrain_cache,
        )
    return fit(
        training.data,
        inputs.settings,
        run_dir=run_dir,
        callbacks=callbacks,
        checkpoint_meta=meta,
        pretrain_cache=pretrain_cache,
    )


def log_run_outcome(
    inputs: TrainingInputs,
    training: TrainingSet,
    result: TrainResult,
    run_id: str,
    snapshot_id: str,
    run_dir: Path,
) -> TrainSummary:
    """What comes out, to the active MLflow run: the device, the model, the pseudo-label
    collapse verdict, and the summary as the run's description."""
    import mlflow

    mlflow.set_tag("semilabel.device", result.device)
    classes = inputs.data.classes
    model_uri = log_classifier(result.model, classes, training.data.x_lb)
    last = _last_eval(result)
    collapse = report_pseudo_label_collapse(
        result, inputs.settings, classes, training, inputs.pseudo_label_precision_floor
    )
    summary = TrainSummary(
        mlflow_run_id=run_id,
        model_uri=model_uri,
        snapshot_id=snapshot_id,
        steps=result.steps,
        resumed_from=result.resumed_from,
        device=result.device,
        n_human=training.n_human,
        n_weak=training.n_weak,
        n_model_influenced=training.n_model_influenced,
        n_unlabeled=training.n_unlabeled,
        n_gold_dev=len(training.gold_ids),
        n_gold_duplicates=training.n_gold_duplicates,
        teacher_gold_accuracy=last.get("eval_teacher_accuracy", float("nan")),
        student_gold_accuracy=last.get(
            "eval_student_accuracy", last.get("eval_teacher_accuracy", float("nan"))
        ),
        pseudo_label_precision=last.get("eval_pseudo_label_precision", float("nan")),
        elapsed_s=result.elapsed_s,
        run_dir=str(run_dir),
        pseudo_label_coverage=last.get("eval_pseudo_label_coverage", float("nan")),
        pseudo_labeling_off_at=result.pseudo_labeling_off_at,
        pseudo_label_collapse=collapse,
    )
    mlflow.set_tag("mlflow.note.content", summary.markdown())
    return summary


def _last_eval(result: TrainResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in result.history:
        out.update({k: v for k, v in row.items() if k.startswith("eval_")})
    return out


# -- what the loop reports, and the run's record -------------------------------------------


def environment_tags(device: str) -> dict[str, str]:
    """Where a run ran: the code version, the device and the library versions."""
    import mlflow
    import torchvision

    return {
        "semilabel.code_version": code_version(),
        "semilabel.device": device,
        "versions.python": platform.python_version(),
        "versions.torch": torch.__version__,
        "versions.torchvision": torchvision.__version__,
        "versions.mlflow": mlflow.__version__,
    }


class MlflowMetrics(Callback):
    """Send the loop's metric rows to the active MLflow run, under grouped names
    (`train/`, `eval_gold/`, `pseudo_labels/`; see `tasks.tracking`)."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        import mlflow

        self._mlflow = mlflow
        self._classes = classes

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        named = {
            name: tidy(v)
            for k, v in metrics.items()
            if v == v and (name := loop_metric_name(k, self._classes)) is not None
        }  # NaN -> not logged
        if named:
            self._mlflow.log_metrics(named, step=step)


class ProgressCallback(Callback):
    def __init__(self, progress: Any) -> None:
        self.progress = progress

    def on_progress(self, step: int, total: int) -> None:
        self.progress.update(step, total=total)  # the loop's schedule (seeded: longer)


@dataclass(frozen=True)
class TrainSummary:
    mlflow_run_id: str
    model_uri: str
    snapshot_id: str
    steps: int
    resumed_from: int
    device: str
    n_human: int
    n_weak: int
    n_model_influenced: int
    n_unlabeled: int
    n_gold_dev: int
    n_gold_duplicates: int
    teacher_gold_accuracy: float
    student_gold_accuracy: float
    pseudo_label_precision: float
    elapsed_s: float
    run_dir: str
    pseudo_label_coverage: float = float("nan")
    pseudo_labeling_off_at: int | None = None  # the feedback-loop guard's step, if it fired
    pseudo_label_collapse: str = "not measured"  # the verdict (`CollapseVerdict.line`)

    def markdown(self) -> str:
        """The run's description until a gate decides on it (`semilabel retrain`
        replaces it with the decision)."""
        rows = "\n".join(f"| {r['metric'].strip()} | {r['value']} |" for r in self.rows())
        return (
            f"**TRAINED, not gated yet**: student accuracy on gold dev "
            f"{self.student_gold_accuracy:.4f} (teacher {self.teacher_gold_accuracy:.4f}). "
            "`semilabel retrain` gates, registers and promotes a candidate.\n\n"
            f"| | |\n|---|---:|\n{rows}\n\nData: training snapshot `{self.snapshot_id}`.\n"
        )

    def rows(self) -> list[dict[str, object]]:
        return [
            {"metric": "labeled (human)", "value": self.n_human},
            {"metric": "labeled (weak, weighted)", "value": self.n_weak},
            {"metric": "  of which model-influenced", "value": self.n_model_influenced},
            {"metric": "unlabeled", "value": self.n_unlabeled},
            {"metric": "gold dev (training curves only)", "value": self.n_gold_dev},
            {"metric": "copies of gold images left out", "value": self.n_gold_duplicates},
            {"metric": "steps", "value": self.steps},
            {"metric": "resumed from step", "value": self.resumed_from},
            {"metric": "device", "value": self.device},
            {"metric": "teacher gold-dev accuracy", "value": round(self.teacher_gold_accuracy, 4)},
            {"metric": "student gold-dev accuracy", "value": round(self.student_gold_accuracy, 4)},
            {
                "metric": "pseudo-label precision (gold dev)",
                "value": round(self.pseudo_label_precision, 4),
            },
            {
                "metric": "pseudo-labeling",
                "value": "on"
                if self.pseudo_labeling_off_at is None
                else f"switched off at step {self.pseudo_labeling_off_at} (precision below floor)",
            },
            {"metric": "pseudo-label collapse", "value": self.pseudo_label_collapse},
            {"metric": "seconds", "value": round(self.elapsed_s, 1)},
            {"metric": "MLflow run", "value": self.mlflow_run_id},
            {"metric": "data snapshot", "value": self.snapshot_id},
        ]


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="train-candidate", cache_policy=NO_CACHE)
def train_candidate(inputs: TrainingInputs, owner: str | None = None) -> TrainSummary:
    """Train teacher and student on the store's data and log the run to MLflow."""
    bar = stage_progress("train", inputs.settings.total_steps)
    summary, _ = train_and_log(inputs, progress=bar, owner=owner)
    bar.finish(summary.steps)
    get_run_logger().info(
        "trained %d steps on %s: gold-dev accuracy teacher %.4f, student %.4f (MLflow run %s)",
        summary.steps,
        summary.device,
        summary.teacher_gold_accuracy,
        summary.student_gold_accuracy,
        summary.mlflow_run_id,
    )
    return summary


@task(name="publish-train-summary", cache_policy=NO_CACHE)
def publish_train_summary(summary: TrainSummary) -> None:
    create_table_artifact(
        table=summary.rows(),
        key="train-summary",
        description=f"Training run {summary.mlflow_run_id}",
    )
