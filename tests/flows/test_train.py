"""The train flow's hand-off: a training run gets exactly the config the flow loaded."""

from configs.schema import load_config
from flows.train import training_inputs
from tasks.training import TrainingInputs


def test_the_flows_give_a_run_the_config_it_was_loaded_with():
    cfg = load_config(overrides={"train.student_steps": 7, "weak_labeling.enabled": True})
    inputs = training_inputs(cfg)
    assert isinstance(inputs, TrainingInputs)
    assert inputs.data == cfg.data_spec() and inputs.train is cfg.train
    assert inputs.settings == cfg.train_settings() and inputs.settings.student_steps == 7
    assert inputs.distributed == cfg.distributed_settings()
    assert inputs.params["train.student_steps"] == "7" and "weak_labeling.enabled" in inputs.params
    assert inputs.config["train"]["student_steps"] == 7 and "gate" in inputs.config
