"""Losses for teacher–student training. Pure functions where possible:
`supervised_loss(logits, targets, weights)`, `consistency_loss(logits_strong, targets,
weight)`; and distribution alignment of the pseudo-label source's predictions. Which
pseudo-labels count, and how much, is `models.thresholds`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the batch of weight × cross-entropy. Human labels have weight 1;
    weak labels count by their confidence. logits (B, K), targets (B,), weights (B,)."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")  # (B,)
    if weights is None:
        return ce.mean()
    return (ce * weights).mean()


def consistency_loss(
    logits_strong: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """FixMatch's unlabeled loss: cross-entropy of the strong view against the
    (hard) pseudo-label, times each example's weight (a 0/1 mask, or SoftMatch's soft
    weight), averaged over the whole unlabeled batch. logits_strong (U, K) with grad;
    targets (U,) and mask (U,) carry none."""
    ce = F.cross_entropy(logits_strong.float(), targets.detach(), reduction="none")
    return (ce * mask.detach().float()).mean()


class DistributionAlignment:
    """Rescale weak-view probabilities toward a target class distribution (the labeled
    prior, or uniform) by the running mean of predictions (ReMixMatch-style), then
    renormalize: a class the model over-predicts is scaled down, one it neglects up."""

    def __init__(self, target: torch.Tensor, momentum: float = 0.999):
        self.target = target / target.sum()
        self.running = self.target.clone()
        self.momentum = momentum

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        self.update(probs.mean(0))
        return self.apply(probs)

    @torch.no_grad()
    def update(self, mean_probs: torch.Tensor) -> None:
        """Move the running mean toward a batch's mean prediction (K,)."""
        self.running = self.momentum * self.running + (1 - self.momentum) * mean_probs

    @torch.no_grad()
    def apply(self, probs: torch.Tensor) -> torch.Tensor:
        aligned = probs * (self.target / self.running.clamp_min(1e-6))
        return aligned / aligned.sum(1, keepdim=True)

    def state_dict(self) -> dict:
        return {"running": self.running.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.running = state["running"].to(self.target.device)
