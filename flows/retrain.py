"""The retrain flow: ingest -> weak label (when enabled) -> train -> gate on gold -> register ->
promote or reject. The README's `make run` runs it on the embedded default.

    semilabel retrain
    semilabel retrain --set train.device=cuda --set train.student_steps=5000
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from configs.schema import load_config
from tasks.ingest import ingest_source, publish_ingest_summary
from tasks.registry import RetrainDecision, register_and_decide
from tasks.training import publish_train_summary, train_candidate
from tasks.validation import evaluate_on_gold, gate_candidate
from tasks.weak_labeling import weak_label_examples


@flow(name="retrain")
def retrain(
    config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> RetrainDecision:
    """Ingest, train a candidate, gate it against the champion on gold, register it, and
    promote it only if the gate passes.

    Args:
        config_path: YAML config file; the embedded default when omitted.
        overrides: dotted keys overriding the file, e.g. {"train.student_steps": 3000}.
    """
    cfg = load_config(config_path, overrides)
    ingested = ingest_source(cfg, run_id=str(flow_run.id or "local"))
    publish_ingest_summary(ingested, cfg.store.root)
    if cfg.weak_labeling.enabled:
        weak_label_examples(cfg, run_id=str(flow_run.id or "local"))
    trained = train_candidate(cfg)
    publish_train_summary(trained)
    evaluation = evaluate_on_gold(cfg, trained.model_uri)
    report = gate_candidate(cfg, evaluation)
    return register_and_decide(cfg, trained, evaluation, report)


if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main(["retrain", *sys.argv[1:]]))
