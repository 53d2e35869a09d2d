"""A training run (`tasks/training/run.py`) against a real store and a real MLflow
(SQLite) store: what it logs, the model it logs, one run from two training processes."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch

from configs.schema import load_config
from configs.train import DistributedConfig
from flows.train import training_inputs
from tasks.progress import set_listener, stage_progress
from tasks.registry.model_format import load_classifier
from tasks.store import Store
from tasks.training import train_and_log
from tasks.training.run import MlflowMetrics, mlflow_run, run_key
from tests.conftest import ingest_folder


@pytest.mark.slow
def test_train_and_log_records_a_complete_mlflow_run(store_cfg):
    summary, result = train_and_log(training_inputs(store_cfg))
    assert summary.steps == 60 and summary.device == "cpu"
    assert summary.student_gold_accuracy >= 0.9
    client = mlflow.MlflowClient(store_cfg.mlflow.tracking_uri)
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.params["train.teacher_steps"] == "30"
    assert run.data.params["data.n_gold_dev"] == str(summary.n_gold_dev)
    assert run.data.tags["semilabel.snapshot_id"] == summary.snapshot_id
    assert run.data.tags["semilabel.device"] == "cpu"
    for key in (  # grouped names: train/, eval_gold/, pseudo_labels/<class>
        "train/loss_sup",
        "train/loss_unsup",
        "train/mask_rate",
        "pseudo_labels/class_0",
        "eval_gold/teacher_accuracy",
        "eval_gold/student_accuracy",
        "eval_gold/pseudo_label_precision",
    ):
        assert client.get_metric_history(summary.mlflow_run_id, key), key
    assert len(client.get_metric_history(summary.mlflow_run_id, "train/loss")) == 6  # 10 steps
    # train.start auto with more than train.few_labels human labels a class: the labels alone
    few = float(run.data.params["train.few_labels"])
    assert run.data.params["train.start"] == "auto" and run.data.metrics["train/start_seeded"] == 0
    assert run.data.metrics["train/smallest_class_labels"] > few
    assert "train/pretrain_loss" not in run.data.metrics
    assert "phase" not in run.data.metrics and run.data.tags["semilabel.student_from_step"] == "30"
    # only the keys that change the model are params; the whole config is config.json
    assert not any(
        k.startswith(("store.", "source.", "ingest.", "mlflow.")) for k in run.data.params
    )
    # the training snapshot is the run's dataset, its digest the snapshot id
    (ds_input,) = run.inputs.dataset_inputs
    assert ds_input.dataset.digest == summary.snapshot_id
    assert [t.value for t in ds_input.tags if t.key == "mlflow.data.context"] == ["training"]
    # The logged model is rebuilt from its spec and weights (no pickle) and predicts
    # exactly like the trained one; MLflow's pyfunc flavor gives its probabilities.
    loaded = load_classifier(summary.model_uri, store_cfg.mlflow.tracking_uri)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded(x), result.model(x), atol=1e-5)
    mlflow.set_tracking_uri(store_cfg.mlflow.tracking_uri)
    pixels = (x * 255).round().to(torch.uint8)  # what a client sends: 8-bit images
    out = mlflow.pyfunc.load_model(summary.model_uri).predict(pixels.numpy())
    probs = torch.tensor(out[list(store_cfg.taxonomy.classes)].to_numpy())
    assert torch.allclose(probs, torch.softmax(result.model(pixels / 255), 1), atol=1e-5)
    assert Store(store_cfg.store.root).count_snapshot(summary.snapshot_id) > 0
    assert not Path(summary.run_dir).exists()  # a finished run leaves no checkpoint behind
    # each class's late share of the pseudo-label weight, and the collapse verdict
    shares = [run.data.metrics[f"pseudo_labels/share_{c}"] for c in store_cfg.taxonomy.classes]
    assert sum(shares) == pytest.approx(1.0, abs=1e-4)
    assert run.data.tags["semilabel.pseudo_label_collapse"] == summary.pseudo_label_collapse


@pytest.mark.slow
def test_a_seeded_start_is_logged_and_its_pre_phase_cached_for_the_next_retrain(store_cfg):
    seeded = {"start": "seeded", "pretrain_steps": 3, "pretrain_batch_size": 32}
    train = store_cfg.train.model_copy(update={**seeded, "propagate_per_class": 2})
    cfg = store_cfg.model_copy(update={"train": train})
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    first, _ = train_and_log(training_inputs(cfg))
    logged = client.get_run(first.mlflow_run_id).data.metrics
    assert logged["train/start_seeded"] == 1 and logged["train/pretrain_loss"] > 0
    assert logged["train/seeded_labels"] == 6  # 2 a class x 3 classes
    cached = list(Path(cfg.store.root).parent.rglob("pretrain/*.pt"))
    assert len(cached) == 1
    # the next retrain on the same pool reads the weights: no pre-phase loss to log
    again, _ = train_and_log(training_inputs(cfg))
    logged = client.get_run(again.mlflow_run_id).data.metrics
    assert logged["train/start_seeded"] == 1 and "train/pretrain_loss" not in logged
    assert logged["train/seeded_labels"] == 6


@pytest.mark.slow
def test_colour_photos_of_mixed_sizes_train_with_the_seeded_start(tmp_path: Path):
    from tests.conftest import COLOUR_CLASSES, colour_folder, tiny_run_overrides

    folder = colour_folder(tmp_path / "photos", n=150, n_labeled=60)
    overrides = tiny_run_overrides(tmp_path, folder, f"sqlite:///{tmp_path / 'mlflow.db'}")
    overrides |= {
        "taxonomy.classes": sorted(COLOUR_CLASSES),
        "train.channels": 3,
        "train.image_size": 32,
        "train.start": "seeded",
        "train.pretrain_steps": 3,
        "train.pretrain_batch_size": 32,
        "train.propagate_per_class": 2,
        "train.seeded_student_steps": 40,  # the seeded schedule: 10 more than 30
    }
    cfg = load_config(overrides=overrides)
    ingest_folder(cfg, folder, "photos")
    heard: list[tuple[int, int | None]] = []
    set_listener(lambda stage, done, total: heard.append((done, total)))
    try:
        inputs = training_inputs(cfg)
        bar = stage_progress("train", inputs.settings.total_steps)  # as train_candidate
        summary, result = train_and_log(inputs, progress=bar)
    finally:
        set_listener(None)
    logged = mlflow.MlflowClient(cfg.mlflow.tracking_uri).get_run(summary.mlflow_run_id)
    assert logged.data.metrics["train/start_seeded"] == 1
    # the CLI bar counts to the seeded schedule's steps, not the configured 30 + 30
    assert summary.steps == 30 + 40
    assert heard[0] == (0, 60) and heard[-1] == (70, 70)
    assert logged.data.metrics["train/seeded_labels"] == 6
    assert result.model.config.in_channels == 3 and result.model.config.image_size == 32
    # per-channel normalization from the data: three different means for colour data
    assert len(set(result.model.config.mean)) == 3


@pytest.mark.slow
def test_two_training_processes_log_one_run_from_rank_zero(store_cfg):
    spread = DistributedConfig(nproc_per_node=2, backend="gloo")
    # and the unlabeled pool read from the decoded cache file by each rank
    train = store_cfg.train.model_copy(update={"distributed": spread, "pool_memory_mb": 0})
    cfg = store_cfg.model_copy(update={"train": train})
    summary, result = train_and_log(training_inputs(cfg))
    assert summary.steps == 60 and summary.device == "cpu x2 (gloo)"
    assert summary.student_gold_accuracy >= 0.9
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.tags["semilabel.world_size"] == "2"
    # the same curves as one process, once (rank 0 only): 10-step rows, evaluations
    assert len(client.get_metric_history(summary.mlflow_run_id, "train/loss")) == 6
    assert client.get_metric_history(summary.mlflow_run_id, "eval_gold/student_accuracy")
    loaded = load_classifier(summary.model_uri, cfg.mlflow.tracking_uri)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded(x), result.model(x), atol=1e-5)
    assert not Path(summary.run_dir).exists()


# The run's params: the config keys that change the trained model (issue 24, item 8).
MODEL_PARAM_KEYS = {
    "seed",
    "taxonomy.classes",
    *(f"gold.{k}" for k in ("fraction", "salt", "test_share")),
    "labels.confidence_floor",
    "labels.max_model_share",
    "health.guard_margin",
    "health.guard_warmup_steps",
    *(
        f"train.{k}"
        for k in [
            "network",
            "pretrained",
            "image_size",
            "channels",
            "teacher_steps",
            "student_steps",
            "seeded_student_steps",
            "batch_size",
            "uratio",
            "lr",
            "weight_decay",
            "ema_decay",
            "threshold",
            "tau",
            "threshold_momentum",
            "fairness_weight",
            "lambda_u",
            "distribution_alignment",
            "start",
            "few_labels",
            "pretrain_steps",
            "pretrain_batch_size",
            "propagate_per_class",
            "pseudo_label_source",
            "human_share",
            "bf16",
            "eval_every",
            "as_of",
            "shuffle_labels",
            "augment.pad",
            "augment.flip",
            "augment.n_ops",
            "augment.cutout",
            "augment.colour",
        ]
    ),
    *(f"data.n_{k}" for k in ("human", "weak", "model_influenced", "unlabeled", "gold_dev")),
}
WEAK_LABELING_KEYS = {
    f"weak_labeling.{k}"
    for k in ("enabled", "functions", "label_model", "accuracy_floor", "min_gold_covered")
}


@pytest.mark.slow
def test_only_the_settings_that_change_the_model_are_params(store_cfg):
    short = {"teacher_steps": 3, "student_steps": 3, "eval_every": 3}
    train = store_cfg.train.model_copy(update=short)
    cfg = store_cfg.model_copy(update={"train": train})
    summary, _ = train_and_log(training_inputs(cfg))
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    params = client.get_run(summary.mlflow_run_id).data.params
    assert set(params) == MODEL_PARAM_KEYS
    assert params["seed"] == "0" and params["taxonomy.classes"] == "['0', '1', '2']"
    assert params["health.guard_margin"] == "0.05"
    assert params["train.teacher_steps"] == "3"  # the names kept are the names they had
    # what is left out (paths, cadence, placement, the gate) is still in config.json
    saved = json.loads(
        Path(client.download_artifacts(summary.mlflow_run_id, "config.json")).read_text()
    )
    assert saved["train"]["run_dir"] == cfg.train.run_dir and "gate" in saved


def test_a_checkpoint_is_resumed_only_with_the_same_settings_data_and_store():
    from models import TrainData

    def training(label: int) -> SimpleNamespace:
        x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
        return SimpleNamespace(data=TrainData(x, torch.full((4,), label), torch.ones(4), x))

    settings = load_config(None).train_settings()
    key = run_key(settings, training(0), "/store")
    assert key == run_key(settings, training(0), "/store") and len(key) == 12
    assert key != run_key(dataclasses.replace(settings, lr=0.01), training(0), "/store")
    assert key != run_key(settings, training(1), "/store")
    assert key != run_key(settings, training(0), "/other-store")


def test_an_mlflow_run_is_opened_and_ended_here_unless_the_caller_has_one(tmp_path: Path):
    tracking = load_config(
        overrides={"mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    ).mlflow
    with mlflow_run(tracking, "mine") as run_id:
        MlflowMetrics(("cat", "dog")).on_metrics(
            10, {"loss": 0.5, "pseudo_labels_class_1": 3.0, "phase": 1.0, "mask_rate": float("nan")}
        )
        assert mlflow.active_run().info.run_id == run_id
    assert mlflow.active_run() is None
    client = mlflow.MlflowClient(tracking.tracking_uri)
    logged = client.get_run(run_id)
    assert logged.info.run_name == "mine" and logged.info.status == "FINISHED"
    # grouped names; `phase` is no curve, and NaN is not logged
    assert logged.data.metrics == {"train/loss": 0.5, "pseudo_labels/class_dog": 3.0}
    with mlflow.start_run() as caller:
        with mlflow_run(tracking, "not used") as run_id:
            assert run_id == caller.info.run_id
        assert mlflow.active_run().info.run_id == caller.info.run_id  # still the caller's
