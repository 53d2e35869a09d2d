"""The weak-labeling stage: build the configured labeling functions, apply them over the
store in shards, analyse them on gold, combine their votes with the label model, write
`label_model` events, and log the analysis to MLflow and Prefect."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from configs.tracking import MlflowConfig
from configs.weak_labeling import WeakLabelingConfig
from tasks.progress import stage_progress
from tasks.store import EXAMPLES, Store
from tasks.tracking import ensure_experiment
from tasks.weak_labeling.analysis import WeakLabelSummary, analyse_and_combine, as_shown
from tasks.weak_labeling.applier import apply_in_shards
from tasks.weak_labeling.functions import LabelingFunctionError, build_functions
from tasks.weak_labeling.inputs import WeakLabelInputs

log = logging.getLogger(__name__)


def weak_label_store(
    inputs: WeakLabelInputs, run_id: str, progress: Any | None = None
) -> WeakLabelSummary:
    """Build the configured functions, apply them over the store, analyse them on gold,
    combine their votes, write `label_model` events, and log the analysis to MLflow."""
    data, wl = inputs.data, inputs.weak_labeling
    store = Store(data.root)
    _require_functions(wl)
    functions = build_functions(store, inputs, _champion_or_none(wl, inputs.mlflow))
    matrix = apply_in_shards(
        store,
        data,
        wl,
        functions,
        run_id,
        progress=progress.update if progress is not None else None,
    )
    summary = analyse_and_combine(store, data, wl, matrix, functions, run_id)
    summary = dataclasses.replace(
        summary, matrix_path=matrix.path, elapsed_s=summary.elapsed_s + matrix.elapsed_s
    )
    log_analysis(summary, inputs.mlflow, run_id)
    return summary


def _require_functions(wl: WeakLabelingConfig) -> None:
    if not wl.functions:
        raise LabelingFunctionError(
            "weak_labeling.functions is empty: configure at least one "
            "labeling function (see README, Weak labeling)"
        )


def _champion_or_none(wl: WeakLabelingConfig, mlflow: MlflowConfig) -> Any:
    """The champion model when a function embeds with it; None without one."""
    if not any(s.embedding == "champion" for s in wl.functions):
        return None
    from tasks.registry.aliases import RegistryRef, champion_version
    from tasks.registry.model_format import load_classifier

    ref = RegistryRef(mlflow.tracking_uri, mlflow.model_name)
    version = champion_version(ref)
    if version is None:
        log.info("no champion yet: champion embeddings fall back to PCA")
        return None
    return load_classifier(
        ref.version_uri(version), ref.tracking_uri, trust_pickle=mlflow.trust_pickled_models
    )


def log_analysis(summary: WeakLabelSummary, mlflow_cfg: MlflowConfig, run_id: str) -> None:
    """An MLflow run `weak-label-<run id>` with each function's and the label model's
    metrics (NaN ones left out) and the analysis table as `lf_analysis.json`."""
    import mlflow

    ensure_experiment(mlflow_cfg.tracking_uri, mlflow_cfg.experiment, mlflow_cfg.artifact_root)
    with mlflow.start_run(
        run_name=f"weak-label-{run_id[:8]}", tags={"semilabel.stage": "weak_label"}
    ):
        for f in summary.functions:
            metrics = {
                "coverage": f.coverage,
                "overlap": f.overlap,
                "conflict": f.conflict,
                "gold_accuracy": f.gold_accuracy,
                "quarantined": float(f.quarantined),
            }
            mlflow.log_metrics({f"lf.{f.name}.{k}": v for k, v in metrics.items() if v == v})
        metrics = {
            "label_model.coverage": summary.coverage,
            "label_model.gold_accuracy": summary.gold_accuracy,
            "majority_vote.gold_accuracy": summary.gold_accuracy_majority,
            "label_model.events_written": summary.events_written,
            "label_model.labels_withdrawn": summary.labels_withdrawn,
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})
        mlflow.log_dict({"functions": summary.table()}, "lf_analysis.json")


# -- inside a flow ---------------------------------------------------------------------


def weak_label_examples(inputs: WeakLabelInputs, run_id: str) -> WeakLabelSummary:
    """Inside a flow: apply the labeling functions (one mapped `apply-labeling-functions`
    task per shard on the configured task runner), fit the label model, write
    `label_model` events, and publish the LF analysis as a table artifact."""
    bar = stage_progress("weak-label", Store(inputs.data.root).count(EXAMPLES))
    summary = weak_label_store(inputs, run_id, progress=bar)
    bar.finish(summary.n_rows)
    create_table_artifact(
        table=summary.table(),
        key="lf-analysis",
        description="Labeling functions: coverage, overlap, conflict, accuracy on gold",
    )
    get_run_logger().info(
        "weak labels: %d events (%d already present, %d withdrawn), coverage %.3f, gold "
        "accuracy %s (majority vote %s)",
        summary.events_written,
        summary.events_already_present,
        summary.labels_withdrawn,
        summary.coverage,
        as_shown(summary.gold_accuracy),
        as_shown(summary.gold_accuracy_majority),
    )
    return summary
