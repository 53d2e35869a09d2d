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


def _undecided(n: int, needed: int):
    """A gate report short of gold: `n` gold test labels, all right, against a minimum."""
    import numpy as np

    from tasks.validation import GoldEvidence

    y = np.zeros(n, dtype=np.int64)
    probs = np.tile([0.9, 0.1], (n, 1))
    policy = GatePolicy(needed, Thresholds(None, None, None), None, Thresholds(None, None, None))
    return decide(GoldEvidence(("0", "1"), y, probs), policy)


def test_an_undecided_gate_gives_the_exact_command_for_the_gold_it_needs():
    from tasks.promotion import GoldPool, gold_to_request, next_step
    from tasks.reports import gate_markdown

    report = _undecided(8, 200)  # 192 more gold test labels
    assert report.verdict == "undecided" and report.labels_needed == 192
    pool = GoldPool(fraction=0.2, test_share=0.5, unlabeled=1000, n_examples=5000)
    assert gold_to_request(report, pool) == 384  # half of gold lands in test
    step = next_step(report, pool)
    assert "About 192 more gold test labels would most likely decide it" in step
    assert (
        "`semilabel sample --set sampling.budget.gold=384 --set sampling.budget.train=0 "
        "--set sampling.mode=export`" in step
    )
    assert "semilabel annotate import --file <export>`, then `semilabel retrain`" in step
    assert step.endswith(".") and f"**Next step:** {step}" in gate_markdown(report, step)
    # A pool with fewer left asks for all of them, and says that will not be enough.
    short = next_step(report, GoldPool(0.2, 0.5, 100, 5000))
    assert "sampling.budget.gold=100 " in short and "it will not be enough" in short


def test_an_exhausted_gold_pool_says_so_and_what_else_would_decide():
    from tasks.promotion import GoldPool, gold_to_request, next_step

    report = _undecided(100, 160)  # 60 more gold test labels needed
    pool = GoldPool(fraction=0.2, test_share=0.5, unlabeled=0, n_examples=1000)
    assert gold_to_request(report, pool) == 0
    step = next_step(report, pool)
    assert step.startswith(
        "About 60 more gold test labels would most likely decide it, but the gold pool is "
        "exhausted: every gold example already has a human label."
    )
    # 60 / (0.2 x 0.5) = 600 more images; or a gold fraction of 0.2 x 160 / 100 = 0.32,
    # which moves 1000 x 0.12 = 120 examples from training into gold.
    assert "about 600 more images give 60 gold test labels at gold.fraction 0.2" in step
    assert "raise gold.fraction from 0.2 to about 0.32 (`--set gold.fraction=0.32`)" in step
    assert "about 120 more examples become gold, leave training" in step


def test_an_estimate_on_its_limit_asks_for_a_better_model_not_for_endless_gold():
    import numpy as np

    from tasks.promotion import GoldPool, gold_to_request, next_step
    from tasks.validation import GoldEvidence

    y = np.arange(100) % 2
    pred = y.copy()
    pred[:10] = 1 - y[:10]  # 90 of 100 right: exactly the floor
    probs = np.eye(2)[pred] * 0.8 + 0.1
    policy = GatePolicy(1, Thresholds(0.9, None, None), None, Thresholds(None, None, None))
    report = decide(GoldEvidence(("0", "1"), y, probs), policy)
    assert report.verdict == "undecided"
    pool = GoldPool(0.2, 0.5, 500, 5000)
    assert gold_to_request(report, pool) == 0
    step = next_step(report, pool)
    assert step.startswith("The estimate of accuracy_floor sits on its limit")
    assert "--set sampling.budget.train=200" in step
