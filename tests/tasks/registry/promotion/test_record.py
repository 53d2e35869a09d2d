"""Recording a decision against a real store and a real MLflow store: promotion is
refused when the champion moved since the evaluation; a tag never ends mid-sentence; a
step after the decision is tried again."""

from pathlib import Path

import pytest

from tasks.registry.aliases import (
    TAG_GATE,
    TAG_PROMOTION,
    RegistryRef,
    champion_version,
    promote,
)
from tasks.registry.promotion import (
    AFTER_DECISION_TRIES,
    Destination,
    after_decision,
    evaluate_candidate_and_champion,
    fit_tag,
    record_decision,
)
from tasks.store import Store
from tasks.training import TrainSummary
from tasks.validation import GatePolicy, Thresholds, decide
from tasks.validation.gold import GoldSpec
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
    spec = GoldSpec.from_data(store_cfg.data_spec())
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


def test_a_tag_is_whole_when_it_fits_and_cut_after_a_whole_clause_when_not():
    assert fit_tag("short; text", limit=40) == "short; text"
    text = "; ".join(f"check {i} failed" for i in range(10))  # 10 clauses of 14 characters
    cut = fit_tag(text, limit=100)
    rest = " ... (the rest: the run's gate/gate_report.md)"  # 47 characters
    # the first 53 characters end in "check 2 failed; check": cut after the third clause
    assert cut == "check 0 failed; check 1 failed; check 2 failed" + rest
    one = fit_tag("word " * 40, limit=70)  # no clause to cut after: after a whole word
    assert one == "word word word word" + rest


def test_a_step_after_the_decision_is_tried_again_and_its_last_error_raised():
    calls = []

    def blinks_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("tracking server blinked")
        return "described"

    assert after_decision(blinks_once) == "described" and len(calls) == 2

    def down() -> str:
        calls.append(1)
        raise ConnectionError(f"down ({len(calls)})")

    calls.clear()
    with pytest.raises(ConnectionError, match=f"down \\({AFTER_DECISION_TRIES}\\)"):
        after_decision(down)
    assert len(calls) == AFTER_DECISION_TRIES == 3
