"""One training step's pieces: the learning rate, the optimizer, which examples a
step draws, the semi-supervised loss, and the evaluation on the held-out set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from models.classifier import predict_proba
from models.ema import ModelEMA
from models.losses import DistributionAlignment, consistency_loss, supervised_loss
from models.thresholds import FixedThreshold
from models.train.settings import TrainData, TrainSettings


def lr_at(step: int, total: int, base: float) -> float:
    """FixMatch's cosine decay lr * cos(7πk / 16K)."""
    return base * math.cos(7 * math.pi * step / (16 * max(total, 1)))


def make_optimizer(model: nn.Module, s: TrainSettings, device: torch.device) -> torch.optim.SGD:
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
    fair = thr.fairness_loss(logits_s, mask)  # FreeMatch's fairness term, part of the
    if fair is not None:  # unlabeled loss (off with it when the guard fires)
        metrics["loss_fairness"] = fair.detach()
        loss_u = loss_u + fair
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
