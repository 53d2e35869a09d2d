"""Training on several processes with torch.distributed: `fit_distributed` runs `fit`
under `torchrun` (DistributedDataParallel) and returns what `fit` returns.

How the loop behaves on N ranks (see `models.train.loop`):
- `batch_size` stays the *global* labeled batch: each rank draws its own shard of
  `batch_size / N` labeled and `uratio` times as many unlabeled images per step, from
  an index generator all ranks share (so together they draw what one process would),
  and augments them with a generator of its own.
- Gradients are averaged by DDP; the FlexMatch learning status is updated on every rank
  from the confident predictions of all ranks (all-gather), and distribution alignment
  from the mean prediction of all ranks (all-reduce), so the thresholds stay identical.
- Only rank 0 evaluates, reports metrics and writes checkpoints; its guard decision is
  broadcast. A checkpoint holds every rank's augmentation generator, so a resumed run
  (same number of ranks) continues exactly.

Launching: `fit_distributed` writes the data (`data.pt`, read memory-mapped by every
rank) and the settings into a job folder, runs
`python -m torch.distributed.run ... -m models.distributed <job folder>`, relays rank
0's metric rows to the caller's callbacks while it runs, and reads the final weights
back. Backend `auto` is `nccl` on CUDA (one GPU per rank, `cuda:<local rank>`) and
`gloo` on CPU. For several nodes, run the same `torch.distributed.run` command with
`--node-rank k` on every other node, on the job folder (shared storage).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from models.augment import AugmentSettings
from models.classifier import ClassifierConfig, build_classifier
from models.pool import ImagePool
from models.ranks import Ranks
from models.train import Callback, TrainData, TrainResult, TrainSettings, fit

JOB_DIR = "ddp"  # inside the run folder
DATA_FILE = "data.pt"
SETTINGS_FILE = "settings.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.pt"
LOG_FILE = "torchrun.log"

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DistributedSettings:
    """Where and how many training processes run. world size = nproc_per_node × nnodes.
    The product's values come from the config (`Config.distributed_settings()`,
    configs/train.py `DistributedConfig`), the one source of their defaults."""

    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int  # 0: a free port (one node only)
    backend: str  # auto: nccl on CUDA, gloo on CPU

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


# -- the launcher (the caller's process) ------------------------------------------------


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies, so that no
    torchrun or rank outlives a killed launcher (an orphaned rank would go on training,
    and finally delete the checkpoint the re-run resumes from). Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_to_json(s: TrainSettings) -> str:
    return json.dumps(dataclasses.asdict(s))


def settings_from_json(text: str) -> TrainSettings:
    d = json.loads(text)
    return TrainSettings(**{**d, "augment": AugmentSettings(**d["augment"])})


def torchrun_command(job: Path, d: DistributedSettings) -> list[str]:
    """The `torch.distributed.run` command line for the job folder."""
    port = d.master_port or _free_port()
    if d.nnodes > 1 and not d.master_port:
        raise ValueError("training on several nodes needs train.distributed.master_port")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={d.nproc_per_node}",
        f"--nnodes={d.nnodes}",
        f"--node-rank={d.node_rank}",
        f"--master-addr={d.master_addr}",
        f"--master-port={port}",
        "-m",
        "models.distributed",
        str(job),
        d.backend,
    ]


def _relay(path: Path, offset: int, callbacks: Sequence[Callback], total: int) -> int:
    """Pass rank 0's new metric rows to the callbacks; returns the new file offset."""
    if not path.exists():
        return offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
    for line in chunk[:end].splitlines():
        msg = json.loads(line)
        for cb in callbacks:
            if msg["kind"] == "metrics":
                cb.on_metrics(int(msg["step"]), msg["row"])
            else:
                cb.on_progress(int(msg["step"]), total)
    return offset + end


