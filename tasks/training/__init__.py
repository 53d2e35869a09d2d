"""The training stage: read resolved labels and the unlabeled pool from the store
(`data`, which also keeps the gold holdout out), claim a run folder for checkpoints
(`run_dir`), train teacher then student (models/) and log everything to MLflow (`run`,
from the `TrainingInputs` a flow builds from its config).
"""

from tasks.training.data import (
    SAME_IMAGE_AS_GOLD,
    DataLeakError,
    NotEnoughDataError,
    TrainingSet,
    assert_no_gold_in_training,
    gold_duplicates,
    load_training_data,
    pixel_digest,
)
from tasks.training.run import (
    TrainingInputs,
    TrainSummary,
    code_version,
    environment_tags,
    publish_train_summary,
    train_and_log,
    train_candidate,
)
from tasks.training.run_dir import claim_run_dir

__all__ = [
    "SAME_IMAGE_AS_GOLD",
    "DataLeakError",
    "NotEnoughDataError",
    "TrainSummary",
    "TrainingInputs",
    "TrainingSet",
    "assert_no_gold_in_training",
    "claim_run_dir",
    "code_version",
    "environment_tags",
    "gold_duplicates",
    "load_training_data",
    "pixel_digest",
    "publish_train_summary",
    "train_and_log",
    "train_candidate",
]
