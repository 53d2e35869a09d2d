"""The teacher–student training loop.

1. Teacher: supervised cross-entropy on labeled data (human labels weight 1, weak
   labels weighted by their confidence), weak augmentation.
2. Student: starts from the teacher; each step sees a labeled batch and `uratio`
   times as many unlabeled examples. The pseudo-label source (the EMA of the student,
   the frozen teacher, or the student itself, FixMatch-style) predicts the weakly
   augmented view; where it is confident enough (a fixed or class-adaptive threshold)
   its hard label is the target for the strongly augmented view.

The loop knows nothing about MLflow or Prefect: it reports through callbacks. The
dataset lives on the training device as uint8 and is augmented there in batches.
Checkpoints go to `run_dir` every `checkpoint_every` steps; a run restarted with the
same settings and data resumes from the last one and finishes at the same step.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import os
import pickle
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from models.augment import AugmentSettings, strong, weak
from models.ema import ModelEMA
from models.losses import (
    DistributionAlignment,
    FixedThreshold,
    FlexMatchThreshold,
    consistency_loss,
    supervised_loss,
)
from models.networks import build_network

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainSettings:
    num_classes: int
    network: str = "small_cnn"
    teacher_steps: int = 300
    student_steps: int = 700
    batch_size: int = 64  # labeled examples per step
    uratio: int = 7  # unlabeled examples per labeled example
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ema_decay: float = 0.99
    threshold: Literal["fixed", "flexmatch"] = "flexmatch"
    tau: float = 0.95
    lambda_u: float = 1.0
    # The feedback-loop guard: when the pseudo-labels the threshold keeps on the
    # evaluation set are right less often than this (judged once at least
    # `guard_min_pseudo_labels` are kept), the unlabeled loss is switched off for the rest
    # of the run. None: no guard.
    pseudo_label_precision_floor: float | None = None
    guard_min_pseudo_labels: int = 20
    distribution_alignment: bool = False
    pseudo_label_source: Literal["ema", "teacher", "self"] = "ema"
    # > 0: this share of every labeled batch is drawn from the human labels (TrainData.
    # human_lb), the rest from the weak ones, however many more weak labels there are.
    human_share: float = 0.0
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    device: str = "auto"
    bf16: bool = True  # autocast to bfloat16 on CUDA; ignored on CPU
    compile: bool = False  # torch.compile the network (CUDA)
    checkpoint_every: int = 200
    eval_every: int = 100
    log_every: int = 10
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.teacher_steps + self.student_steps


@dataclass
class TrainData:
    """Training tensors (uint8 images, (N, C, H, W)) and an optional evaluation set."""

    x_lb: torch.Tensor
    y_lb: torch.Tensor
    w_lb: torch.Tensor  # (N,) label weights: 1 for human labels, confidence for weak ones
    x_ulb: torch.Tensor
    x_eval: torch.Tensor | None = None  # evaluation only (e.g. the gold holdout)
    y_eval: torch.Tensor | None = None
    human_lb: torch.Tensor | None = None  # (N,) bool: which labels are human (for human_share)

    def fingerprint(self) -> str:
        """A cheap content hash, so a checkpoint is only resumed on the same data."""
        h = hashlib.sha256()
        for t in (self.x_lb, self.y_lb, self.w_lb, self.x_ulb):
            h.update(str(tuple(t.shape)).encode())
            flat = t.reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(flat[::step].cpu().numpy().tobytes())
        return h.hexdigest()[:16]


class Callback:
    """Receives what the loop reports. Override what you need."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_progress(self, step: int, total: int) -> None: ...


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild a `Classifier` before loading its state dict: a model
    is stored as this config plus weights, never as a pickled module."""

    network: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        return cls(
            network=str(d["network"]),
            num_classes=int(d["num_classes"]),
            in_channels=int(d["in_channels"]),
            image_size=int(d["image_size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )


class Classifier(nn.Module):
    """A network with its input normalization: takes float images in [0, 1]."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.config: ClassifierConfig | None = None  # set by build_classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.net((x - self.mean) / self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D)
        return self.net.features((x - self.mean) / self.std)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penultimate layer (B, D) and the logits (B, K) from one forward pass."""
        z = self.features(x)
        return z, self.net.head(z)


def build_classifier(config: ClassifierConfig) -> Classifier:
    """A fresh classifier (random weights) of the given shape; load a state dict into it."""
    net = build_network(config.network, config.num_classes, config.in_channels, config.image_size)
    model = Classifier(net, config.mean, config.std)
    model.config = config
    return model


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds more than tensors and plain values (loading it could run code)."""


