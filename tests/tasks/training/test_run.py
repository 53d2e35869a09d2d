"""A training run against a real store and a real MLflow (SQLite) store: what it logs,
and the checkpoint folder it claims."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch

from configs.schema import DistributedConfig
from models.train import CHECKPOINT
from tasks.model_artifact import load_classifier
from tasks.store import Store
from tasks.tracking import ensure_experiment
from tasks.training import claim_run_dir, train_and_log

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_train_and_log_records_a_complete_mlflow_run(store_cfg):
    summary, result = train_and_log(store_cfg)
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
    probs = mlflow.pyfunc.load_model(summary.model_uri).predict(x.numpy())
    assert torch.allclose(torch.from_numpy(probs), torch.softmax(result.model(x), 1), atol=1e-5)
    assert Store(store_cfg.store.root).count_snapshot(summary.snapshot_id) > 0
    assert not Path(summary.run_dir).exists()  # a finished run leaves no checkpoint behind
    # each class's late share of the pseudo-label weight, and the collapse verdict
    shares = [run.data.metrics[f"pseudo_labels/share_{c}"] for c in store_cfg.taxonomy.classes]
    assert sum(shares) == pytest.approx(1.0, abs=1e-4)
    assert run.data.tags["semilabel.pseudo_label_collapse"] == summary.pseudo_label_classes


@pytest.mark.slow
def test_a_seeded_start_is_logged_and_its_pre_phase_cached_for_the_next_retrain(store_cfg):
    seeded = {"start": "seeded", "pretrain_steps": 3, "pretrain_batch_size": 32}
    train = store_cfg.train.model_copy(update={**seeded, "propagate_per_class": 2})
    cfg = store_cfg.model_copy(update={"train": train})
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    first, _ = train_and_log(cfg)
    logged = client.get_run(first.mlflow_run_id).data.metrics
    assert logged["train/start_seeded"] == 1 and logged["train/pretrain_loss"] > 0
    assert logged["train/seeded_labels"] == 6  # 2 a class x 3 classes
    cached = list(Path(cfg.store.root).parent.rglob("pretrain/*.pt"))
    assert len(cached) == 1
    # the next retrain on the same pool reads the weights: no pre-phase loss to log
    again, _ = train_and_log(cfg)
    logged = client.get_run(again.mlflow_run_id).data.metrics
    assert logged["train/start_seeded"] == 1 and "train/pretrain_loss" not in logged
    assert logged["train/seeded_labels"] == 6


@pytest.mark.slow
def test_two_training_processes_log_one_run_from_rank_zero(store_cfg):
    spread = DistributedConfig(nproc_per_node=2, backend="gloo")
    # and the unlabeled pool read from the decoded cache file by each rank
    train = store_cfg.train.model_copy(update={"distributed": spread, "pool_memory_mb": 0})
    cfg = store_cfg.model_copy(update={"train": train})
    summary, result = train_and_log(cfg)
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


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from tasks.training import claim_run_dir
with claim_run_dir(Path({base!r}), "k", "run-a") as d:
    (d / "checkpoint.pt").write_bytes(b"x")
    print(d, flush=True)
    time.sleep(600)
"""


def test_two_runs_with_the_same_settings_and_data_get_their_own_folders(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER.format(repo=str(REPO), base=str(tmp_path)))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        held = Path(holder.stdout.readline().strip())
        assert held.name == "train-k-run-a"
        # A concurrent run of the same key does not touch the live run's checkpoint...
        with claim_run_dir(tmp_path, "k", "run-b") as mine:
            assert mine != held and mine.name == "train-k-run-b"
        holder.kill()
        holder.wait(timeout=30)
        # ...but once its owner is gone, a new run of the same key resumes its checkpoint.
        with claim_run_dir(tmp_path, "k", "run-c") as adopted:
            assert adopted == held and (adopted / CHECKPOINT).exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_restarted_flow_run_claims_its_own_folder_first(tmp_path: Path):
    for owner in ("run-a", "run-b"):
        (tmp_path / f"train-k-{owner}").mkdir()
        (tmp_path / f"train-k-{owner}" / CHECKPOINT).write_bytes(owner.encode())
    with claim_run_dir(tmp_path, "k", "run-b") as d:
        assert (d / CHECKPOINT).read_bytes() == b"run-b"
    # finished without a checkpoint: the folder goes, the other one stays
    with claim_run_dir(tmp_path, "k", "run-a") as d:
        os.remove(d / CHECKPOINT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-k-run-b"]


def test_a_collapsed_class_is_warned_about_and_tagged(store_cfg, caplog):
    from models import TrainResult
    from tasks.training.run import report_pseudo_label_shares

    classes = ("0", "1", "2")
    late = [
        {"pseudo_labels_class_0": 50.0, "pseudo_labels_class_1": 49.0, "pseudo_labels_class_2": 1.0}
    ]
    result = TrainResult(None, None, 1, 0, "cpu", 0.0, history=late)  # type: ignore[arg-type]
    training = SimpleNamespace(class_counts={"0": 9, "1": 9, "2": 9})  # prior: a third each
    m = store_cfg.mlflow
    ensure_experiment(m.tracking_uri, m.experiment, m.artifact_root)
    with mlflow.start_run() as run, caplog.at_level("WARNING"):
        said = report_pseudo_label_shares(result, classes, training)
    assert said == "2 collapsed (1.0% vs 33.3%)"
    assert (
        "pseudo-labels of class 2 collapsed" in caplog.text
        and "distribution_alignment" in caplog.text
    )
    logged = mlflow.MlflowClient(store_cfg.mlflow.tracking_uri).get_run(run.info.run_id).data
    assert logged.tags["semilabel.pseudo_label_collapse"] == said
    assert logged.metrics["pseudo_labels/share_2"] == pytest.approx(0.01)
