"""Evaluation against a real store and a real MLflow store: a registry that cannot be
reached stops the run, never "no champion"; both models are judged on the same gold,
streamed, exactly as on all its pixels at once."""

import numpy as np
import pytest

from tasks.registry.aliases import (
    TAG_GATE,
    RegistryRef,
    RegistryUnavailable,
    promote,
)
from tasks.registry.model_format import load_classifier
from tasks.registry.promotion import evaluate_candidate_and_champion, gold_probabilities
from tasks.store import TEST, Store
from tasks.validation import GatePolicy, GoldEvidence, decide, gold_metrics
from tasks.validation.gold import GoldSpec, load_gold_set
from tasks.validation.next_step import GoldPool
from tests.tasks.registry.test_aliases import (
    _closed_port,
    logged_model,
    register,
)


def test_an_unreachable_registry_fails_the_evaluation(store_cfg, monkeypatch):
    # Not "no champion, judge on floors alone": the run stops.
    local = RegistryRef(store_cfg.mlflow.tracking_uri, "promo")
    candidate = logged_model(local.tracking_uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = RegistryRef(f"http://127.0.0.1:{_closed_port()}", "promo")
    import tasks.registry.promotion.evaluation as promotion

    real = promotion.load_classifier
    monkeypatch.setattr(  # the candidate loads from where it was logged; the champion can't
        promotion, "load_classifier", lambda uri, _t, **kw: real(uri, local.tracking_uri, **kw)
    )
    with pytest.raises(RegistryUnavailable):
        evaluate_candidate_and_champion(
            Store(store_cfg.store.root),
            GoldSpec.from_data(store_cfg.data_spec()),
            down,
            candidate,
            trust_pickle=False,
        )


def test_the_candidate_and_the_champion_are_judged_on_the_same_streamed_gold(store_cfg):
    # One pass over the gold images for both models: the same probabilities, metrics and
    # gate bounds as predicting on all the gold pixels held at once.
    store, spec = Store(store_cfg.store.root), GoldSpec.from_data(store_cfg.data_spec())
    ref = RegistryRef(store_cfg.mlflow.tracking_uri, "promo")
    v1 = register(ref, {TAG_GATE: "passed"})
    promote(ref, v1, expected_champion=None)
    candidate = logged_model(ref.tracking_uri, seed=1)

    ev = evaluate_candidate_and_champion(store, spec, ref, candidate, trust_pickle=False)

    gold = load_gold_set(store, spec, TEST)
    y = gold.y.numpy()
    cand = gold_probabilities(load_classifier(candidate, ref.tracking_uri), gold, spec)
    champ = gold_probabilities(load_classifier(ref.version_uri(v1), ref.tracking_uri), gold, spec)
    assert ev.gold.x is None and ev.champion_version == v1 and len(ev.gold) == len(gold) > 10
    assert ev.gold.ids.equals(gold.ids) and ev.gold.snapshot_id == gold.snapshot_id
    assert np.array_equal(ev.candidate_probs, cand) and np.array_equal(ev.champion_probs, champ)
    assert not np.array_equal(cand, champ)
    assert ev.candidate == gold_metrics(cand, y, spec.classes)
    assert ev.champion == gold_metrics(champ, y, spec.classes)
    assert ev.pool == GoldPool(
        spec.split.fraction, spec.split.test_share, gold.unlabeled_gold, gold.n_examples
    )
    policy = GatePolicy.from_config(store_cfg.gate)
    report = decide(ev.evidence(), policy, v1, ev.gold.sizes)
    expected = decide(
        GoldEvidence(spec.classes, y, cand, champ, gold.slices), policy, v1, gold.sizes
    )
    assert report.to_dict() == expected.to_dict() and report.gain is not None
