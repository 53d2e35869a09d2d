"""Which pseudo-labels count, and how much: fixed, class-adaptive (FlexMatch),
self-adaptive (FreeMatch) thresholds and soft weights (SoftMatch).

Every rule turns the weak view's probabilities (U, K) into a per-example weight (U,)
and the pseudo-labels (U,); the unlabeled loss is the weight times the strong view's
cross-entropy. Fixed, FlexMatch and FreeMatch give 0/1 weights (a mask); SoftMatch
gives every example a weight in (0, 1], 1 above the running mean confidence.

Rules that learn from predictions do so in `record(idx, probs)`. `update_first` says
whether a batch updates the state before it is masked (FreeMatch and SoftMatch, as their
papers and USB do) or after (FlexMatch): the sharded wrapper for several processes keeps
the same order, so that N ranks behave as one process seeing all their batches.
"""

from __future__ import annotations

import torch

UNUSED = -1  # FlexMatch: an unlabeled example with no confident prediction yet


class FixedThreshold:
    """Pseudo-label where max probability >= tau (FixMatch)."""

    update_first = False

    def __init__(self, tau: float, num_classes: int):
        self.tau = tau
        self.num_classes = num_classes

    def thresholds(self) -> torch.Tensor:
        """(K,) the confidence a prediction of each class needs for full weight."""
        return torch.full((self.num_classes,), self.tau)

    def weights(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (U,), pseudo-labels (U,)) from the current state, without learning."""
        conf, pseudo = probs.max(1)
        return (conf >= self.thresholds().to(probs.device)[pseudo]).float(), pseudo

    def select(
        self, probs: torch.Tensor, idx: torch.Tensor | None = None, record: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (U,), pseudo-labels (U,)) from weak-view probabilities (U, K); with
        `record`, stateful rules also learn from this batch (see `record`)."""
        if record and self.update_first:
            self.record(idx, probs)
        out = self.weights(probs)
        if record and not self.update_first:
            self.record(idx, probs)
        return out

    def record(self, idx: torch.Tensor | None, probs: torch.Tensor) -> None:
        """Learn from a batch: its unlabeled indices and weak-view probabilities (U, K).
        A fixed threshold has nothing to learn."""

    def fairness_loss(
        self, logits_strong: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor | None:
        """An extra unlabeled loss the rule asks for (FreeMatch's fairness term); None
        when there is none."""
        return None

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
        return super().select(probs, idx, record)

    def record(self, idx: torch.Tensor | None, probs: torch.Tensor) -> None:
        """Each example predicted at or above tau remembers that prediction."""
        assert idx is not None
        conf, pseudo = probs.max(1)
        confident = conf >= self.tau
        self.predicted[idx[confident]] = pseudo[confident]

    def state_dict(self) -> dict:
        return {"predicted": self.predicted.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.predicted.copy_(state["predicted"])


class FreeMatchThreshold(FixedThreshold):
    """Self-adaptive thresholds (FreeMatch, Wang et al. 2023).

    A global threshold follows the model's confidence: tau_t, an EMA (momentum m) of the
    batch's mean max-probability, starting at 1/K. Each class scales it by its EMA mean
    probability over the max: tau_t(c) = tau_t * p_t(c) / max p_t. Early on, when the
    model knows little, the bar is low and many pseudo-labels count; it rises with the
    model's confidence. The self-adaptive fairness term (`fairness_loss`) pushes the
    masked strong-view predictions toward using every class.
    """

    update_first = True

    def __init__(
        self,
        num_classes: int,
        device: torch.device,
        momentum: float = 0.999,
        fairness_weight: float = 0.0,
    ):
        super().__init__(1.0 / num_classes, num_classes)
        self.momentum = momentum
        self.fairness_weight = fairness_weight
        uniform = torch.full((num_classes,), 1.0 / num_classes, device=device)
        self.global_threshold = uniform.mean()  # tau_t
        self.p_model = uniform.clone()  # p_t(c): EMA of the mean probability of each class
        self.label_hist = uniform.clone()  # EMA of the share of each predicted class

    def thresholds(self) -> torch.Tensor:
        return self.global_threshold * self.p_model / self.p_model.max()

    @torch.no_grad()
    def record(self, idx: torch.Tensor | None, probs: torch.Tensor) -> None:
        m = self.momentum
        conf, pred = probs.float().max(1)
        self.global_threshold = m * self.global_threshold + (1 - m) * conf.mean()
        self.p_model = m * self.p_model + (1 - m) * probs.float().mean(0)
        hist = torch.bincount(pred, minlength=self.num_classes).float() / max(len(pred), 1)
        self.label_hist = m * self.label_hist + (1 - m) * hist

    def fairness_loss(
        self, logits_strong: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor | None:
        if self.fairness_weight == 0:
            return None
        return self.fairness_weight * self_adaptive_fairness(
            logits_strong, weight, self.p_model, self.label_hist
        )

    def state_dict(self) -> dict:
        return {
            "global_threshold": self.global_threshold.clone(),
            "p_model": self.p_model.clone(),
            "label_hist": self.label_hist.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.p_model.device
        self.global_threshold = state["global_threshold"].to(device)
        self.p_model = state["p_model"].to(device)
        self.label_hist = state["label_hist"].to(device)


def self_adaptive_fairness(
    logits_strong: torch.Tensor,
    mask: torch.Tensor,
    p_model: torch.Tensor,
    label_hist: torch.Tensor,
) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness loss, -H(SumNorm(p_t / h_t), SumNorm(p̄ / h̄)).

    p̄ is the mean strong-view probability over the masked examples and h̄ the histogram
    of their strong-view predictions; p_t and h_t are the same for the model's EMA (no
    gradient). Dividing each by its histogram removes what is merely frequent, so the
    term rewards predicting every class with the probability mass the model gives it.
    Returns the cross-entropy with a minus sign (minimized: the cross-entropy grows),
    0 when nothing is masked in."""
    keep = mask.detach() > 0
    if not bool(keep.any()):
        return logits_strong.new_zeros(()).float()
    probs = torch.softmax(logits_strong[keep].float(), 1)
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).float()
    hist = hist / hist.sum()
    target = p_model.detach().float() * _inverse(label_hist.detach().float())
    target = target / target.sum()
    mean = probs.mean(0) * _inverse(hist)
    mean = mean / mean.sum()
    return (target * torch.log(mean + 1e-12)).sum()


def _inverse(x: torch.Tensor) -> torch.Tensor:
    """1 / x, with 0 where x is 0 (a class nobody predicts adds nothing)."""
    return torch.where(x > 0, 1.0 / x.clamp_min(1e-12), torch.zeros_like(x))


class SoftMatchWeight(FixedThreshold):
    """Soft pseudo-label weights (SoftMatch, Chen et al. 2023).

    The weight of an example whose max-probability p is below the running mean mu_t is
    exp(-(p - mu_t)^2 / (2 sigma_t^2 / n_sigma^2)), a truncated Gaussian; at or above
    mu_t it is 1. mu_t and sigma_t^2 are EMAs (momentum m) of the batch's mean and
    (unbiased) variance of max-probability, starting at 1/K and 1. Every pseudo-label
    counts a little; the confident ones count fully.
    """

    update_first = True

    def __init__(
        self, num_classes: int, device: torch.device, momentum: float = 0.999, n_sigma: float = 2.0
    ):
        super().__init__(1.0 / num_classes, num_classes)
        self.momentum = momentum
        self.n_sigma = n_sigma
        self.mu = torch.tensor(1.0 / num_classes, device=device)
        self.var = torch.tensor(1.0, device=device)

    def thresholds(self) -> torch.Tensor:
        return self.mu.expand(self.num_classes).clone()

    def weights(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conf, pseudo = probs.max(1)
        gap = torch.clamp(conf - self.mu, max=0.0)
        weight = torch.exp(-(gap**2) / (2 * self.var / self.n_sigma**2))
        return weight.float(), pseudo

    @torch.no_grad()
    def record(self, idx: torch.Tensor | None, probs: torch.Tensor) -> None:
        m = self.momentum
        conf = probs.float().max(1).values
        self.mu = m * self.mu + (1 - m) * conf.mean()
        if len(conf) > 1:
            self.var = m * self.var + (1 - m) * conf.var(unbiased=True)

    def state_dict(self) -> dict:
        return {"mu": self.mu.clone(), "var": self.var.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.mu = state["mu"].to(self.mu.device)
        self.var = state["var"].to(self.var.device)


def make_threshold(
    kind: str,
    *,
    tau: float,
    num_classes: int,
    num_unlabeled: int,
    device: torch.device,
    momentum: float = 0.999,
    fairness_weight: float = 0.0,
) -> FixedThreshold:
    """The rule `train.threshold` names: fixed, flexmatch, freematch or softmatch."""
    if kind == "flexmatch":
        return FlexMatchThreshold(tau, num_classes, max(num_unlabeled, 1), device)
    if kind == "freematch":
        return FreeMatchThreshold(num_classes, device, momentum, fairness_weight)
    if kind == "softmatch":
        return SoftMatchWeight(num_classes, device, momentum)
    if kind == "fixed":
        return FixedThreshold(tau, num_classes)
    raise ValueError(f"unknown threshold {kind!r}: use fixed, flexmatch, freematch or softmatch")
