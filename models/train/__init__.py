"""The teacher–student training loop (`fit`), its settings and result, and one step's
pieces. See `models.train.loop`."""

from models.checkpoint import CHECKPOINT, UnsafeCheckpointError, load_checkpoint
from models.classifier import (
    Classifier,
    ClassifierConfig,
    build_classifier,
    channel_stats,
    inference_rows,
    predict_proba,
    resolve_device,
    to_float,
)
from models.train.loop import fit
from models.train.settings import Callback, TrainData, TrainResult, TrainSettings
from models.train.step import (
    StepOutput,
    evaluate,
    labeled_groups,
    lr_at,
    make_optimizer,
    sample_labeled,
    student_step,
)

__all__ = [
    "CHECKPOINT",
    "Callback",
    "Classifier",
    "ClassifierConfig",
    "StepOutput",
    "TrainData",
    "TrainResult",
    "TrainSettings",
    "UnsafeCheckpointError",
    "build_classifier",
    "channel_stats",
    "evaluate",
    "fit",
    "labeled_groups",
    "load_checkpoint",
    "lr_at",
    "make_optimizer",
    "inference_rows",
    "predict_proba",
    "resolve_device",
    "sample_labeled",
    "student_step",
    "to_float",
]
