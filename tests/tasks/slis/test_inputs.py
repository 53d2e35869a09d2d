"""What the label-health tasks take from the config, as the flows build it."""

from configs.schema import load_config
from flows.monitor import label_health_inputs
from tasks.slis.inputs import gold_split
from tasks.store import GoldSplit


def test_the_flows_inputs_carry_the_configs_sections():
    cfg = load_config(
        overrides={
            "gold.fraction": 0.5,
            "gold.salt": "s",
            "gold.test_share": 0.25,
            "train.tau": 0.9,
        }
    )
    inputs = label_health_inputs(cfg)
    assert inputs.data == cfg.data_spec() and inputs.tau == 0.9
    assert (inputs.health, inputs.labels, inputs.metrics) == (cfg.health, cfg.labels, cfg.metrics)
    assert (inputs.weak_labeling, inputs.mlflow) == (cfg.weak_labeling, cfg.mlflow)
    assert gold_split(inputs.data) == GoldSplit(0.5, "s", 0.25)
