"""A training process's place among several (torch.distributed), and the pseudo-label
state that must stay identical on every rank. With one process everything here is a
no-op, so the training loop reads the same either way."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from models.losses import DistributionAlignment
from models.thresholds import FixedThreshold


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (1 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> Ranks:
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's equally shaped `t`, concatenated in rank order."""
        if not self.distributed:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.sum(t) / self.world_size

    def broadcast_int(self, value: int, device: torch.device) -> int:
        """Rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.long, device=device)
        dist.broadcast(t, 0)
        return int(t.item())

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank, so that what is built
        from them (the EMA model) is the same everywhere."""
        if self.distributed:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def gather_objects(self, obj: object) -> list[object]:
        if not self.distributed:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class ShardedThreshold(FixedThreshold):
    """A rule whose state every rank updates from all ranks' predictions (in the rule's
    own order: before or after masking), so each rank's thresholds stay the same and
    equal those of one process seeing every rank's batch."""

    def __init__(self, inner: FixedThreshold, ranks: Ranks):
        super().__init__(inner.tau, inner.num_classes)
        self.inner, self.ranks = inner, ranks
        self.update_first = inner.update_first

    def thresholds(self) -> torch.Tensor:
        return self.inner.thresholds()

    def weights(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.weights(probs)

    def record(self, idx: torch.Tensor | None, probs: torch.Tensor) -> None:
        gathered = self.ranks.gather(idx) if idx is not None else None
        self.inner.record(gathered, self.ranks.gather(probs))

    def fairness_loss(
        self, logits_strong: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor | None:
        return self.inner.fairness_loss(logits_strong, weight)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


class ShardedAlignment(DistributionAlignment):
    """Distribution alignment whose running mean follows the mean prediction of all
    ranks."""

    def __init__(self, inner: DistributionAlignment, ranks: Ranks):
        self.inner, self.ranks = inner, ranks

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        self.inner.update(self.ranks.mean(probs.mean(0)))
        return self.inner.apply(probs)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
