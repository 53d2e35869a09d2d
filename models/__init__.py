"""PyTorch only: networks, batched augmentations, losses, EMA and the teacher–student
loop. Nothing here imports Prefect or MLflow, so it runs and benchmarks alone."""

from models.augment import AugmentSettings, strong, weak
from models.ema import ModelEMA
from models.losses import DistributionAlignment, consistency_loss, supervised_loss
from models.networks import NETWORKS, build_network
from models.thresholds import (
    FixedThreshold,
    FlexMatchThreshold,
    FreeMatchThreshold,
    SoftMatchWeight,
    make_threshold,
)
from models.train import (
    Callback,
    Classifier,
    ClassifierConfig,
    StepOutput,
    TrainData,
    TrainResult,
    TrainSettings,
    UnsafeCheckpointError,
    build_classifier,
    fit,
    load_checkpoint,
    predict_proba,
    resolve_device,
    student_step,
)

__all__ = [
    "NETWORKS",
    "AugmentSettings",
    "Callback",
    "Classifier",
    "ClassifierConfig",
    "DistributionAlignment",
    "FixedThreshold",
    "FlexMatchThreshold",
    "FreeMatchThreshold",
    "ModelEMA",
    "SoftMatchWeight",
    "StepOutput",
    "TrainData",
    "TrainResult",
    "TrainSettings",
    "UnsafeCheckpointError",
    "build_classifier",
    "build_network",
    "consistency_loss",
    "fit",
    "load_checkpoint",
    "make_threshold",
    "predict_proba",
    "resolve_device",
    "strong",
    "student_step",
    "supervised_loss",
    "weak",
]
