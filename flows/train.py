"""The train flow: teacher then student on the store's data, logged to MLflow.

semilabel train
semilabel train --set train.device=cuda --set train.student_steps=5000
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import Config, load_config
from tasks.tracking import logged_config, model_params
from tasks.training import TrainingInputs, TrainSummary, publish_train_summary, train_candidate


@flow(name="train")
def train(config_path: str | None = None, overrides: dict[str, Any] | None = None) -> TrainSummary:
    """Train a candidate model from the store and log it to MLflow.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file, e.g. {"train.device": "cpu"}.
    """
    cfg = load_config(config_path, overrides)
    summary = train_candidate(training_inputs(cfg), owner=str(flow_run.id or "local"))
    publish_train_summary(summary)
    return summary


def training_inputs(cfg: Config) -> TrainingInputs:
    """What a training run takes from the config (the retrain flow's too)."""
    return TrainingInputs(
        data=cfg.data_spec(),
        train=cfg.train,
        labels=cfg.labels,
        mlflow=cfg.mlflow,
        settings=cfg.train_settings(),
        pseudo_label_precision_floor=cfg.health.pseudo_label_precision_floor,
        distributed=cfg.distributed_settings(),
        params=model_params(cfg.model_dump(mode="json")),
        config=logged_config(cfg.model_dump(mode="json")),
    )


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("train", train))
