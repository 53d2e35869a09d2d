"""The promotion stage against a real store and a real MLflow store: the champion is
pinned at evaluation, and promotion is refused when it moved since."""

from pathlib import Path

import pytest

from tasks.gold import GoldSpec
from tasks.promotion import Destination, evaluate_candidate_and_champion, record_decision
from tasks.registry import (
    TAG_GATE,
    TAG_PROMOTION,
    RegistryRef,
    RegistryUnavailable,
    champion_version,
    promote,
)
from tasks.store import Store
from tasks.training import TrainSummary
from tasks.validation import GatePolicy, Thresholds, decide
from tests.tasks.test_registry import (
    _closed_port,
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
    report = decide(evaluation.candidate, evaluation.champion, LENIENT, v1, evaluation.gold.sizes)
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


def test_an_unreachable_registry_fails_the_evaluation(store_cfg, monkeypatch):
    # Not "no champion, judge on floors alone": the run stops.
    local = RegistryRef(store_cfg.mlflow.tracking_uri, "promo")
    candidate = logged_model(local.tracking_uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = RegistryRef(f"http://127.0.0.1:{_closed_port()}", "promo")
    import tasks.promotion as promotion

    real = promotion.load_classifier
    monkeypatch.setattr(  # the candidate loads from where it was logged; the champion can't
        promotion, "load_classifier", lambda uri, _t, **kw: real(uri, local.tracking_uri, **kw)
    )
    with pytest.raises(RegistryUnavailable):
        evaluate_candidate_and_champion(
            Store(store_cfg.store.root),
            GoldSpec.from_config(store_cfg),
            down,
            candidate,
            trust_pickle=False,
        )


def test_a_gate_short_of_gold_says_how_many_more_and_the_command_that_asks_for_them():
    from tasks.promotion import sample_gold_hint
    from tasks.reports import gate_markdown
    from tasks.validation import GoldMetrics

    thin = GoldMetrics(8, 1.0, 1.0, 0.0, {"0": 1.0}, {"0": 1.0}, [[8]])
    policy = GatePolicy(200, Thresholds(0.9, 0.9, None), 0.8, Thresholds(0.01, 0.01, 0.05))
    report = decide(thin, None, policy)
    md = gate_markdown(report, sample_gold_hint(report.gold_labels_missing))
    assert "192 more human labels on gold test examples are needed" in md
    assert "semilabel sample --set sampling.budget.gold=384" in md  # half of gold is test
    assert "semilabel annotate import" in md
