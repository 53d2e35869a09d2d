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

`fit` reads top to bottom: set up (device, generators, the model), the better start
(`models.train.start`), resume, the teacher phase, the student phase. What every step
shares (the optimizer step, the logged window, evaluation and the feedback guard, the
checkpoint) is `TrainState.finish_step` in `models.train.state`, and the checkpoint's
contents are `TrainState.save` and `TrainState.resume` there: beside the loop rather
than inside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from models.augment import strong, weak
from models.checkpoint import CHECKPOINT
from models.classifier import to_float
from models.losses import supervised_loss
from models.pool import take_rows
from models.train.settings import Callback, TrainData, TrainResult, TrainSettings
from models.train.state import TrainState
from models.train.step import student_step


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
    run = TrainState.set_up(data, s, pretrain_cache)
    run.ckpt_path = Path(run_dir) / CHECKPOINT if run_dir else None
    run.checkpoint_meta = dict(checkpoint_meta or {})
    run.callbacks = tuple(callbacks)
    run.resume()
    if not run.resumed_from and run.ranks.is_main:  # the start: pre-phase loss, seeds added
        for row in run.start_rows:
            run.emit(0, row)
    # a resumed run keeps the guard's decision
    run.guard_off_at = next(
        (int(r["step"]) for r in run.history if r.get("pseudo_labeling_off")), None
    )
    run.model.train()
    teacher_phase(run)
    if run.step < run.s.total_steps and run.teacher is None:
        run.start_student()
    student_phase(run)
    if run.ckpt_path is not None and not keep_checkpoint and run.ranks.is_main:
        run.ckpt_path.unlink(missing_ok=True)
    final = run.ema.module if run.ema is not None else run.model
    final.eval()
    return TrainResult(
        model=final.cpu(),
        teacher=(run.teacher if run.teacher is not None else run.model).cpu().eval(),
        steps=run.step,
        resumed_from=run.resumed_from,
        device=str(run.device),
        elapsed_s=time.perf_counter() - start,
        history=run.history,
        pseudo_labeling_off_at=run.guard_off_at,
    )


def teacher_phase(run: TrainState) -> None:
    """Supervised steps on the labeled set (weak augmentation) up to `teacher_steps`."""
    s = run.s
    while run.step < s.teacher_steps:
        lr = run.set_lr(run.step, s.teacher_steps)
        idx_lb, xl = run.labeled_batch()
        with run.autocast:
            loss = supervised_loss(run.forward(xl), run.y_lb[idx_lb], run.w_lb[idx_lb])
        run.finish_step(loss, {"loss_sup": loss.detach()}, lr, in_teacher=True)


def student_phase(run: TrainState) -> None:
    """From the teacher to `total_steps`: a labeled batch and `uratio` times as many
    unlabeled images a step, pseudo-labeled on their weak view for their strong one
    (off once the feedback guard fired)."""
    s = run.s
    b_ulb = run.b_lb * s.uratio
    while run.step < s.total_steps:
        lr = run.set_lr(run.step - s.teacher_steps, s.student_steps)
        idx_lb, xl = run.labeled_batch()
        with run.autocast:
            # every rank draws every rank's shard (the generator stays shared)
            idx_u = [
                torch.randint(0, run.n_ulb, (b_ulb,), generator=run.gen, device=run.device)
                for _ in range(run.ranks.world_size)
            ][run.ranks.rank]
            xu = to_float(take_rows(run.x_ulb, idx_u).to(run.device, non_blocking=True))
            source = None
            if s.pseudo_label_source != "self":
                source = run.ema.module if s.pseudo_label_source == "ema" else run.teacher
                assert source is not None
            out = student_step(
                run.forward,
                xl,
                run.y_lb[idx_lb],
                run.w_lb[idx_lb],
                weak(xu, s.augment, run.aug_gen),
                strong(xu, s.augment, run.aug_gen),
                idx_u,
                thr=run.thr,
                source=source,
                align=run.align,
                lambda_u=0.0 if run.guard_off_at is not None else s.lambda_u,
            )
            # the pseudo-labels' weight per class (a count, for 0/1 masks)
            run.pseudo_counts += torch.bincount(
                out.pseudo, weights=out.mask.float(), minlength=s.num_classes
            )
        run.finish_step(out.loss, out.metrics, lr, in_teacher=False)
