"""What the sampling stage takes from the config, in one frozen value: a flow builds it
(`flows.sample.sampling_inputs`), the stage reads only these sections."""

from __future__ import annotations

from dataclasses import dataclass

from configs.data import DataSpec
from configs.sampling import SamplingConfig
from configs.tracking import MlflowConfig
from configs.train import LabelsConfig, TrainConfig
from models import TrainSettings


@dataclass(frozen=True)
class SamplingInputs:
    """The data, the sampling plan, and what scoring the pool needs: the champion's
    registry, or on a cold start how a teacher reads the store and trains."""

    data: DataSpec
    sampling: SamplingConfig  # strategy, budgets, cold-start steps, review folds
    labels: LabelsConfig  # how the current labels resolve (review stream, cold start)
    mlflow: MlflowConfig  # where the champion is registered
    train: TrainConfig  # cold start: how the teacher reads the store
    settings: TrainSettings  # cold start: the teacher's settings (`Config.train_settings()`)
