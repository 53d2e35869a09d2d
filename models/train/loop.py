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
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from models.augment import strong, weak
from models.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from models.classifier import (
    Classifier,
    ClassifierConfig,
    build_classifier,
    channel_stats,
    resolve_device,
    to_float,
)
from models.ema import ModelEMA
from models.losses import DistributionAlignment, supervised_loss
from models.pool import ImagePool, on_device, take_rows
from models.pretrained import pretrained_classifier
from models.ranks import Ranks, ShardedAlignment, ShardedThreshold
from models.thresholds import make_threshold
from models.train.settings import Callback, TrainData, TrainResult, TrainSettings
from models.train.start import better_start
from models.train.step import (
    evaluate,
    labeled_groups,
    lr_at,
    make_optimizer,
    sample_labeled,
    student_step,
)

log = logging.getLogger(__name__)


def fit(
    data: TrainData,
    s: TrainSettings,
    run_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    keep_checkpoint: bool = False,
    checkpoint_meta: dict[str, str] | None = None,
    pretrain_cache: str | Path | None = None,
) -> TrainResult:
    """Train teacher then student; see the module docstring. The checkpoint (with the
    settings, the classifier's config and `checkpoint_meta`, e.g. the code version) is
    removed once the run completes unless `keep_checkpoint`: it exists only for
    resuming.

    Run under torchrun (see `models.distributed`), each rank trains on its shard of
    every batch; `batch_size` is the global labeled batch."""
    start = time.perf_counter()
    ranks = Ranks.current()
    device = resolve_device(s.device)
    if ranks.distributed and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    if s.batch_size % ranks.world_size:
        raise ValueError(
            f"train.batch_size {s.batch_size} must divide evenly over "
            f"{ranks.world_size} training processes"
        )
    if len(data.x_lb) == 0:
        raise ValueError("no labeled examples to train on: add human labels or weak labels")
    if s.student_steps and len(data.x_ulb) == 0:
        raise ValueError("student_steps > 0 but there are no unlabeled examples")
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    gen = torch.Generator(device=device).manual_seed(s.seed)  # batch indices: shared by ranks
    # augmentations: each rank its own (the same generator when there is one process)
    aug_gen = gen
    if ranks.distributed:
        aug_gen = torch.Generator(device=device).manual_seed(s.seed + 1 + ranks.rank)
    cuda = device.type == "cuda"
    # channels_last: faster convolutions on CUDA and on the CPU (oneDNN); a training step
    # of small_cnn on a 2-core CPU takes 0.21 s instead of 0.25 s (bench/RESULTS.md)
    fmt = torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and s.bf16 else nullcontext()

    # The whole dataset stays on the device as uint8; batches are augmented there. A
    # file-backed pool stays on disk instead: each step reads its batch (see models.pool).
    x_lb = on_device(data.x_lb, device, fmt)
    y_lb = data.y_lb.to(device)
    w_lb = data.w_lb.to(device).float()
    x_ulb = on_device(data.x_ulb, device, fmt)
    c, h = x_lb.shape[-3], x_lb.shape[-2]
    # colour-invariant training: each colour image normalized by its own channel statistics
    per_image = s.augment.colour == "invariant" and c == 3
    normalize = "per_image" if per_image else "dataset"
    if s.pretrained:  # the weights' own stem and input normalization (models.pretrained)
        model = pretrained_classifier(s.network, s.num_classes, c, h, s.pretrained, normalize)
    elif per_image:  # after it, every channel has mean 0 and std 1
        zeros, ones = (0.0,) * c, (1.0,) * c
        model = build_classifier(
            ClassifierConfig(s.network, s.num_classes, c, h, zeros, ones, normalize=normalize)
        )
    else:  # normalized by the data's channel statistics
        # a file-backed labeled set contributes its first 10,000 images, as the pool does
        x_lb_stats = data.x_lb[:10_000] if isinstance(data.x_lb, ImagePool) else data.x_lb
        mean, std = channel_stats(torch.cat([x_lb_stats, data.x_ulb[:10_000]]))
        model = build_classifier(
            ClassifierConfig(s.network, s.num_classes, c, h, tuple(mean), tuple(std))
        )
    assert model.config is not None
    config = model.config
    model = model.to(device, memory_format=fmt)
    # a better start than the labels alone (pre-phase, seeds), before DDP wraps the model:
    # its constructor shares rank 0's weights
    begin = better_start(model, data, x_lb, y_lb, w_lb, x_ulb, s, device, ranks, pretrain_cache)
    x_lb, y_lb, w_lb = on_device(begin.x_lb, device, fmt), begin.y_lb, begin.w_lb
    data = dataclasses.replace(data, human_lb=begin.human_lb)
    forward: torch.nn.Module = model
    if ranks.distributed:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if s.compile:
        forward = torch.compile(forward)

    ema: ModelEMA | None = None
    teacher: Classifier | None = None
    n_ulb = len(x_ulb)
    thr = make_threshold(
        s.threshold,
        tau=s.tau,
        num_classes=s.num_classes,
        num_unlabeled=n_ulb,
        device=device,
        momentum=s.threshold_momentum,
        fairness_weight=s.fairness_weight,
    )
    align = None
    if s.distribution_alignment != "off":  # toward the labeled prior, or uniform
        target = torch.ones(s.num_classes)
        if s.distribution_alignment == "prior":
            target = torch.bincount(y_lb.cpu(), minlength=s.num_classes).float() + 1.0
        align = DistributionAlignment(target.to(device))
    if ranks.distributed:
        thr = ShardedThreshold(thr, ranks)
        align = ShardedAlignment(align, ranks) if align is not None else None
    opt = make_optimizer(model, s, device)
    history: list[dict[str, float]] = []
    step = 0
    run_path = Path(run_dir) if run_dir else None
    ckpt_path = run_path / CHECKPOINT if run_path else None
    settings_dict = dataclasses.asdict(s)
    fingerprint = data.fingerprint()

    def start_student() -> None:
        nonlocal ema, teacher, opt
        ranks.sync_buffers(model)  # the teacher and the EMA start the same on every rank
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        ema = ModelEMA(model, s.ema_decay)
        opt = make_optimizer(model, s, device)

    resumed_from = 0
    if ckpt_path and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        same_ranks = state.get("world_size", 1) == ranks.world_size
        if state["settings"] == settings_dict and state["data"] == fingerprint and same_ranks:
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
            if ranks.distributed:
                aug_state = state["aug_generators"][ranks.rank]
                aug_gen.set_state(aug_state.to("cpu") if not cuda else aug_state)
            torch.set_rng_state(state["torch_rng"])
            history = state["history"]
            log.info("resumed training from %s at step %d of %d", ckpt_path, step, s.total_steps)
        else:
            log.warning(
                "checkpoint %s was made with other settings, data or number of training "
                "processes; starting over",
                ckpt_path,
            )

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        aug_states = ranks.gather_objects(aug_gen.get_state().cpu()) if ranks.distributed else None
        if not ranks.is_main:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
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
                "world_size": ranks.world_size,
                "aug_generators": aug_states,
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "versions": {"torch": str(torch.__version__)},
                "device": str(device),
                "classifier": config.to_dict(),
                "meta": dict(checkpoint_meta or {}),
            },
        )

    if not resumed_from and ranks.is_main:  # the start: pre-phase loss, seeds added
        for row in begin.rows:
            _emit(callbacks, 0, row, history)
    # a resumed run keeps the guard's decision
    guard_off_at = next((int(r["step"]) for r in history if r.get("pseudo_labeling_off")), None)
    window: dict[str, torch.Tensor] = {}
    pseudo_counts = torch.zeros(s.num_classes, device=device)
    n_window = 0
    b_lb = s.batch_size // ranks.world_size  # this rank's shard of the global batch
    b_ulb = b_lb * s.uratio
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

        # every rank draws every rank's shard (the generator stays shared) and keeps its own
        idx_lb = [
            sample_labeled(len(x_lb), groups, b_lb, gen, device) for _ in range(ranks.world_size)
        ][ranks.rank]
        xl = weak(
            to_float(take_rows(x_lb, idx_lb).to(device, non_blocking=True)), s.augment, aug_gen
        )
        metrics: dict[str, torch.Tensor] = {}
        with autocast:
            if in_teacher:
                loss = supervised_loss(forward(xl), y_lb[idx_lb], w_lb[idx_lb])
                metrics["loss_sup"] = loss.detach()
            else:
                idx_u = [
                    torch.randint(0, n_ulb, (b_ulb,), generator=gen, device=device)
                    for _ in range(ranks.world_size)
                ][ranks.rank]
                xu = to_float(take_rows(x_ulb, idx_u).to(device, non_blocking=True))
                source = None
                if s.pseudo_label_source != "self":
                    source = ema.module if s.pseudo_label_source == "ema" else teacher
                    assert source is not None
                out = student_step(
                    forward,
                    xl,
                    y_lb[idx_lb],
                    w_lb[idx_lb],
                    weak(xu, s.augment, aug_gen),
                    strong(xu, s.augment, aug_gen),
                    idx_u,
                    thr=thr,
                    source=source,
                    align=align,
                    lambda_u=0.0 if guard_off_at is not None else s.lambda_u,
                )
                loss, metrics = out.loss, out.metrics
                # the pseudo-labels' weight per class (a count, for 0/1 masks)
                pseudo_counts += torch.bincount(
                    out.pseudo, weights=out.mask.float(), minlength=s.num_classes
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ranks.sync_buffers(model)  # one EMA on every rank (pseudo-labels, resume)
            ema.update(model)
        step += 1
        metrics["loss"] = loss.detach()
        # Summed on the device; read back only when logged, so the GPU never waits.
        for k, v in metrics.items():
            window[k] = window[k] + v if k in window else v.float()
        n_window += 1

        if step % s.log_every == 0 or step == s.total_steps:
            if ranks.distributed:  # the mean over ranks, and pseudo-labels of all ranks
                keys = sorted(window)
                means = ranks.mean(torch.stack([window[k] for k in keys]))
                window = dict(zip(keys, means, strict=True))
                pseudo_counts = ranks.sum(pseudo_counts)
            row = {k: float(v) / n_window for k, v in window.items()}
            row["lr"] = lr
            row["phase"] = 0.0 if in_teacher else 1.0
            if not in_teacher:
                for k in range(s.num_classes):
                    row[f"pseudo_labels_class_{k}"] = float(pseudo_counts[k])
                pseudo_counts.zero_()
            window, n_window = {}, 0
            if ranks.is_main:
                _emit(callbacks, step, row, history)
        if data.x_eval is not None and (step % s.eval_every == 0 or step == s.total_steps):
            fires, precision = False, float("nan")
            if ranks.is_main:  # one evaluation; its guard decision goes to every rank
                model.eval()
                ev = evaluate(model, ema, teacher, thr, data, s, device)
                _emit(callbacks, step, ev, history)
                model.train()
                fires = _guard_fires(ev, s)
                precision = ev.get("eval_pseudo_label_precision", float("nan"))
            fires = bool(ranks.broadcast_int(int(fires), device))
            if fires and guard_off_at is None and step < s.total_steps:
                guard_off_at = step
                if ranks.is_main:
                    log.warning(
                        "pseudo-labels on the evaluation set are right %.1f%% of the time, "
                        "below the floor %.1f%%: pseudo-labeling is off for the rest of this "
                        "run (step %d); the student now learns from labeled data only",
                        100 * precision,
                        100 * float(s.pseudo_label_precision_floor or 0),
                        step,
                    )
                    _emit(callbacks, step, {"pseudo_labeling_off": 1.0}, history)
        if s.checkpoint_every and step % s.checkpoint_every == 0:
            checkpoint()
        for cb in callbacks:
            cb.on_progress(step, s.total_steps)

    if ckpt_path is not None and not keep_checkpoint and ranks.is_main:
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
