"""PyTorch only: networks, batched augmentations, losses, EMA and the teacher–student
loop. Nothing here imports Prefect or MLflow, so it runs and benchmarks alone."""

from models.augment import AugmentSettings, strong, weak
from models.ema import ModelEMA
from models.losses import (
    DistributionAlignment,
    FixedThreshold,
    FlexMatchThreshold,
    consistency_loss,
    supervised_loss,
)
from models.networks import NETWORKS, build_network
from models.train import (
    Callback,
    Classifier,
    TrainData,
    TrainResult,
    TrainSettings,
    fit,
    predict_proba,
    resolve_device,
)

__all__ = [
    "NETWORKS",
    "AugmentSettings",
    "Callback",
    "Classifier",
    "DistributionAlignment",
    "FixedThreshold",
    "FlexMatchThreshold",
    "ModelEMA",
    "TrainData",
    "TrainResult",
    "TrainSettings",
    "build_network",
    "consistency_loss",
    "fit",
    "predict_proba",
    "resolve_device",
    "strong",
    "supervised_loss",
    "weak",
]
