"""The sample flow: choose what people should label next (train, gold and review streams,
each within its budget), record the requests, and hand them over as `sampling.mode`
says (export files, Label Studio, or the simulated annotator).

    semilabel sample --set sampling.budget.train=200 --set sampling.mode=export
    semilabel sample --set sampling.budget.gold=150 --set sampling.budget.train=0
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

import flows  # noqa: F401  (settings, run logs: a worker loads this file by path)
from configs.schema import Config, load_config
from flows.annotate import annotation_inputs
from tasks.annotation.delivery import Delivery, deliver_requests
from tasks.sampling import SamplingInputs, sample_examples


@flow(name="sample")
def sample(config_path: str | None = None, overrides: dict[str, Any] | None = None) -> Delivery:
    """Sample examples for annotation and deliver the requests.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file, e.g. {"sampling.budget.gold": 100}.
    """
    cfg = load_config(config_path, overrides)
    run_id = str(flow_run.id or "local")
    result = sample_examples(sampling_inputs(cfg), run_id)
    return deliver_requests(annotation_inputs(cfg), result, run_id)


def sampling_inputs(cfg: Config) -> SamplingInputs:
    """What sampling takes from the config (the retrain flow's too)."""
    return SamplingInputs(
        data=cfg.data_spec(),
        sampling=cfg.sampling,
        labels=cfg.labels,
        mlflow=cfg.mlflow,
        train=cfg.train,
        settings=cfg.train_settings(),
    )


if __name__ == "__main__":
    from flows.cli_common import run_command

    sys.exit(run_command("sample", sample))
