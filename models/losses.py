"""Losses and pseudo-label selection for teacher–student training. Pure functions
where possible: `supervised_loss(logits, targets, weights)`,
`consistency_loss(logits_strong, targets, mask)`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

UNUSED = -1  # FlexMatch: an unlabeled example with no confident prediction yet


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
    (hard) pseudo-label, for masked examples, averaged over the whole unlabeled batch.
    logits_strong (U, K) with grad; targets (U,) and mask (U,) carry none."""
    ce = F.cross_entropy(logits_strong.float(), targets.detach(), reduction="none")
    return (ce * mask.detach().float()).mean()


class FixedThreshold:
    """Pseudo-label where max probability >= tau (FixMatch)."""

    def __init__(self, tau: float, num_classes: int):
        self.tau = tau
        self.num_classes = num_classes

    def thresholds(self) -> torch.Tensor:
        return torch.full((self.num_classes,), self.tau)

    def select(
        self, probs: torch.Tensor, idx: torch.Tensor | None = None, record: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask (U,), pseudo-labels (U,)) from weak-view probabilities (U, K); with
        `record`, stateful thresholds also learn from this batch (see `record`)."""
        conf, pseudo = probs.max(1)
        return (conf >= self.tau).float(), pseudo

    def record(self, idx: torch.Tensor, pseudo: torch.Tensor, conf: torch.Tensor) -> None:
        """Learn from a batch's predictions: unlabeled indices, pseudo-labels and their
        confidence (U,). A fixed threshold has nothing to learn."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FlexMatchThreshold(FixedThreshold):
    """Class-adaptive thresholds (FlexMatch, Zhang et al. 2021).

    Each unlabeled example remembers its latest confident prediction. A class's
    learning status is the count of examples confidently predicted as it, divided by
    the largest count over classes — or by the number of still-unused examples while
    those dominate (warm-up). threshold_c = tau * beta_c / (2 - beta_c): classes the
    model rarely predicts get a lower bar, which fights class collapse.
    """

    def __init__(
        self,
        tau: float,
        num_classes: int,
        num_unlabeled: int,
        device: torch.device,
        warmup: bool = True,
    ):
        super().__init__(tau, num_classes)
        self.warmup = warmup
        self.predicted = torch.full((num_unlabeled,), UNUSED, dtype=torch.long, device=device)

    def thresholds(self) -> torch.Tensor:
        counts = torch.bincount(
            self.predicted[self.predicted >= 0], minlength=self.num_classes
        ).float()  # (K,)
        unused = (self.predicted == UNUSED).sum().float()
        denom = counts.max()
        if self.warmup:
            denom = torch.maximum(denom, unused)
        beta = counts / denom.clamp_min(1.0)
        return self.tau * beta / (2.0 - beta)

    def select(
        self, probs: torch.Tensor, idx: torch.Tensor | None = None, record: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if idx is None:
            raise ValueError("FlexMatchThreshold.select needs the unlabeled indices")
        conf, pseudo = probs.max(1)
        thr = self.thresholds().to(probs.device)[pseudo]  # (U,)
        mask = conf >= thr
        if record:
            self.record(idx, pseudo, conf)
        return mask.float(), pseudo

    def record(self, idx: torch.Tensor, pseudo: torch.Tensor, conf: torch.Tensor) -> None:
        """Each example predicted at or above tau remembers that prediction."""
        confident = conf >= self.tau
        self.predicted[idx[confident]] = pseudo[confident]

    def state_dict(self) -> dict:
        return {"predicted": self.predicted.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.predicted.copy_(state["predicted"])


class DistributionAlignment:
    """Rescale weak-view probabilities toward a target class distribution by the
    running mean of predictions (ReMixMatch-style), then renormalize."""

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
