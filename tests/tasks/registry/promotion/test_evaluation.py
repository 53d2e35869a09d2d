"""Evaluation against a real store and a real MLflow store: a registry that cannot be
reached stops the run, never "no champion"."""

import pytest

from tasks.registry.aliases import (
    RegistryRef,
    RegistryUnavailable,
)
from tasks.registry.promotion import evaluate_candidate_and_champion
from tasks.store import Store
from tasks.validation.gold import GoldSpec
from tests.tasks.registry.test_aliases import (
    _closed_port,
    logged_model,
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
