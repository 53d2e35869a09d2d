"""Monitoring against a real store and a real MLflow store: no baseline is never "ok",
and a rollback only ever moves the version that was measured."""

import dataclasses

import pytest

import tasks.monitoring as monitoring
from tasks.gold import GoldSpec
from tasks.monitoring import monitor_champion
from tasks.registry import TAG_GATE, RegistryRef, champion_version, promote
from tasks.store import Store
from tests.tasks.test_registry import move_alias_in_another_process, register

GATED = {TAG_GATE: "passed", "gate.accuracy": "0.99", "gate.macro_f1": "0.99", "gate.ece": "0.01"}


@pytest.fixture
def setup(store_cfg):
    ref = RegistryRef(store_cfg.mlflow.tracking_uri, "mon")
    cfg = store_cfg.model_copy(
        update={"monitor": store_cfg.monitor.model_copy(update={"min_gold_labels": 5})}
    )
    return cfg, ref, Store(cfg.store.root), GoldSpec.from_config(cfg)


def test_a_champion_registered_by_hand_has_no_baseline_and_is_never_ok(setup):
    cfg, ref, store, spec = setup
    v1 = register(ref)  # no gate.* tags: registered outside the gate
    promote(ref, v1, expected_champion=None)
    report = monitor_champion(store, spec, ref, cfg.monitor, trust_pickle=False)
    assert report.action == "no_baseline" and not report.healthy
    assert "accuracy, macro_f1" in report.detail and "retrain" in report.detail
    assert report.metrics["accuracy"] == report.metrics["accuracy"]  # measured all the same
    assert champion_version(ref) == v1  # nothing was rolled back on no evidence


def test_a_regressed_champion_that_moved_meanwhile_is_not_rolled_back(setup, monkeypatch):
    cfg, ref, store, spec = setup
    v1 = register(ref, GATED)
    promote(ref, v1, expected_champion=None)
    v2 = register(ref, GATED)  # "99% at its gate"; an untrained net is far worse now
    promote(ref, v2, expected_champion=v1)
    v3 = register(ref, GATED)
    real = monitoring.load_classifier

    def load_while_someone_promotes(uri, tracking_uri, **kw):
        move_alias_in_another_process(ref, v3)  # during the measurement of v2
        return real(uri, tracking_uri, **kw)

    monkeypatch.setattr(monitoring, "load_classifier", load_while_someone_promotes)
    report = monitor_champion(store, spec, ref, cfg.monitor, trust_pickle=False)
    assert report.champion_version == v2 and report.regressions
    assert report.action == "champion_moved" and "v2 was measured" in report.detail
    assert champion_version(ref) == v3
    monkeypatch.setattr(monitoring, "load_classifier", real)
    # Measured and still champion: the regression rolls v3 back to v2... which is worse
    # now as well, but it is what the history says passed before it.
    again = monitor_champion(store, spec, ref, cfg.monitor, trust_pickle=False)
    assert (again.action, again.champion_version, again.rolled_back_to) == (
        "rolled_back",
        v3,
        v2,
    )


def test_classes_absent_from_gold_are_reported(setup):
    cfg, ref, store, spec = setup
    v1 = register(ref, GATED)
    promote(ref, v1, expected_champion=None)
    spec4 = dataclasses.replace(spec, classes=(*spec.classes, "3"))  # no gold example of "3"
    report = monitor_champion(store, spec4, ref, cfg.monitor, trust_pickle=False)
    assert report.absent_classes == ("3",)
