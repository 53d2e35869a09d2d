"""What the weak-labeling stage takes from the config, in one frozen value: a flow builds
it (`flows.weak_label.weak_label_inputs`), the stage reads only these sections."""

from __future__ import annotations

from dataclasses import dataclass

from configs.data import DataSpec
from configs.tracking import MlflowConfig
from configs.weak_labeling import WeakLabelingConfig


@dataclass(frozen=True)
class WeakLabelInputs:
    """The data, the labeling functions and the label model, and where runs are tracked."""

    data: DataSpec  # the store, the classes, gold, the image shape the functions read
    weak_labeling: WeakLabelingConfig  # the functions, the label model, the shards
    mlflow: MlflowConfig  # where the analysis is logged; the champion and `model` functions
