"""What the label-health tasks take from the config: the data, the SLI thresholds, how
training labels are resolved, the labeling functions' floors, and where the SLIs go.
The flows build it (`flows.monitor.label_health_inputs`)."""

from __future__ import annotations

from dataclasses import dataclass

from configs.data import DataSpec
from configs.health import HealthConfig, MetricsConfig
from configs.tracking import MlflowConfig
from configs.train import LabelsConfig
from configs.weak_labeling import WeakLabelingConfig
from tasks.store import GoldSplit


@dataclass(frozen=True)
class LabelHealthInputs:
    data: DataSpec
    health: HealthConfig  # the SLI thresholds, and the drift checks (`health.drift`)
    labels: LabelsConfig  # how training labels resolve; the cost of a label
    weak_labeling: WeakLabelingConfig  # the labeling functions' accuracy floors
    metrics: MetricsConfig  # the Pushgateway
    mlflow: MlflowConfig  # where the SLIs are logged, and the champion a monitor measures
    tau: float  # `train.tau`: the threshold a monitor measures the champion's pseudo-labels at


def gold_split(data: DataSpec) -> GoldSplit:
    """The gold holdout of `data`: which examples are gold, and which part of it."""
    return GoldSplit(data.gold.fraction, data.gold.salt, data.gold.test_share)
