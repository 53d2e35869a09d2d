"""The start of a run: what happens before the teacher's first step when `train.start`
asks for a better start than the labels alone (see `models.pretrain`).

`auto` decides from the labels: with one or two human labels in some class the teacher
sees too little and the student locks its mistakes in (bench/RESULTS.md, *SSL at one
label a class*), so the pre-phase and the propagation seeds run; with more, they would
cost minutes for nothing."""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class StartChoice:
    """Whether this run starts seeded, and why (for the log and the run's metrics)."""

    seeded: bool
    smallest_class: int  # human labels in the class with the fewest
    reason: str


def choose_start(
    s: TrainSettings, y_lb: torch.Tensor, human_lb: torch.Tensor | None
) -> StartChoice:
    """`train.start` resolved against the labeled set: counts only human labels (weak
    ones, from the label model, are no better a start than propagation seeds)."""
    human = y_lb.cpu() if human_lb is None else y_lb.cpu()[human_lb.cpu().bool()]
    counts = torch.bincount(human.long(), minlength=s.num_classes)[: s.num_classes]
    smallest = int(counts.min()) if len(counts) else 0
    fewest = f"the class with the fewest human labels has {smallest}"
    if s.start == "auto":
        seeded = smallest <= s.few_labels
        verdict = "at most" if seeded else "more than"
        return StartChoice(
            seeded,
            smallest,
            f"train.start auto: {fewest}, {verdict} train.few_labels ({s.few_labels}): "
            + ("seeded start" if seeded else "labels alone"),
        )
    seeded = s.start == "seeded"
    return StartChoice(seeded, smallest, f"train.start {s.start} ({fewest})")


def scheduled(s: TrainSettings, y_lb: torch.Tensor, human_lb: torch.Tensor | None) -> TrainSettings:
    """`s` with the student's steps its start calls for: a run that starts seeded (few
    labels) trains its student at least `seeded_student_steps` (bench/RESULTS.md, *SSL
    through semilabel retrain*: at one or two labels a class the student is still
    climbing at 600 steps). A teacher-only run (`student_steps` 0) stays one."""
    if not s.student_steps or s.seeded_student_steps is None:
        return s
    if s.seeded_student_steps <= s.student_steps or not choose_start(s, y_lb, human_lb).seeded:
        return s
    log.info(
        "seeded start: the student trains %d steps (train.seeded_student_steps), not %d",
        s.seeded_student_steps,
        s.student_steps,
    )
    return dataclasses.replace(s, student_steps=s.seeded_student_steps)


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
    """When the run starts seeded (`choose_start`): pre-train `model` in place on the
    unlabeled pool (or load the cached weights), then add label-propagation seeds to the
    labeled set; each only when its setting is above 0."""
    choice = choose_start(s, y_lb, data.human_lb)
    log.info("%s", choice.reason)
    first = {"start_seeded": float(choice.seeded), "smallest_class_labels": choice.smallest_class}
    start = Start(x_lb, y_lb, w_lb, data.human_lb, [first])
    if choice.seeded and s.pretrain_steps:
        loss = _pre_phase(model, data, x_ulb, s, device, pretrain_cache)
        start.rows.append({"pretrain_loss": loss})
    if choice.seeded and s.propagate_per_class and isinstance(x_lb, torch.Tensor) and len(x_ulb):
        start = _with_seeds(model, start, x_ulb, s, device, ranks)
    return start


def _pre_phase(
    model: Classifier,
    data: TrainData,
    x_ulb: torch.Tensor | ImagePool,
    s: TrainSettings,
    device: torch.device,
    pretrain_cache: str | Path | None,
) -> float:
    """Pre-train `model` in place on the unlabeled pool, or load the weights a run on
    the same pool cached; the pre-phase's loss (NaN when loaded)."""
    if model.config is None:
        raise ValueError("better_start needs a model made by build_classifier")
    key = pretrain_key(
        data.pool_fingerprint(),
        model.config,
        pretrained=s.pretrained,
        augment=s.augment,
        steps=s.pretrain_steps,
        batch=s.pretrain_batch_size,
        seed=s.seed,
    )
    return pretrain(
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


def _with_seeds(
    model: Classifier,
    start: Start,
    x_ulb: torch.Tensor | ImagePool,
    s: TrainSettings,
    device: torch.device,
    ranks: Ranks,
) -> Start:
    """`start` with label-propagation seeds (weak labels, weighted by their confidence)
    added to its labeled set; under torchrun every rank takes rank 0's seeds."""
    assert isinstance(start.x_lb, torch.Tensor)
    seeds = propagation_seeds(
        model,
        start.x_lb,
        start.y_lb,
        x_ulb,
        num_classes=s.num_classes,
        per_class=s.propagate_per_class,
        seed=s.seed,
        device=device,
    )
    if ranks.distributed:  # every rank trains on rank 0's seeds
        seeds = ranks.gather_objects(seeds)[0]  # type: ignore[assignment]
    human = start.human_lb
    if human is None:  # the given labels are all human
        human = torch.ones(len(start.y_lb), dtype=torch.bool)
    at = seeds.index.to(x_ulb.device) if isinstance(x_ulb, torch.Tensor) else seeds.index
    n = len(seeds.labels)
    log.info("label propagation added %d seed labels to the labeled set", n)
    return Start(
        x_lb=torch.cat([start.x_lb, take_rows(x_ulb, at).to(device)]),
        y_lb=torch.cat([start.y_lb, seeds.labels.to(device)]),
        w_lb=torch.cat([start.w_lb, seeds.confidence.to(device).float()]),
        human_lb=torch.cat([human.cpu(), torch.zeros(n, dtype=torch.bool)]),
        rows=[*start.rows, {"seeded_labels": float(n)}],
    )
