"""The start of a run: what happens before the teacher's first step when
`train.pretrain_steps` or `train.propagate_per_class` ask for a better start than the
labels alone (see `models.pretrain`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from models.classifier import Classifier
from models.pool import ImagePool, take_rows
from models.pretrain import pretrain, pretrain_key, propagation_seeds
from models.ranks import Ranks
from models.train.settings import TrainData, TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """The labeled set the run trains on (the given one, plus any seeds) and the rows the
    start adds to the history (pre-phase loss, number of seeds)."""

    x_lb: torch.Tensor | ImagePool
    y_lb: torch.Tensor
    w_lb: torch.Tensor
    human_lb: torch.Tensor | None
    rows: list[dict[str, float]]


def better_start(
    model: Classifier,
    data: TrainData,
    x_lb: torch.Tensor | ImagePool,
    y_lb: torch.Tensor,
    w_lb: torch.Tensor,
    x_ulb: torch.Tensor | ImagePool,
    s: TrainSettings,
    device: torch.device,
    ranks: Ranks,
    pretrain_cache: str | Path | None,
) -> Start:
    """Pre-train `model` in place on the unlabeled pool (or load the cached weights), then
    add label-propagation seeds to the labeled set; each only when its setting asks."""
    rows: list[dict[str, float]] = []
    human = data.human_lb
    if s.pretrain_steps:
        key = pretrain_key(
            data.pool_fingerprint(), s.network, s.pretrain_steps, s.pretrain_batch_size, s.seed
        )
        loss = pretrain(
            model,
            x_ulb,
            steps=s.pretrain_steps,
            batch=s.pretrain_batch_size,
            augment=s.augment,
            seed=s.seed,
            device=device,
            cache=Path(pretrain_cache) if pretrain_cache else None,
            key=key,
        )
        rows.append({"pretrain_loss": loss})
    if s.propagate_per_class and isinstance(x_lb, torch.Tensor) and len(x_ulb):
        seeds = propagation_seeds(
            model,
            x_lb,
            y_lb,
            x_ulb,
            num_classes=s.num_classes,
            per_class=s.propagate_per_class,
            seed=s.seed,
            device=device,
        )
        if ranks.distributed:  # every rank trains on rank 0's seeds
            seeds = ranks.gather_objects(seeds)[0]  # type: ignore[assignment]
        if human is None:  # the given labels are all human
            human = torch.ones(len(y_lb), dtype=torch.bool)
        at = seeds.index.to(x_ulb.device) if isinstance(x_ulb, torch.Tensor) else seeds.index
        x_lb = torch.cat([x_lb, take_rows(x_ulb, at).to(device)])
        y_lb = torch.cat([y_lb, seeds.labels.to(device)])
        w_lb = torch.cat([w_lb, seeds.confidence.to(device).float()])
        human = torch.cat([human.cpu(), torch.zeros(len(seeds.labels), dtype=torch.bool)])
        rows.append({"seeded_labels": float(len(seeds.labels))})
        log.info("label propagation added %d seed labels to the labeled set", len(seeds.labels))
    return Start(x_lb, y_lb, w_lb, human, rows)
