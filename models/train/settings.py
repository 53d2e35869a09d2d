"""What the training loop takes and gives: its settings, data, callbacks and result."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch

from models.augment import AugmentSettings
from models.classifier import Classifier
from models.pool import ImagePool


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """The training loop's settings. The product's values come from the config
    (`Config.train_settings()`, configs/train.py): every field the config sets has no
    default here, so there is one source of defaults; a caller outside the product (a
    test, a benchmark) starts from those and replaces what it means to change. Only the
    fields the config never sets keep a default of their own."""

    num_classes: int
    network: str
    # torchvision networks: "imagenet" or a state-dict file to start from (None: random)
    pretrained: str | None
    teacher_steps: int
    student_steps: int
    # the student's steps instead of `student_steps` when the run starts seeded (few
    # labels: the student needs longer to get there); None: `student_steps`
    seeded_student_steps: int | None
    batch_size: int  # labeled examples per step
    uratio: int  # unlabeled examples per labeled example
    lr: float
    momentum: float = 0.9
    weight_decay: float
    ema_decay: float
    threshold: Literal["fixed", "flexmatch", "freematch", "softmatch"]
    tau: float
    threshold_momentum: float  # freematch / softmatch running statistics
    fairness_weight: float  # freematch's self-adaptive fairness term
    lambda_u: float
    # The feedback-loop guard: from `guard_warmup_steps` into the student phase on, when
    # the EMA student's accuracy on the evaluation set falls more than `guard_margin`
    # below the frozen teacher's on the same examples, the pseudo-labels are teaching it
    # its own mistakes: the student restarts from the teacher's weights and the unlabeled
    # loss is off for the rest of the run. None: no guard.
    guard_margin: float | None
    guard_warmup_steps: int
    distribution_alignment: Literal["off", "prior", "uniform"]
    pseudo_label_source: Literal["ema", "teacher", "self"]
    # > 0: this share of every labeled batch is drawn from the human labels (TrainData.
    # human_lb), the rest from the weak ones, however many more weak labels there are.
    human_share: float
    # A better start than a handful of labels (models.pretrain, models.train.start):
    # "labels" trains the teacher on the labels alone; "seeded" first runs the
    # unlabeled-only pre-phase (`pretrain_steps`, 0: none) and adds `propagate_per_class`
    # label-propagation seeds a class (0: none); "auto" is "seeded" when the class with the
    # fewest human labels has at most `few_labels`, else "labels".
    start: Literal["labels", "seeded", "auto"]
    few_labels: int
    pretrain_steps: int
    pretrain_batch_size: int
    propagate_per_class: int
    augment: AugmentSettings
    device: str
    bf16: bool  # autocast to bfloat16 on CUDA; ignored on CPU
    compile: bool  # torch.compile the network (CUDA)
    checkpoint_every: int
    eval_every: int
    log_every: int
    seed: int

    @property
    def total_steps(self) -> int:
        return self.teacher_steps + self.student_steps


@dataclass
class TrainData:
    """Training tensors (uint8 images, (N, C, H, W)) and an optional evaluation set."""

    x_lb: torch.Tensor | ImagePool  # in memory, or read batch by batch from a file
    y_lb: torch.Tensor
    w_lb: torch.Tensor  # (N,) label weights: 1 for human labels, confidence for weak ones
    x_ulb: torch.Tensor | ImagePool  # in memory, or read batch by batch from a file
    x_eval: torch.Tensor | None = None  # evaluation only (e.g. the gold holdout)
    y_eval: torch.Tensor | None = None
    human_lb: torch.Tensor | None = None  # (N,) bool: which labels are human (for human_share)

    def pool_fingerprint(self) -> str:
        """A cheap hash of the unlabeled pool alone (what the pre-phase learns from)."""
        if isinstance(self.x_ulb, ImagePool):
            return self.x_ulb.fingerprint()
        flat = self.x_ulb.reshape(-1)
        step = max(1, flat.numel() // 4096)
        h = hashlib.sha256(str(tuple(self.x_ulb.shape)).encode())
        h.update(flat[::step].cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """A cheap content hash, so a checkpoint is only resumed on the same data."""
        h = hashlib.sha256()
        for t in (self.x_lb, self.y_lb, self.w_lb, self.x_ulb):
            if isinstance(t, ImagePool):
                h.update(t.fingerprint().encode())
                continue
            h.update(str(tuple(t.shape)).encode())
            flat = t.reshape(-1)
            step = max(1, flat.numel() // 4096)
            h.update(flat[::step].cpu().numpy().tobytes())
        return h.hexdigest()[:16]


class Callback:
    """Receives what the loop reports. Override what you need."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_progress(self, step: int, total: int) -> None: ...


@dataclass
class TrainResult:
    model: Classifier  # the EMA student (or the teacher if there were no student steps)
    teacher: Classifier
    steps: int
    resumed_from: int
    device: str
    elapsed_s: float
    history: list[dict[str, float]]
    pseudo_labeling_off_at: int | None = None  # the step the feedback-loop guard fired
