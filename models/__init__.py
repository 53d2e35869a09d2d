"""PyTorch only: networks, batched augmentations, losses, EMA and the teacher–student
loop. Nothing here imports Prefect or MLflow, so it runs and benchmarks alone."""

from models.augment import AugmentSettings, strong, weak
from models.classifier import inference_input
from models.ema import ModelEMA
from models.losses import DistributionAlignment, consistency_loss, supervised_loss
from models.networks import NETWORKS, STEMS, build_network
from models.pretrained import PretrainedWeightsError, load_pretrained, pretrained_classifier
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
    inference_rows,
    load_checkpoint,
    predict_proba,
    resolve_device,
    student_step,
)

__all__ = [
    "NETWORKS",
    "STEMS",
    "AugmentSettings",
    "Callback",
    "Classifier",
    "ClassifierConfig",
    "DistributionAlignment",
    "FixedThreshold",
    "FlexMatchThreshold",
    "FreeMatchThreshold",
    "ModelEMA",
    "PretrainedWeightsError",
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
    "load_pretrained",
    "make_threshold",
    "inference_input",
    "inference_rows",
    "predict_proba",
    "pretrained_classifier",
    "resolve_device",
    "strong",
    "student_step",
    "supervised_loss",
    "weak",
]
