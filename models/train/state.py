"""The state of one `fit` (`TrainState`): the data on the device, the model and what
trains it, where the loop is and what it has logged; the step every phase shares
(`finish_step`: the optimizer step, the logged window, evaluation and the feedback
guard, the checkpoint); and the checkpoint itself (`save`, `resume`). The phases that
drive it are in `models.train.loop`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.augment import weak
from models.checkpoint import load_checkpoint, save_checkpoint
from models.classifier import (
    Classifier,
    ClassifierConfig,
    build_classifier,
    channel_stats,
    resolve_device,
    to_float,
)
from models.ema import ModelEMA
from models.losses import DistributionAlignment
from models.pool import ImagePool, on_device, take_rows
from models.pretrained import pretrained_classifier
from models.ranks import Ranks, ShardedAlignment, ShardedThreshold
from models.thresholds import make_threshold
from models.train.settings import Callback, TrainData, TrainSettings
from models.train.start import better_start, scheduled
from models.train.step import evaluate, labeled_groups, lr_at, make_optimizer, sample_labeled

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TrainState:
    """One `fit`'s state: the data on the device, the model and what trains it, where
    the loop is, and what it has logged. Built by `set_up`; saved and resumed whole."""

    s: TrainSettings
    data: TrainData
    ranks: Ranks
    device: torch.device
    gen: torch.Generator  # batch indices: shared by the ranks
    aug_gen: torch.Generator  # augmentations: each rank its own
    autocast: AbstractContextManager[Any]
    x_lb: Any  # uint8 on the device, or a file-backed pool
    y_lb: torch.Tensor
    w_lb: torch.Tensor
    x_ulb: Any
    model: Classifier
    config: ClassifierConfig
    forward: torch.nn.Module  # the model, wrapped by DDP and torch.compile where asked
    thr: Any  # the pseudo-label threshold (models.thresholds), sharded over ranks
    align: Any  # distribution alignment, or None
    opt: torch.optim.Optimizer
    groups: Any  # how labeled batches mix human and weak labels
    start_rows: list[dict[str, float]]
    ema: ModelEMA | None = None
    teacher: Classifier | None = None
    step: int = 0
    resumed_from: int = 0
    guard_off_at: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    window: dict[str, torch.Tensor] = field(default_factory=dict)
    n_window: int = 0
    pseudo_counts: torch.Tensor | None = None
    ckpt_path: Path | None = None
    checkpoint_meta: dict[str, str] = field(default_factory=dict)
    callbacks: tuple[Callback, ...] = ()
    settings_dict: dict[str, Any] = field(default_factory=dict)  # as the checkpoint holds them
    fingerprint: str = ""  # of the data, as the checkpoint holds it

    @classmethod
    def set_up(
        cls, data: TrainData, s: TrainSettings, pretrain_cache: str | Path | None
    ) -> TrainState:
        """Check the inputs, seed, move the data to the device, build the model, give it
        its better start, and make what trains it."""
        s = scheduled(s, data.y_lb, data.human_lb)  # a seeded start trains its student longer
        ranks = Ranks.current()
        device = _device(s, ranks)
        _check_inputs(data, s, ranks)
        gen, aug_gen = _seeded_generators(s, ranks, device)
        # channels_last: faster convolutions on CUDA and on the CPU (oneDNN); a training
        # step of small_cnn on a 2-core CPU takes 0.21 s instead of 0.25 s (bench/RESULTS.md)
        fmt = torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format
        # The whole dataset stays on the device as uint8; batches are augmented there. A
        # file-backed pool stays on disk instead: each step reads its batch (models.pool).
        x_lb = on_device(data.x_lb, device, fmt)
        y_lb = data.y_lb.to(device)
        w_lb = data.w_lb.to(device).float()
        x_ulb = on_device(data.x_ulb, device, fmt)
        model = _build_model(data, s, x_lb.shape[-3], x_lb.shape[-2])
        assert model.config is not None
        config = model.config
        model = model.to(device, memory_format=fmt)
        # a better start than the labels alone (pre-phase, seeds), before DDP wraps the
        # model: its constructor shares rank 0's weights
        begin = better_start(model, data, x_lb, y_lb, w_lb, x_ulb, s, device, ranks, pretrain_cache)
        data = dataclasses.replace(data, human_lb=begin.human_lb)
        forward = _forward(model, s, ranks, device)
        thr, align = _pseudo_label_rule(s, begin.y_lb, len(x_ulb), ranks, device)
        b_lb = s.batch_size // ranks.world_size
        return cls(
            s=s,
            data=data,
            ranks=ranks,
            device=device,
            gen=gen,
            aug_gen=aug_gen,
            autocast=_autocast(s, device),
            x_lb=on_device(begin.x_lb, device, fmt),
            y_lb=begin.y_lb,
            w_lb=begin.w_lb,
            x_ulb=x_ulb,
            model=model,
            config=config,
            forward=forward,
            thr=thr,
            align=align,
            opt=make_optimizer(model, s, device),
            groups=labeled_groups(data.human_lb, s.human_share, b_lb, device),
            start_rows=begin.rows,
            pseudo_counts=torch.zeros(s.num_classes, device=device),
            settings_dict=dataclasses.asdict(s),
            fingerprint=data.fingerprint(),
        )

    @property
    def b_lb(self) -> int:
        """This rank's shard of the global labeled batch."""
        return self.s.batch_size // self.ranks.world_size

    @property
    def n_ulb(self) -> int:
        return len(self.x_ulb)

    def set_lr(self, phase_step: int, phase_total: int) -> float:
        lr = lr_at(phase_step, phase_total, self.s.lr)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def labeled_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's labeled indices and their weakly augmented images (every rank
        draws every rank's shard, so the shared generator stays in step)."""
        idx_lb = [
            sample_labeled(len(self.x_lb), self.groups, self.b_lb, self.gen, self.device)
            for _ in range(self.ranks.world_size)
        ][self.ranks.rank]
        x = to_float(take_rows(self.x_lb, idx_lb).to(self.device, non_blocking=True))
        return idx_lb, weak(x, self.s.augment, self.aug_gen)

    def start_student(self) -> None:
        """The frozen teacher, the EMA and a fresh optimizer, from the model as it is."""
        self.ranks.sync_buffers(self.model)  # the teacher and EMA start the same on all ranks
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.ema = ModelEMA(self.model, self.s.ema_decay)
        self.opt = make_optimizer(self.model, self.s, self.device)

    def emit(self, step: int, row: dict[str, float]) -> None:
        _emit(self.callbacks, step, row, self.history)

    # -- what every step shares --------------------------------------------------------

    def finish_step(
        self, loss: torch.Tensor, metrics: dict[str, torch.Tensor], lr: float, *, in_teacher: bool
    ) -> None:
        """The optimizer step, then the step's logging, evaluation, guard, checkpoint."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.ema is not None:
            self.ranks.sync_buffers(self.model)  # one EMA on every rank (pseudo-labels, resume)
            self.ema.update(self.model)
        self.step += 1
        metrics = {**metrics, "loss": loss.detach()}
        # Summed on the device; read back only when logged, so the GPU never waits.
        for k, v in metrics.items():
            self.window[k] = self.window[k] + v if k in self.window else v.float()
        self.n_window += 1
        s = self.s
        if self.step % s.log_every == 0 or self.step == s.total_steps:
            self._log_window(lr, in_teacher)
        if self.data.x_eval is not None and (
            self.step % s.eval_every == 0 or self.step == s.total_steps
        ):
            self._evaluate_and_guard()
        if s.checkpoint_every and self.step % s.checkpoint_every == 0:
            self.save()
        for cb in self.callbacks:
            cb.on_progress(self.step, s.total_steps)

    def _log_window(self, lr: float, in_teacher: bool) -> None:
        """The mean of each metric since the last row, and the pseudo-labels per class."""
        assert self.pseudo_counts is not None
        if self.ranks.distributed:  # the mean over ranks, and pseudo-labels of all ranks
            keys = sorted(self.window)
            means = self.ranks.mean(torch.stack([self.window[k] for k in keys]))
            self.window = dict(zip(keys, means, strict=True))
            self.pseudo_counts = self.ranks.sum(self.pseudo_counts)
        row = {k: float(v) / self.n_window for k, v in self.window.items()}
        row["lr"] = lr
        row["phase"] = 0.0 if in_teacher else 1.0
        if not in_teacher:
            for k in range(self.s.num_classes):
                row[f"pseudo_labels_class_{k}"] = float(self.pseudo_counts[k])
            self.pseudo_counts.zero_()
        self.window, self.n_window = {}, 0
        if self.ranks.is_main:
            self.emit(self.step, row)

    def _evaluate_and_guard(self) -> None:
        """Evaluate on the evaluation set (rank 0); when the guard fires (`guard_fires`),
        restart the student from the teacher and switch pseudo-labeling off for the rest
        of the run."""
        s = self.s
        ev: dict[str, float] = {}
        fires = False
        if self.ranks.is_main:  # one evaluation; its guard decision goes to every rank
            self.model.eval()
            ev = evaluate(self.model, self.ema, self.teacher, self.thr, self.data, s, self.device)
            self.emit(self.step, ev)
            self.model.train()
            fires = guard_fires(ev, s, self.step - s.teacher_steps)
        fires = bool(self.ranks.broadcast_int(int(fires), self.device))
        if fires and self.guard_off_at is None and self.step < s.total_steps:
            self.guard_off_at = self.step
            self.restart_from_teacher()
            if self.ranks.is_main:
                log.warning(
                    "the student's accuracy on gold dev (EMA) is %.1f%%, more than %.1f points "
                    "below the teacher's %.1f%% on the same examples (step %d, "
                    "health.guard_margin): its pseudo-labels are teaching it its own "
                    "mistakes. The student restarts from the teacher's weights and learns "
                    "from labeled data only for the rest of this run",
                    100 * ev["eval_student_accuracy"],
                    100 * float(s.guard_margin or 0),
                    100 * ev["eval_teacher_accuracy"],
                    self.step,
                )
                self.emit(self.step, {"pseudo_labeling_off": 1.0})

    def restart_from_teacher(self) -> None:
        """The student, its EMA and its optimizer back to where the student phase began:
        the frozen teacher's weights (the same on every rank)."""
        assert self.teacher is not None
        self.model.load_state_dict(self.teacher.state_dict())
        self.ema = ModelEMA(self.model, self.s.ema_decay)
        self.opt = make_optimizer(self.model, self.s, self.device)

    # -- the checkpoint ----------------------------------------------------------------

    def save(self) -> None:
        """Everything `resume` needs to finish at the same step with the same result."""
        if self.ckpt_path is None:
            return
        ranks = self.ranks
        aug_states = (
            ranks.gather_objects(self.aug_gen.get_state().cpu()) if ranks.distributed else None
        )
        if not ranks.is_main:
            return
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            self.ckpt_path,
            {
                "settings": self.settings_dict,
                "data": self.fingerprint,
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "teacher": self.teacher.state_dict() if self.teacher is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "threshold": self.thr.state_dict(),
                "align": self.align.state_dict() if self.align is not None else None,
                "generator": self.gen.get_state(),
                "world_size": ranks.world_size,
                "aug_generators": aug_states,
                "torch_rng": torch.get_rng_state(),
                "history": self.history,
                "versions": {"torch": str(torch.__version__)},
                "device": str(self.device),
                "classifier": self.config.to_dict(),
                "meta": self.checkpoint_meta,
            },
        )

    def resume(self) -> None:
        """Load the checkpoint when it was made with these settings, data and ranks."""
        path = self.ckpt_path
        if path is None or not path.exists():
            return
        s, ranks, cuda = self.s, self.ranks, self.device.type == "cuda"
        state = load_checkpoint(path, self.device)
        same = (
            state["settings"] == self.settings_dict
            and state["data"] == self.fingerprint
            and state.get("world_size", 1) == ranks.world_size
        )
        if not same:
            log.warning(
                "checkpoint %s was made with other settings, data or number of training "
                "processes; starting over",
                path,
            )
            return
        self.step = self.resumed_from = state["step"]
        self.model.load_state_dict(state["model"])
        if self.step > s.teacher_steps or (self.step == s.teacher_steps and state.get("teacher")):
            self.start_student()
            assert self.teacher is not None and self.ema is not None
            self.teacher.load_state_dict(state["teacher"])
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.thr.load_state_dict(state["threshold"])
        if self.align is not None:
            self.align.load_state_dict(state["align"])
        self.gen.set_state(state["generator"].to("cpu") if not cuda else state["generator"])
        if ranks.distributed:
            aug_state = state["aug_generators"][ranks.rank]
            self.aug_gen.set_state(aug_state.to("cpu") if not cuda else aug_state)
        torch.set_rng_state(state["torch_rng"])
        self.history = state["history"]
        log.info("resumed training from %s at step %d of %d", path, self.step, s.total_steps)


