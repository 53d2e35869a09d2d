"""The weak-label flow: labeling functions vote over the store, a label model combines
them, and confident labels become `label_model` events for training.

    semilabel weak-label --set 'weak_labeling.functions=[{name: knn, kind: knn}]'
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import Config, load_config
from tasks.weak_labeling.analysis import WeakLabelSummary
from tasks.weak_labeling.inputs import WeakLabelInputs
from tasks.weak_labeling.run import weak_label_examples


@flow(name="weak-label")
def weak_label(
    config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> WeakLabelSummary:
    """Apply the configured labeling functions and write label-model labels.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file.
    """
    cfg = load_config(config_path, overrides)
    return weak_label_examples(weak_label_inputs(cfg), run_id=str(flow_run.id or "local"))


def weak_label_inputs(cfg: Config) -> WeakLabelInputs:
    """What weak labeling takes from the config (the retrain flow's too)."""
    return WeakLabelInputs(data=cfg.data_spec(), weak_labeling=cfg.weak_labeling, mlflow=cfg.mlflow)


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("weak-label", weak_label))
