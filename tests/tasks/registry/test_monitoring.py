"""Monitoring against a real store and a real MLflow store: no baseline is never "ok",
a rollback only ever moves the version that was measured, and streamed gold measures
the champion exactly as all its pixels at once would."""

import dataclasses

import pytest

import tasks.registry.monitoring as monitoring
from tasks.registry.aliases import TAG_GATE, RegistryRef, champion_version, promote
from tasks.registry.model_format import load_classifier
from tasks.registry.monitoring import Evidence, metric_bounds, monitor_champion
from tasks.registry.promotion import gold_probabilities
from tasks.store import TEST, Store
from tasks.validation import gold_metrics
from tasks.validation.gold import GoldSpec, load_gold_set
from tests.tasks.registry.test_aliases import move_alias_in_another_process, register

GATED = {TAG_GATE: "passed", "gate.accuracy": "0.99", "gate.macro_f1": "0.99", "gate.ece": "0.01"}


@pytest.fixture
def setup(store_cfg):
    ref = RegistryRef(store_cfg.mlflow.tracking_uri, "mon")
    cfg = store_cfg.model_copy(
        update={"monitor": store_cfg.monitor.model_copy(update={"min_gold_labels": 5})}
    )
    return cfg, ref, Store(cfg.store.root), GoldSpec.from_data(cfg.data_spec())


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
    # Measured and still champion, v3 regressed, and a rollback would restore v2: the
    # same untrained net, just as worse on this gold. The gold moved, not the model, so
    # the champion is not walked back one version per run: nothing moves.
    again = monitor_champion(store, spec, ref, cfg.monitor, trust_pickle=False)
    assert (again.action, again.champion_version, again.rolled_back_to) == (
        "gold_shifted",
        v3,
        None,
    )
    assert f"v{v2}, the version a rollback would restore, is no better" in again.detail
    assert champion_version(ref) == v3


def _trained_model_uri(cfg, tracking_uri: str) -> str:
    """A classifier really trained (a short supervised teacher) on the store's labels."""
    import mlflow

    from models import fit
    from tasks.registry.model_format import log_classifier
    from tasks.tracking import ensure_experiment
    from tasks.training import load_training_data

    training = load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)
    settings = dataclasses.replace(
        cfg.train_settings(), teacher_steps=60, student_steps=0, checkpoint_every=0
    )
    model = fit(dataclasses.replace(training.data, x_eval=None, y_eval=None), settings).teacher
    mlflow.set_tracking_uri(tracking_uri)
    ensure_experiment(tracking_uri, "registry-test")
    with mlflow.start_run():
        return log_classifier(model, tuple(cfg.taxonomy.classes), training.data.x_lb[:4])


def test_a_significant_regression_rolls_back_to_a_version_that_is_better_on_the_same_gold(
    setup,
):
    from tasks.registry.aliases import register_candidate

    cfg, ref, store, spec = setup
    good = register_candidate(ref, _trained_model_uri(cfg, ref.tracking_uri), "run", GATED)
    promote(ref, good, expected_champion=None)
    bad = register(ref, GATED)  # untrained, claims 0.99 at its gate
    promote(ref, bad, expected_champion=good)
    report = monitor_champion(store, spec, ref, cfg.monitor, trust_pickle=False)
    assert (report.action, report.rolled_back_to) == ("rolled_back", good), report.detail
    acc = report.bounds["accuracy"]
    assert acc.high < 0.99 - 0.02  # significantly worse than at its gate
    assert champion_version(ref) == good


def test_the_monitor_measures_the_champion_on_streamed_gold_as_on_all_its_pixels(setup):
    cfg, ref, store, spec = setup
    v1 = register(ref)
    promote(ref, v1, expected_champion=None)
    report = monitor_champion(store, spec, ref, cfg.monitor, trust_pickle=False)

    gold = load_gold_set(store, spec, TEST)
    y = gold.y.numpy()
    model = load_classifier(ref.version_uri(v1), ref.tracking_uri)
    probs = gold_probabilities(model, gold, spec)
    now = gold_metrics(probs, y, spec.classes)
    assert report.n_gold == len(gold) > 5 and report.metrics == now.scalars()
    assert report.bounds == metric_bounds(probs, y, now, Evidence())