# -- the steps of `TrainState.set_up` ----------------------------------------------------


def _device(s: TrainSettings, ranks: Ranks) -> torch.device:
    """`s.device` resolved; under torchrun on CUDA, this rank's own GPU."""
    device = resolve_device(s.device)
    if ranks.distributed and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    return device


def _check_inputs(data: TrainData, s: TrainSettings, ranks: Ranks) -> None:
    """Fail before any work when the data or the batch cannot train."""
    if s.batch_size % ranks.world_size:
        raise ValueError(
            f"train.batch_size {s.batch_size} must divide evenly over "
            f"{ranks.world_size} training processes"
        )
    if len(data.x_lb) == 0:
        raise ValueError("no labeled examples to train on: add human labels or weak labels")
    if s.student_steps and len(data.x_ulb) == 0:
        raise ValueError("student_steps > 0 but there are no unlabeled examples")


def _seeded_generators(
    s: TrainSettings, ranks: Ranks, device: torch.device
) -> tuple[torch.Generator, torch.Generator]:
    """Seed torch and NumPy; the generator of batch indices (shared by the ranks) and
    that of augmentations (each rank its own; one process: the same generator)."""
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    gen = torch.Generator(device=device).manual_seed(s.seed)
    aug_gen = gen
    if ranks.distributed:
        aug_gen = torch.Generator(device=device).manual_seed(s.seed + 1 + ranks.rank)
    return gen, aug_gen


