"""What a run measures beyond the store: a model's pseudo-labels on gold dev, the
retrain history from the Prefect API, and all of it for a monitor run."""

import math

import pytest
import torch
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from flows.monitor import label_health_inputs
from models import ClassifierConfig, build_classifier, predict_proba
from tasks.registry.aliases import RegistryRef, champion_version, promote
from tasks.slis.measure import (
    load_model,
    measure_monitor,
    pseudo_labels_on_gold,
    retrain_outcomes,
)
from tasks.store import DEV, Store
from tasks.validation.gold import GoldSpec, load_gold_set
from tests.tasks.registry.test_aliases import register


def _model():
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig("small_cnn", 3, 1, 28, (0.13,), (0.31,))).eval()


def test_pseudo_labels_on_gold_dev_at_the_threshold(store_cfg):
    store, data, model = Store(store_cfg.store.root), store_cfg.data_spec(), _model()
    gold = load_gold_set(store, GoldSpec.from_data(data), DEV)
    conf, pred = predict_proba(model, gold.x).max(1)
    assert len(gold) > 5
    # every pseudo-label kept: precision is the accuracy
    assert pseudo_labels_on_gold(store, data, 0.0, model) == (
        pytest.approx(float((pred == gold.y).float().mean())),
        1.0,
    )
    tau = float(conf.median())
    keep = conf >= tau
    precision, coverage = pseudo_labels_on_gold(store, data, tau, model)
    assert coverage == pytest.approx(float(keep.float().mean())) and 0 < coverage < 1
    assert precision == pytest.approx(float((pred[keep] == gold.y[keep]).float().mean()))
    precision, coverage = pseudo_labels_on_gold(store, data, 1.01, model)  # none kept
    assert math.isnan(precision) and coverage == 0.0


def test_no_gold_dev_no_pseudo_label_measure(tmp_path, store_cfg):
    empty = Store(str(tmp_path / "empty"))
    precision, coverage = pseudo_labels_on_gold(empty, store_cfg.data_spec(), 0.5, _model())
    assert math.isnan(precision) and math.isnan(coverage)


@flow(name="retrain")
def _a_retrain(fail: bool) -> None:
    if fail:
        raise RuntimeError("a failed retrain")


def test_the_retrain_history_newest_first(prefect_api):
    runs = [_a_retrain(fail, return_state=True) for fail in (False, True)]
    try:
        assert runs[1].is_failed()
        assert retrain_outcomes(2) == (False, True)
        failed = str(runs[1].state_details.flow_run_id)
        assert retrain_outcomes(1, exclude=failed) == (True,)
    finally:  # the server is shared: other tests' monitors count retrains too
        with get_client(sync_client=True) as client:
            for state in runs:
                client.delete_flow_run(state.state_details.flow_run_id)


def test_an_unreachable_prefect_api_gives_no_history(caplog):
    with temporary_settings(
        {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES: 0}
    ):
        assert retrain_outcomes(5) == ()
    assert "retrain history unavailable" in caplog.text


def test_a_monitor_measures_the_champion(prefect_api, store_cfg):
    inputs = label_health_inputs(store_cfg)
    facts = measure_monitor(inputs, "monitor-run")
    assert facts.flow == "monitor"
    assert facts.pseudo_label_precision is None and facts.pseudo_label_coverage is None
    assert facts.drift and all(c.p_value is None for c in facts.drift)  # no model: histograms

    ref = RegistryRef(store_cfg.mlflow.tracking_uri, store_cfg.mlflow.model_name)
    promote(ref, register(ref), expected_champion=None)
    champion = load_model(ref.version_uri(champion_version(ref)), inputs.mlflow)
    facts = measure_monitor(inputs, "monitor-run")
    store = Store(store_cfg.store.root)
    assert (facts.pseudo_label_precision, facts.pseudo_label_coverage) == pytest.approx(
        pseudo_labels_on_gold(store, inputs.data, inputs.tau, champion), nan_ok=True
    )
    assert facts.drift and all(c.p_value is not None for c in facts.drift)  # embeddings
    assert isinstance(facts.retrain_outcomes, tuple)
    assert load_model(None, inputs.mlflow) is None
