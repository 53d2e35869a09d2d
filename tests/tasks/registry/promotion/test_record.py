"""Recording a decision against a real store and a real MLflow store: promotion is
refused when the champion moved since the evaluation."""

from pathlib import Path

from tasks.gold import GoldSpec
from tasks.registry.aliases import (
    TAG_GATE,
    TAG_PROMOTION,
    RegistryRef,
    champion_version,
    promote,
)
from tasks.registry.promotion import Destination, evaluate_candidate_and_champion, record_decision
from tasks.store import Store
from tasks.training import TrainSummary
from tasks.validation import GatePolicy, Thresholds, decide
from tests.tasks.registry.test_aliases import (
    logged_model,
    move_alias_in_another_process,
    register,
)

LENIENT = GatePolicy(  # untrained models: judge nothing but the wiring
    min_gold_labels=1,
    floors=Thresholds(None, None, None),
    min_class_recall=None,
    max_regression=Thresholds(None, None, None),
)


def _trained(model_uri: str) -> TrainSummary:
    """What training reports for a candidate logged in the last MLflow run."""
    import mlflow

    run_id = mlflow.last_active_run().info.run_id
    nan = float("nan")
    return TrainSummary(
        run_id, model_uri, "snap", 1, 0, "cpu", 1, 0, 0, 1, 1, 0, nan, nan, nan, 0.0, ""
    )


def test_a_champion_moved_after_evaluation_blocks_promotion(store_cfg, tmp_path: Path):
    ref = RegistryRef(store_cfg.mlflow.tracking_uri, "promo")
    v1 = register(ref, {TAG_GATE: "passed"})
    promote(ref, v1, expected_champion=None)
    spec = GoldSpec.from_config(store_cfg)
    candidate = logged_model(ref.tracking_uri, seed=3)
    trained = _trained(candidate)
    evaluation = evaluate_candidate_and_champion(
        Store(store_cfg.store.root), spec, ref, candidate, trust_pickle=False
    )
    assert evaluation.champion_version == v1 and evaluation.champion is not None
    assert evaluation.gold.part == "test" and len(evaluation.gold) > 0
    report = decide(evaluation.evidence(), LENIENT, v1, evaluation.gold.sizes)
    assert report.passed
    # Another process promotes something else between the gate and the promotion.
    v2 = register(ref, {TAG_GATE: "passed"})
    move_alias_in_another_process(ref, v2)
    dest = Destination(ref, spec.classes, str(store_cfg.store.root), "http://127.0.0.1:5000")
    decision = record_decision(dest, trained, evaluation, report)
    assert not decision.promoted and decision.decision == "rejected"
    assert decision.reason.startswith("promo: champion moved from v1 to v2 during this run")
    assert champion_version(ref) == v2
    tags = ref.client().get_model_version(ref.model_name, decision.version).tags
    assert tags[TAG_GATE] == "passed" and "champion moved from v1 to v2" in tags[TAG_PROMOTION]