def write_job(
    data: TrainData,
    s: TrainSettings,
    run_dir: str | Path,
    keep_checkpoint: bool = False,
    checkpoint_meta: dict[str, str] | None = None,
    pretrain_cache: str | Path | None = None,
) -> Path:
    """The job folder every rank reads: the data (memory-mapped by each rank) and the
    settings. Returns its path (`<run_dir>/ddp`)."""
    job = Path(run_dir) / JOB_DIR
    job.mkdir(parents=True, exist_ok=True)
    tensors = {
        f.name: getattr(data, f.name)
        for f in dataclasses.fields(data)
        if isinstance(getattr(data, f.name), torch.Tensor)
    }
    tmp = job / f".{DATA_FILE}.tmp"
    pools = {}  # a file-backed pool travels as its file, shape and rows
    for name in ("x_lb", "x_ulb"):
        x = getattr(data, name)
        if isinstance(x, ImagePool):
            tensors[f"{name}_rows"] = torch.from_numpy(x.rows)
            pools[name] = {"path": x.path, "shape": list(x.shape)}
    torch.save(tensors, tmp)
    os.replace(tmp, job / DATA_FILE)
    (job / SETTINGS_FILE).write_text(
        json.dumps(
            {
                "settings": dataclasses.asdict(s),
                "pools": pools,
                "run_dir": str(Path(run_dir).resolve()),
                "keep_checkpoint": keep_checkpoint,
                "pretrain_cache": str(pretrain_cache) if pretrain_cache else None,
                "meta": dict(checkpoint_meta or {}),
            }
        )
    )
    for stale in (METRICS_FILE, RESULT_FILE):
        (job / stale).unlink(missing_ok=True)
    return job


def fit_distributed(
    data: TrainData,
    s: TrainSettings,
    d: DistributedSettings,
    run_dir: str | Path,
    callbacks: Sequence[Callback] = (),
    keep_checkpoint: bool = False,
    checkpoint_meta: dict[str, str] | None = None,
    pretrain_cache: str | Path | None = None,
) -> TrainResult:
    """`fit` on `d.world_size` processes under torchrun; see the module docstring."""
    if s.batch_size % d.world_size:
        raise ValueError(
            f"train.batch_size {s.batch_size} must divide evenly over {d.world_size} "
            "training processes (each takes an equal share of every batch)"
        )
    job = write_job(data, s, run_dir, keep_checkpoint, checkpoint_meta, pretrain_cache)
    returncode = run_torchrun(job, d, callbacks, s.total_steps)
    result = finished_result(job, returncode, d.world_size)
    (job / DATA_FILE).unlink(missing_ok=True)
    return result


def finished_result(job: Path, returncode: int, world_size: int) -> TrainResult:
    """What the torchrun run in `job` trained. Rank 0 writes the result only after the
    last step, which every rank takes part in, so a result on disk is a finished run even
    when a rank then failed while shutting down (gloo can abort a process as it tears
    its connections down): that is a warning, not a lost run. No result is an error
    with the ranks' own traceback."""
    text = (job / LOG_FILE).read_text(errors="replace") if (job / LOG_FILE).exists() else ""
    if not (job / RESULT_FILE).exists():
        raise RuntimeError(
            f"distributed training ({world_size} processes) failed with exit code "
            f"{returncode}; the whole log is {job / LOG_FILE}. Run it again to resume from "
            f"its last checkpoint. From the log:\n{log_excerpt(text)}"
        )
    if returncode != 0:
        log.warning(
            "distributed training (%d processes) finished and wrote its result, but a "
            "training process failed while shutting down (exit code %d); the result is "
            "used. The log is %s; its end:\n%s",
            world_size,
            returncode,
            job / LOG_FILE,
            text[-1500:],
        )
    return read_result(job)


def log_excerpt(text: str, first: int = 2500, last: int = 1500) -> str:
    """The part of a torchrun log that says what went wrong: the first traceback a rank
    printed (torchrun's own traceback, at the end, only names the failed rank), then
    the end of the log."""
    marker = "Traceback (most recent call last)"
    start = text.find(marker)
    while start != -1 and "torch/distributed/run.py" in text[start : start + 800]:
        start = text.find(marker, start + len(marker))  # torchrun's own: not the cause
    if start == -1 or start >= len(text) - last:
        return text[-last:]  # nothing a rank printed, or all of it is in the end
    if start + first >= len(text) - last:
        return text[start:]
    return f"{text[start : start + first]}\n[...]\n{text[-last:]}"