@dataclass
class TrainResult:
    model: Classifier  # the EMA student (or the teacher if there were no student steps)
    teacher: Classifier
    steps: int
    resumed_from: int
    device: str
    elapsed_s: float
    history: list[dict[str, float]]
    pseudo_labeling_off_at: int | None = None  # the step the feedback-loop guard fired


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu. Asking for an absent device fails now."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "train.device is 'cuda' but CUDA is not available on this machine; "
            "use train.device=auto or cpu"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("train.device is 'mps' but MPS is not available on this machine")
    return dev


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (B, C, H, W), on a sample."""
    sample = to_float(x[: min(len(x), 10_000)])
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def lr_at(step: int, total: int, base: float) -> float:
    """FixMatch's cosine decay lr * cos(7πk / 16K)."""
    return base * math.cos(7 * math.pi * step / (16 * max(total, 1)))


def _optimizer(model: nn.Module, s: TrainSettings, device: torch.device) -> torch.optim.SGD:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": s.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=s.lr,
        momentum=s.momentum,
        nesterov=True,
        foreach=device.type != "cpu" or None,
    )


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1024
) -> torch.Tensor:
    """Softmax probabilities (N, K) for uint8 images (N, C, H, W), on the CPU."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i : i + batch_size].to(device, non_blocking=True))
        out.append(torch.softmax(model(xb).float(), 1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill never leaves a half-written checkpoint


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """A checkpoint's state, read with `weights_only=True`: tensors and plain values only,
    so a file planted in the run folder cannot run code when it is read."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        why = [ln.strip() for ln in str(exc).splitlines() if "WeightsUnpickler error" in ln]
        raise UnsafeCheckpointError(
            f"checkpoint {str(path)!r} holds objects other than tensors and plain values, "
            "so it was not loaded: loading it could run code"
            + (f" ({why[0]})" if why else "")
            + ". Delete it to start this training run over."
        ) from None


@dataclass(frozen=True)
class StepOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    pseudo: torch.Tensor  # (U,) pseudo-labels of the unlabeled batch
    mask: torch.Tensor  # (U,) 1 where the pseudo-label is used


def student_step(
    model: nn.Module,
    x_lb: torch.Tensor,
    y_lb: torch.Tensor,
    w_lb: torch.Tensor,
    x_ulb_w: torch.Tensor,
    x_ulb_s: torch.Tensor,
    idx_ulb: torch.Tensor,
    *,
    thr: FixedThreshold,
    source: nn.Module | None = None,
    align: DistributionAlignment | None = None,
    lambda_u: float = 1.0,
) -> StepOutput:
    """One semi-supervised step's loss (USB's `train_step`). Float views (B, C, H, W):
    the labeled batch, and the weak and strong views of the unlabeled batch.

    The pseudo-label source predicts the weak view: the model itself (`source=None`, as
    FixMatch; its weak-view logits are detached) or a frozen module (EMA or teacher, run
    without gradient). Where confident enough its hard label is the target for the strong
    view, so the unlabeled loss's gradient reaches the model through the strong view only.
    """
    b_lb, b_ulb = len(x_lb), len(x_ulb_w)
    # One forward over labeled, weak and strong views (as FixMatch does), so BatchNorm
    # statistics see clean-ish images, not only strong ones.
    logits = model(torch.cat([x_lb, x_ulb_w, x_ulb_s]))
    logits_lb, logits_w, logits_s = logits.split([b_lb, b_ulb, b_ulb])
    if source is None:
        logits_w = logits_w.detach()
    else:
        with torch.no_grad():
            logits_w = source(x_ulb_w)
    probs = torch.softmax(logits_w.float(), 1)
    if align is not None:
        probs = align(probs)
    mask, pseudo = thr.select(probs, idx_ulb)
    loss_sup = supervised_loss(logits_lb, y_lb, w_lb)
    loss_u = consistency_loss(logits_s, pseudo, mask)
    metrics = {
        "loss_sup": loss_sup.detach(),
        "loss_unsup": loss_u.detach(),
        "mask_rate": mask.mean(),
    }
    return StepOutput(loss_sup + lambda_u * loss_u, metrics, pseudo, mask)


