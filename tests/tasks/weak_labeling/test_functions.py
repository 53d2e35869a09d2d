"""Labeling functions as configured: a `python` function's floor and whether a model
shaped its votes, on a real store through weak labeling and training's resolution; the
built-in families (external files, knn, prototype) and the reference they compare with.

The functions below are `python` labeling functions of these tests
(`tests.tasks.weak_labeling.test_functions:<name>`)."""

import numpy as np
import pyarrow.compute as pc
import pytest

from configs.schema import ConfigError, load_config
from flows.weak_label import weak_label_inputs
from tasks.store import LABELS, Store
from tasks.weak_labeling import LabelingFunctionError, LFBatch, labeling_function
from tasks.weak_labeling.run import weak_label_store
from tests.tasks.weak_labeling.conftest import store_overrides

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
    return {**store_overrides(cfg), "weak_labeling.min_gold_covered": 10}


def test_an_explicit_floor_of_zero_in_config_is_honoured(store_cfg):
    """0.0 is a floor (never quarantine), not "unset": it overrides the code's 0.9."""
    functions = [{"name": "coin", "kind": "python", "target": f"{HERE}:strict_coin"}]
    cfg = load_config(overrides={**_ov(store_cfg), "weak_labeling.functions": functions})
    (coin,) = weak_label_store(weak_label_inputs(cfg), "run-default").functions
    assert coin.quarantined and "below its floor 0.9" in coin.reason  # the code's floor

    functions[0]["accuracy_floor"] = 0.0
    cfg = load_config(overrides={**_ov(store_cfg), "weak_labeling.functions": functions})
    (coin,) = weak_label_store(weak_label_inputs(cfg), "run-zero").functions
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
    summary = weak_label_store(weak_label_inputs(cfg), "run-W")
    events = Store(cfg.store.root).read(LABELS).filter(pc.field("source_kind") == "label_model")
    assert events.num_rows == summary.events_written > 0
    assert all(events.column("model_influenced").to_pylist())
    training = load_training_data(Store(cfg.store.root), cfg.data_spec(), cfg.train, cfg.labels)
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


def _spec(**kw):
    from configs.weak_labeling import LabelingFunctionConfig

    return LabelingFunctionConfig(**kw)


def _batch(ids, images=None) -> LFBatch:
    return LFBatch(list(ids), images if images is not None else np.zeros((len(ids), 1, 2, 2)))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_external_function_votes_the_labels_of_its_file(tmp_path, suffix):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from tasks.weak_labeling.functions import external_function

    table = pa.table({"example_id": ["x", "y", "z", "w"], "label": ["b", "not-a-class", "a", None]})
    path = tmp_path / f"votes{suffix}"
    (pq.write_table if suffix == ".parquet" else pcsv.write_csv)(table, path)
    lf = external_function(_spec(name="ext", kind="external", path=str(path)), {"a": 0, "b": 1})
    assert (lf.name, lf.source_kind, lf.model_influenced) == ("ext", "external", False)
    votes = lf(_batch(["z", "y", "x", "unknown", "w"]))
    np.testing.assert_array_equal(votes, [0, -1, 1, -1, -1])  # outside the taxonomy: abstain


def test_misconfigured_functions_say_what_they_need():
    from tasks.weak_labeling.functions import external_function, python_function

    with pytest.raises(LabelingFunctionError, match="needs path"):
        external_function(_spec(name="e", kind="external"), {"a": 0})
    with pytest.raises(LabelingFunctionError, match="package.module:function"):
        python_function(_spec(name="p", kind="python", target="no_colon"))
    with pytest.raises(LabelingFunctionError, match="cannot import 'nowhere.at_all:f'"):
        python_function(_spec(name="p", kind="python", target="nowhere.at_all:f"))


def test_a_python_function_takes_its_name_from_config_and_keeps_its_declarations():
    from tasks.weak_labeling.functions import python_function

    lf = python_function(_spec(name="mine", kind="python", target=f"{HERE}:declared_model_backed"))
    assert (lf.name, lf.model_backed, lf.accuracy_floor) == ("mine", True, None)
    lf = python_function(_spec(name="plain", kind="python", target=f"{HERE}:bar_position"))
    assert (lf.name, lf.source_kind, lf.model_influenced) == ("plain", "rule", False)
    strict = python_function(
        _spec(name="s", kind="python", target=f"{HERE}:strict_coin", accuracy_floor=0.5)
    )
    assert strict.accuracy_floor == 0.5  # config over code


def test_knn_and_prototype_vote_the_class_of_the_nearest_references():
    from tasks.weak_labeling.functions import (
        Embedder,
        Reference,
        knn_function,
        prototype_function,
    )

    def image(level: int, side: int) -> np.ndarray:
        out = np.zeros((1, 4, 4), np.uint8)
        out[0, :, :2] = level if side == 0 else 0
        out[0, :, 2:] = level if side == 1 else 0
        return out

    ref = Reference(
        np.stack([image(200, 0), image(180, 0), image(220, 0), image(200, 1), image(190, 1)]),
        np.array([0, 0, 0, 1, 1]),
    )
    embed = Embedder("pixels", ref, dims=2)
    batch = _batch(["l", "r"], np.stack([image(210, 0), image(170, 1)]))
    knn = knn_function(_spec(name="knn", kind="knn", k=2), ref, embed, 2)
    np.testing.assert_array_equal(knn(batch), [0, 1])
    # three neighbours of "r": two of class 1, one of class 0; 2/3 agree, below 0.8
    knn3 = knn_function(_spec(name="knn3", kind="knn", k=3), ref, embed, 2)
    np.testing.assert_array_equal(knn3(batch), [0, -1])
    proto = prototype_function(_spec(name="p", kind="prototype"), ref, embed, 2)
    np.testing.assert_array_equal(proto(batch), [0, 1])
    assert not knn.model_influenced and not proto.model_influenced

    pca = Embedder("pca", ref, dims=2)
    z = pca(batch.images)
    assert z.shape == (2, 2)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)


def test_the_reference_is_the_human_labels_outside_gold(store_cfg):
    from tasks.store import Store, gold_mask
    from tasks.weak_labeling.functions import human_labels, load_reference

    store = Store(store_cfg.store.root)
    data = store_cfg.data_spec()
    human = human_labels(store, list(data.classes))
    outside = [
        e
        for e, g in zip(
            human, gold_mask(list(human), data.gold.fraction, data.gold.salt), strict=True
        )
        if not g
    ]
    assert 0 < len(outside) < len(human) == 150
    ref = load_reference(store, data, batch_rows=16)
    assert ref.images.shape == (len(outside), 1, 28, 28) and ref.images.dtype == np.uint8
    assert sorted(ref.labels.tolist()) == sorted(human[e] for e in outside)


def test_function_names_must_be_unique(store_cfg):
    from tasks.weak_labeling.functions import build_functions

    twice = [{"name": "bar", "kind": "python", "target": f"{HERE}:bar_position"}] * 2
    cfg = load_config(overrides={**_ov(store_cfg), "weak_labeling.functions": twice})
    with pytest.raises(LabelingFunctionError, match=r"duplicate names \['bar'\]"):
        build_functions(Store(cfg.store.root), weak_label_inputs(cfg))