def run_torchrun(
    job: Path, d: DistributedSettings, callbacks: Sequence[Callback], total_steps: int
) -> int:
    """Run torchrun on the job folder (its output into the job's log), relaying rank 0's
    rows to `callbacks` while it runs; its exit code. Stopped if the caller is."""
    cmd = torchrun_command(job, d)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    offset = 0
    with (job / LOG_FILE).open("wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only the prctl call, no locks
        )
        try:
            while proc.poll() is None:
                offset = _relay(job / METRICS_FILE, offset, callbacks, total_steps)
                time.sleep(0.5)
        except BaseException:
            proc.terminate()
            proc.wait(timeout=60)
            raise
    _relay(job / METRICS_FILE, offset, callbacks, total_steps)
    return proc.returncode


def read_result(job: Path) -> TrainResult:
    """What rank 0 wrote at the end (`run_rank`), as `fit` returns it."""
    out = torch.load(job / RESULT_FILE, map_location="cpu", weights_only=True)
    config = ClassifierConfig.from_dict(out["classifier"])
    model, teacher = build_classifier(config), build_classifier(config)
    model.load_state_dict(out["model"])
    teacher.load_state_dict(out["teacher"])
    return TrainResult(
        model=model.eval(),
        teacher=teacher.eval(),
        steps=int(out["steps"]),
        resumed_from=int(out["resumed_from"]),
        device=str(out["device"]),
        elapsed_s=float(out["elapsed_s"]),
        history=list(out["history"]),
        pseudo_labeling_off_at=out["pseudo_labeling_off_at"],
    )


def write_result(job: Path, result: TrainResult, device: str) -> None:
    """Rank 0, after the last step: what `read_result` gives the caller (atomically)."""
    assert result.model.config is not None
    tmp = job / f".{RESULT_FILE}.tmp"
    torch.save(
        {
            "classifier": result.model.config.to_dict(),
            "model": result.model.state_dict(),
            "teacher": result.teacher.state_dict(),
            "steps": result.steps,
            "resumed_from": result.resumed_from,
            "device": device,
            "elapsed_s": result.elapsed_s,
            "history": result.history,
            "pseudo_labeling_off_at": result.pseudo_labeling_off_at,
        },
        tmp,
    )
    os.replace(tmp, job / RESULT_FILE)


# -- a rank (a torchrun worker) ----------------------------------------------------------


class _RankZeroRelay(Callback):
    """Rank 0's metric rows and progress, appended to the job's metrics file."""

    def __init__(self, path: Path):
        self.path = path

    def _write(self, msg: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(msg) + "\n")

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._write({"kind": "metrics", "step": step, "row": metrics})

    def on_progress(self, step: int, total: int) -> None:
        if step % 10 == 0 or step == total:
            self._write({"kind": "progress", "step": step})


def run_rank(job: Path, backend: str = "auto") -> None:
    """One torchrun worker: join the group, train, and (rank 0) write the result."""
    die_with_parent()
    spec = json.loads((job / SETTINGS_FILE).read_text())
    s = settings_from_json(json.dumps(spec["settings"]))
    use_cuda = s.device in ("cuda", "auto") and torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    try:
        ranks = Ranks.current()
        tensors = torch.load(job / DATA_FILE, map_location="cpu", weights_only=True, mmap=True)
        for name, pool in spec["pools"].items():
            rows = tensors.pop(f"{name}_rows").numpy()
            tensors[name] = ImagePool(pool["path"], tuple(pool["shape"]), rows)
        data = TrainData(**tensors)
        callbacks = [_RankZeroRelay(job / METRICS_FILE)] if ranks.is_main else []
        result = fit(
            data,
            s,
            run_dir=spec["run_dir"],
            callbacks=callbacks,
            keep_checkpoint=spec["keep_checkpoint"],
            checkpoint_meta=spec["meta"],
            pretrain_cache=spec["pretrain_cache"],
        )
        if ranks.is_main:
            write_result(job, result, f"{result.device} x{ranks.world_size} ({backend})")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_rank(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "auto")
