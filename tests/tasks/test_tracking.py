"""How runs are tracked: which config keys become a run's params."""

from configs.schema import load_config
from tasks.tracking import NOT_MODEL_PARAMS, model_params


def test_params_are_the_keys_that_change_the_model_and_only_those():
    cfg = load_config(overrides={"weak_labeling.enabled": True})
    params = model_params(cfg)
    # what changes the trained model: data selection, seeds, schedule, the guard, weak labels
    for key in (
        "seed",
        "taxonomy.classes",
        "gold.salt",
        "labels.confidence_floor",
        "train.lr",
        "train.augment.n_ops",
        "train.eval_every",  # when the guard can switch pseudo-labeling off
        "health.pseudo_label_precision_floor",
        "weak_labeling.label_model",
        "weak_labeling.min_gold_covered",
    ):
        assert key in params, key
    # where, how fast or how visibly it trains; and the gate, which only judges the model
    left_out = [k for k in params if any(k == x or k.startswith(f"{x}.") for x in NOT_MODEL_PARAMS)]
    assert left_out == []
    for key in ("train.run_dir", "train.distributed.nproc_per_node", "weak_labeling.workers"):
        assert key not in params
    assert not any(k.startswith(("gate.", "store.", "mlflow.", "monitor.")) for k in params)
    # weak labeling's keys only when it runs
    assert not any(k.startswith("weak_labeling.") for k in model_params(load_config()))


def test_every_excluded_key_exists_and_says_why():
    cfg = load_config(overrides={"weak_labeling.enabled": True})
    data = cfg.model_dump(mode="json")
    for key, why in NOT_MODEL_PARAMS.items():
        node = data
        for part in key.split("."):
            assert part in node, f"NOT_MODEL_PARAMS names {key!r}, not a config key"
            node = node[part]
        assert why