def labeled_groups(
    human_lb: torch.Tensor | None, share: float, batch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(human indices, weak indices, human rows per batch) when a labeled batch is to be
    drawn in those proportions; None (uniform draws) when either group is empty."""
    if share <= 0 or human_lb is None:
        return None
    human = torch.nonzero(human_lb, as_tuple=True)[0].to(device)
    weak = torch.nonzero(~human_lb, as_tuple=True)[0].to(device)
    if len(human) == 0 or len(weak) == 0:
        return None
    return human, weak, min(batch, max(1, round(batch * share)))


def sample_labeled(
    n: int,
    groups: tuple[torch.Tensor, torch.Tensor, int] | None,
    batch: int,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Indices of one labeled batch: uniform over all `n`, or a fixed number of human
    rows plus weak rows (see `labeled_groups`)."""
    if groups is None:
        return torch.randint(0, n, (batch,), generator=gen, device=device)
    human, weak, b_h = groups
    pick_h = torch.randint(0, len(human), (b_h,), generator=gen, device=device)
    pick_w = torch.randint(0, len(weak), (batch - b_h,), generator=gen, device=device)
    return torch.cat([human[pick_h], weak[pick_w]])


def fit(
    data: TrainData,
    s: TrainSettings,
    run_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    keep_checkpoint: bool = False,
    checkpoint_meta: dict[str, str] | None = None,
) -> TrainResult:
    """Train teacher then student; see the module docstring. The checkpoint (with the
    settings, the classifier's config and `checkpoint_meta`, e.g. the code version) is
    removed once the run completes unless `keep_checkpoint`: it exists only for
    resuming."""
    start = time.perf_counter()
    device = resolve_device(s.device)
    if len(data.x_lb) == 0:
        raise ValueError("no labeled examples to train on: add human labels or weak labels")
    if s.student_steps and len(data.x_ulb) == 0:
        raise ValueError("student_steps > 0 but there are no unlabeled examples")
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    gen = torch.Generator(device=device).manual_seed(s.seed)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and s.bf16 else nullcontext()

    # The whole dataset stays on the device as uint8; batches are augmented there.
    x_lb = data.x_lb.to(device).contiguous(memory_format=fmt)
    y_lb = data.y_lb.to(device)
    w_lb = data.w_lb.to(device).float()
    x_ulb = data.x_ulb.to(device).contiguous(memory_format=fmt)
    _, c, h, _ = x_lb.shape
    mean, std = channel_stats(torch.cat([data.x_lb, data.x_ulb[:10_000]]))
    config = ClassifierConfig(s.network, s.num_classes, c, h, tuple(mean), tuple(std))
    model = build_classifier(config).to(device, memory_format=fmt)
    forward = torch.compile(model) if s.compile else model

    ema: ModelEMA | None = None
    teacher: Classifier | None = None
    n_ulb = len(x_ulb)
    if s.threshold == "flexmatch":
        thr: FixedThreshold = FlexMatchThreshold(s.tau, s.num_classes, max(n_ulb, 1), device)
    else:
        thr = FixedThreshold(s.tau, s.num_classes)
    align = None
    if s.distribution_alignment:
        prior = torch.bincount(y_lb, minlength=s.num_classes).float() + 1.0
        align = DistributionAlignment(prior.to(device))
    opt = _optimizer(model, s, device)
    history: list[dict[str, float]] = []
    step = 0
    run_path = Path(run_dir) if run_dir else None
    ckpt_path = run_path / CHECKPOINT if run_path else None
    settings_dict = dataclasses.asdict(s)
    fingerprint = data.fingerprint()

    def start_student() -> None:
        nonlocal ema, teacher, opt
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        ema = ModelEMA(model, s.ema_decay)
        opt = _optimizer(model, s, device)

    resumed_from = 0
    if ckpt_path and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        if state["settings"] == settings_dict and state["data"] == fingerprint:
            step = resumed_from = state["step"]
            model.load_state_dict(state["model"])
            if step > s.teacher_steps or (step == s.teacher_steps and state.get("teacher")):
                start_student()
                assert teacher is not None and ema is not None
                teacher.load_state_dict(state["teacher"])
                ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            thr.load_state_dict(state["threshold"])
            if align is not None:
                align.load_state_dict(state["align"])
            gen.set_state(state["generator"].to("cpu") if not cuda else state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history = state["history"]
            log.info("resumed training from %s at step %d of %d", ckpt_path, step, s.total_steps)
        else:
            log.warning(
                "checkpoint %s was made with other settings or data; starting over", ckpt_path
            )

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        _save(
            ckpt_path,
            {
                "settings": settings_dict,
                "data": fingerprint,
                "step": step,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "teacher": teacher.state_dict() if teacher is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
                "threshold": thr.state_dict(),
                "align": align.state_dict() if align is not None else None,
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "versions": {"torch": str(torch.__version__)},
                "device": str(device),
                "classifier": config.to_dict(),
                "meta": dict(checkpoint_meta or {}),
            },
        )

    # a resumed run keeps the guard's decision
    guard_off_at = next((int(r["step"]) for r in history if r.get("pseudo_labeling_off")), None)
    window: dict[str, torch.Tensor] = {}
    pseudo_counts = torch.zeros(s.num_classes, device=device)
    n_window = 0
    b_lb, b_ulb = s.batch_size, s.batch_size * s.uratio
    groups = labeled_groups(data.human_lb, s.human_share, b_lb, device)
    model.train()
    while step < s.total_steps:
        if step == s.teacher_steps and teacher is None:
            start_student()
        in_teacher = step < s.teacher_steps
        phase_step = step if in_teacher else step - s.teacher_steps
        phase_total = s.teacher_steps if in_teacher else s.student_steps
        lr = lr_at(phase_step, phase_total, s.lr)
        for g in opt.param_groups:
            g["lr"] = lr

        idx_lb = sample_labeled(len(x_lb), groups, b_lb, gen, device)
        xl = weak(to_float(x_lb[idx_lb]), s.augment, gen)
        metrics: dict[str, torch.Tensor] = {}
        with autocast:
            if in_teacher:
                loss = supervised_loss(forward(xl), y_lb[idx_lb], w_lb[idx_lb])
                metrics["loss_sup"] = loss.detach()
            else:
                idx_u = torch.randint(0, n_ulb, (b_ulb,), generator=gen, device=device)
                xu = to_float(x_ulb[idx_u])
                source = None
                if s.pseudo_label_source != "self":
                    source = ema.module if s.pseudo_label_source == "ema" else teacher
                    assert source is not None
                out = student_step(
                    forward,
                    xl,
                    y_lb[idx_lb],
                    w_lb[idx_lb],
                    weak(xu, s.augment, gen),
                    strong(xu, s.augment, gen),
                    idx_u,
                    thr=thr,
                    source=source,
                    align=align,
                    lambda_u=0.0 if guard_off_at is not None else s.lambda_u,
                )
                loss, metrics = out.loss, out.metrics
                pseudo_counts += torch.bincount(
                    out.pseudo[out.mask.bool()], minlength=s.num_classes
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        metrics["loss"] = loss.detach()
        # Summed on the device; read back only when logged, so the GPU never waits.
        for k, v in metrics.items():
            window[k] = window[k] + v if k in window else v.float()
        n_window += 1

        if step % s.log_every == 0 or step == s.total_steps:
            row = {k: float(v) / n_window for k, v in window.items()}
            row["lr"] = lr
            row["phase"] = 0.0 if in_teacher else 1.0
            if not in_teacher:
                for k in range(s.num_classes):
                    row[f"pseudo_labels_class_{k}"] = float(pseudo_counts[k])
                pseudo_counts.zero_()
            window, n_window = {}, 0
            _emit(callbacks, step, row, history)
        if data.x_eval is not None and (step % s.eval_every == 0 or step == s.total_steps):
            model.eval()
            ev = evaluate(model, ema, teacher, thr, data, s, device)
            _emit(callbacks, step, ev, history)
            model.train()
            if _guard_fires(ev, s) and guard_off_at is None and step < s.total_steps:
                guard_off_at = step
                log.warning(
                    "pseudo-labels on the evaluation set are right %.1f%% of the time, below "
                    "the floor %.1f%%: pseudo-labeling is off for the rest of this run "
                    "(step %d); the student now learns from labeled data only",
                    100 * ev["eval_pseudo_label_precision"],
                    100 * float(s.pseudo_label_precision_floor or 0),
                    step,
                )
                _emit(callbacks, step, {"pseudo_labeling_off": 1.0}, history)
        if s.checkpoint_every and step % s.checkpoint_every == 0:
            checkpoint()
        for cb in callbacks:
            cb.on_progress(step, s.total_steps)

    if ckpt_path is not None and not keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)
    final = ema.module if ema is not None else model
    final.eval()
    return TrainResult(
        model=final.cpu(),
        teacher=(teacher if teacher is not None else model).cpu().eval(),
        steps=step,
        resumed_from=resumed_from,
        device=str(device),
        elapsed_s=time.perf_counter() - start,
        history=history,
        pseudo_labeling_off_at=guard_off_at,
    )


def _guard_fires(ev: dict[str, float], s: TrainSettings) -> bool:
    """Whether the evaluation says the pseudo-labels feed the model its own mistakes."""
    floor = s.pseudo_label_precision_floor
    precision = ev.get("eval_pseudo_label_precision", float("nan"))
    return (
        floor is not None
        and ev.get("eval_pseudo_label_count", 0) >= s.guard_min_pseudo_labels
        and precision == precision
        and precision < floor
    )


def _emit(
    callbacks: Sequence[Callback], step: int, row: dict[str, float], history: list[dict[str, float]]
) -> None:
    history.append({"step": float(step), **row})
    for cb in callbacks:
        cb.on_metrics(step, row)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    ema: ModelEMA | None,
    teacher: nn.Module | None,
    thr: FixedThreshold,
    data: TrainData,
    s: TrainSettings,
    device: torch.device,
) -> dict[str, float]:
    """Accuracy of the teacher and student on the evaluation set, and the precision of
    the pseudo-labels the threshold would keep there (evaluation only: never trained on)."""
    assert data.x_eval is not None and data.y_eval is not None
    y = data.y_eval.to(device)
    out: dict[str, float] = {}
    teacher_model = teacher if teacher is not None else model
    p_teacher = predict_proba(teacher_model, data.x_eval, device).to(device)
    out["eval_teacher_accuracy"] = float((p_teacher.argmax(1) == y).float().mean())
    if ema is not None:
        p_student = predict_proba(ema.module, data.x_eval, device).to(device)
        out["eval_student_accuracy"] = float((p_student.argmax(1) == y).float().mean())
        source = {"ema": ema.module, "teacher": teacher, "self": model}[s.pseudo_label_source]
        p_src = predict_proba(source, data.x_eval, device).to(device)
        conf, pred = p_src.max(1)
        keep = conf >= thr.thresholds().to(device)[pred]
        out["eval_pseudo_label_coverage"] = float(keep.float().mean())
        out["eval_pseudo_label_count"] = float(keep.sum())
        out["eval_pseudo_label_precision"] = (
            float((pred[keep] == y[keep]).float().mean()) if bool(keep.any()) else float("nan")
        )
    return out