def _autocast(s: TrainSettings, device: torch.device) -> AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA when asked for; on the CPU, nothing."""
    if device.type == "cuda" and s.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _forward(
    model: Classifier, s: TrainSettings, ranks: Ranks, device: torch.device
) -> torch.nn.Module:
    """The model as the steps call it: wrapped by DDP under torchrun, compiled if asked."""
    forward: torch.nn.Module = model
    if ranks.distributed:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if s.compile:
        forward = torch.compile(forward)
    return forward


def _pseudo_label_rule(
    s: TrainSettings, y_lb: torch.Tensor, n_ulb: int, ranks: Ranks, device: torch.device
) -> tuple[Any, DistributionAlignment | ShardedAlignment | None]:
    """The pseudo-label threshold, and the distribution alignment (toward the labeled
    prior, or uniform) when asked for; sharded over the ranks under torchrun."""
    thr: Any = make_threshold(
        s.threshold,
        tau=s.tau,
        num_classes=s.num_classes,
        num_unlabeled=n_ulb,
        device=device,
        momentum=s.threshold_momentum,
        fairness_weight=s.fairness_weight,
    )
    align: Any = None
    if s.distribution_alignment != "off":
        target = torch.ones(s.num_classes)
        if s.distribution_alignment == "prior":
            target = torch.bincount(y_lb.cpu(), minlength=s.num_classes).float() + 1.0
        align = DistributionAlignment(target.to(device))
    if ranks.distributed:
        thr = ShardedThreshold(thr, ranks)
        align = ShardedAlignment(align, ranks) if align is not None else None
    return thr, align


def _build_model(data: TrainData, s: TrainSettings, c: int, h: int) -> Classifier:
    """The classifier for `c` channels at side `h`, with its input normalization."""
    # colour-invariant training: each colour image normalized by its own channel statistics
    per_image = s.augment.colour == "invariant" and c == 3
    normalize = "per_image" if per_image else "dataset"
    if s.pretrained:  # the weights' own stem and input normalization (models.pretrained)
        return pretrained_classifier(s.network, s.num_classes, c, h, s.pretrained, normalize)
    if per_image:  # after it, every channel has mean 0 and std 1
        zeros, ones = (0.0,) * c, (1.0,) * c
        return build_classifier(
            ClassifierConfig(s.network, s.num_classes, c, h, zeros, ones, normalize=normalize)
        )
    # normalized by the data's channel statistics; a file-backed labeled set contributes
    # its first 10,000 images, as the pool does
    x_lb_stats = data.x_lb[:10_000] if isinstance(data.x_lb, ImagePool) else data.x_lb
    mean, std = channel_stats(torch.cat([x_lb_stats, data.x_ulb[:10_000]]))
    return build_classifier(
        ClassifierConfig(s.network, s.num_classes, c, h, tuple(mean), tuple(std))
    )


def guard_fires(ev: dict[str, float], s: TrainSettings, student_step: int) -> bool:
    """Whether an evaluation (`ev`, `student_step` steps into the student phase) says
    the pseudo-labels feed the model its own mistakes: past the warm-up, the EMA
    student's accuracy more than `guard_margin` below the teacher's on the same
    examples. Judged against the teacher, not a fixed precision: with a handful of
    labels a teacher at 0.81 gives pseudo-labels right 75% of the time and the student
    still overtakes it (bench/RESULTS.md, *The feedback-loop guard*)."""
    student = ev.get("eval_student_accuracy", float("nan"))
    teacher = ev.get("eval_teacher_accuracy", float("nan"))
    return (
        s.guard_margin is not None
        and student_step >= s.guard_warmup_steps
        and student == student
        and teacher == teacher
        and student < teacher - s.guard_margin
    )


def _emit(
    callbacks: Sequence[Callback], step: int, row: dict[str, float], history: list[dict[str, float]]
) -> None:
    history.append({"step": float(step), **row})
    for cb in callbacks:
        cb.on_metrics(step, row)
