"""The weak-labeling stage: build the configured labeling functions, apply them over the
store in shards, analyse them on gold, combine their votes with the label model, write
`label_model` events, and log the analysis to MLflow and Prefect."""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from configs.schema import Config
from tasks.progress import stage_progress
from tasks.store import EXAMPLES, Store
from tasks.tracking import ensure_experiment
from tasks.weak_labeling.analysis import WeakLabelSummary, _r, analyse_and_combine
from tasks.weak_labeling.applier import apply_in_shards
from tasks.weak_labeling.functions import LabelingFunctionError, build_functions

log = logging.getLogger(__name__)


def weak_label_store(cfg: Config, run_id: str, progress: Any | None = None) -> WeakLabelSummary:
    """Build the configured functions, apply them over the store, analyse them on gold,
    combine their votes, write `label_model` events, and log the analysis to MLflow."""
    import dataclasses

    import mlflow

    store = Store(cfg.store.root)
    if not cfg.weak_labeling.functions:
        raise LabelingFunctionError(
            "weak_labeling.functions is empty: configure at least one "
            "labeling function (see README, Weak labeling)"
        )
    champion = _champion_or_none(cfg)
    functions = build_functions(store, cfg, champion)
    matrix = apply_in_shards(
        store,
        cfg,
        functions,
        run_id,
        progress=progress.update if progress is not None else None,
    )
    summary = analyse_and_combine(store, cfg, matrix, functions, run_id)
    summary = dataclasses.replace(
        summary, matrix_path=matrix.path, elapsed_s=summary.elapsed_s + matrix.elapsed_s
    )
    ensure_experiment(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.mlflow.artifact_root)
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
        mlflow.log_metrics(
            {
                k: v
                for k, v in {
                    "label_model.coverage": summary.coverage,
                    "label_model.gold_accuracy": summary.gold_accuracy,
                    "majority_vote.gold_accuracy": summary.gold_accuracy_majority,
                    "label_model.events_written": summary.events_written,
                    "label_model.labels_withdrawn": summary.labels_withdrawn,
                }.items()
                if v == v
            }
        )
        mlflow.log_dict({"functions": summary.table()}, "lf_analysis.json")
    return summary


def _champion_or_none(cfg: Config) -> Any:
    if not any(s.embedding == "champion" for s in cfg.weak_labeling.functions):
        return None
    from tasks.registry.aliases import RegistryRef, champion_version
    from tasks.registry.model_format import load_classifier

    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    version = champion_version(ref)
    if version is None:
        log.info("no champion yet: champion embeddings fall back to PCA")
        return None
    return load_classifier(
        ref.version_uri(version), ref.tracking_uri, trust_pickle=cfg.mlflow.trust_pickled_models
    )


# -- inside a flow ---------------------------------------------------------------------


def weak_label_examples(cfg: Config, run_id: str) -> WeakLabelSummary:
    """Inside a flow: apply the labeling functions (one mapped `apply-labeling-functions`
    task per shard on the configured task runner), fit the label model, write
    `label_model` events, and publish the LF analysis as a table artifact."""
    bar = stage_progress("weak-label", Store(cfg.store.root).count(EXAMPLES))
    summary = weak_label_store(cfg, run_id, progress=bar)
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
        _r(summary.gold_accuracy),
        _r(summary.gold_accuracy_majority),
    )
    return summary
