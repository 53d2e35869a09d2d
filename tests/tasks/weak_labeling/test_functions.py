"""Labeling functions as configured: a `python` function's floor and whether a model
shaped its votes, on a real store through weak labeling and training's resolution.

The functions below are `python` labeling functions of these tests
(`tests.tasks.weak_labeling.test_functions:<name>`)."""

import numpy as np
import pyarrow.compute as pc
import pytest

from configs.schema import ConfigError, load_config
from tasks.store import LABELS, Store
from tasks.weak_labeling import LFBatch, labeling_function
from tasks.weak_labeling.run import weak_label_store

HERE = "tests.tasks.weak_labeling.test_functions"


def bar_position(batch: LFBatch) -> np.ndarray:
    """Right on every row (the class is which third holds the bright bar): stands in
    for a model's confident predictions."""
    cols = batch.images[:, 0].astype(np.int32).sum(1)  # (B, W)
    return np.stack([cols[:, 2 + 9 * c : 7 + 9 * c].sum(1) for c in range(3)], 1).argmax(1)


@labeling_function(name="strict_coin", accuracy_floor=0.9)
def strict_coin(batch: LFBatch) -> np.ndarray:
    """A poor rule whose author set a strict floor in code."""
    seed = int.from_bytes(bytes.fromhex(batch.example_ids[0][:8]), "big")
    return np.random.default_rng(seed).integers(0, 3, len(batch))


@labeling_function(name="declared", model_backed=True)
def declared_model_backed(batch: LFBatch) -> np.ndarray:
    return bar_position(batch)


def _ov(cfg) -> dict:
    return {
        "store.root": cfg.store.root,
        "taxonomy.classes": list(cfg.taxonomy.classes),
        "gold.fraction": cfg.gold.fraction,
        "mlflow.tracking_uri": cfg.mlflow.tracking_uri,
        "weak_labeling.min_gold_covered": 10,
    }


def test_an_explicit_floor_of_zero_in_config_is_honoured(store_cfg):
    """0.0 is a floor (never quarantine), not "unset": it overrides the code's 0.9."""
    functions = [{"name": "coin", "kind": "python", "target": f"{HERE}:strict_coin"}]
    cfg = load_config(overrides={**_ov(store_cfg), "weak_labeling.functions": functions})
    (coin,) = weak_label_store(cfg, "run-default").functions
    assert coin.quarantined and "below its floor 0.9" in coin.reason  # the code's floor

    functions[0]["accuracy_floor"] = 0.0
    cfg = load_config(overrides={**_ov(store_cfg), "weak_labeling.functions": functions})
    (coin,) = weak_label_store(cfg, "run-zero").functions
    assert not coin.quarantined, coin.reason
    assert coin.gold_accuracy < 0.9


@pytest.mark.parametrize(
    "spec",
    [
        # a python function that wraps a model, marked so in config
        {
            "name": "wrapped",
            "kind": "python",
            "target": f"{HERE}:bar_position",
            "model_backed": True,
        },
        # ... or declared so by its author
        {"name": "declared", "kind": "python", "target": f"{HERE}:declared_model_backed"},
    ],
    ids=["config", "decorator"],
)
def test_a_model_backed_python_function_counts_against_max_model_share(store_cfg, spec):
    from tasks.training import load_training_data

    cfg = load_config(
        overrides={
            **_ov(store_cfg),
            "labels.max_model_share": 0.2,
            "weak_labeling.functions": [spec],
        }
    )
    summary = weak_label_store(cfg, "run-W")
    events = Store(cfg.store.root).read(LABELS).filter(pc.field("source_kind") == "label_model")
    assert events.num_rows == summary.events_written > 0
    assert all(events.column("model_influenced").to_pylist())
    training = load_training_data(Store(cfg.store.root), cfg)
    assert training.n_weak == training.n_model_influenced > 0
    assert training.n_model_influenced / (training.n_human + training.n_weak) <= 0.2
    assert summary.events_written / (training.n_human + summary.events_written) > 0.2


def test_model_backed_is_a_boolean():
    with pytest.raises(ConfigError, match="model_backed"):
        load_config(
            overrides={
                "weak_labeling.functions": [
                    {"name": "x", "kind": "python", "target": "a:b", "model_backed": "maybe"}
                ]
            }
        )
