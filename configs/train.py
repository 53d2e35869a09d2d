"""Training: which labels it reads (`labels`), the network, schedule, augmentation and
semi-supervised settings (`train`), and multi-GPU runs (`train.distributed`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from configs.base import Section


class LabelsConfig(Section):
    confidence_floor: float = Field(
        0.8, ge=0.0, le=1.0, description="Label-model labels below this stay unlabeled."
    )
    max_model_share: float = Field(
        0.2, ge=0.0, le=1.0, description="Cap on the share of model-originated training labels."
    )
    cost_per_label: dict[str, float] = Field(
        default_factory=dict,
        description="Cost of one label event by source: a source name (label_studio:alice), "
        "a source-name prefix ending in ':' (label_studio:), or a source kind (human). "
        "Feeds the cost-per-verified-label SLI; empty: the SLI is not reported.",
    )


class AugmentConfig(Section):
    pad: int = Field(2, ge=0, description="Weak view: random shift up to this many pixels.")
    flip: bool = Field(False, description="Weak view: random horizontal flip (off for digits).")
    n_ops: int = Field(2, ge=0, le=6, description="Strong view: RandAugment ops per image.")
    cutout: float = Field(0.5, ge=0.0, le=1.0, description="Strong view: max cutout side.")
    colour: Literal["keep", "invariant"] = Field(
        "keep",
        description="keep: colours may tell classes apart (the default). invariant: they do "
        "not (digits, text or shapes printed in any colour): every view of a colour image "
        "gets a random hue and channel order, and each image is standardized by its own "
        "channel statistics, so the model learns shapes and throws absolute colour away. "
        "Grayscale training ignores it.",
    )


class DistributedConfig(Section):
    nproc_per_node: int = Field(
        1,
        ge=1,
        description="Training processes on this node (GPUs on a GPU node); > 1 "
        "launches the training phases with torchrun (DistributedDataParallel).",
    )
    nnodes: int = Field(1, ge=1, description="Nodes taking part (each runs nproc_per_node).")
    node_rank: int = Field(0, ge=0, description="This node's rank among nnodes.")
    master_addr: str = Field("127.0.0.1", description="Rank 0's address (several nodes).")
    master_port: int = Field(
        0, ge=0, le=65535, description="Rank 0's port; 0 = a free port (one node only)."
    )
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="auto: nccl on CUDA, gloo on CPU."
    )


class TrainConfig(Section):
    @model_validator(mode="after")
    def _as_of_utc(self) -> TrainConfig:
        object.__setattr__(self, "as_of", _utc(self.as_of))
        return self

    @model_validator(mode="after")
    def _pretrained_network(self) -> TrainConfig:
        if self.pretrained is not None and not self.network.startswith("resnet"):
            raise ValueError(
                f"train.pretrained needs a torchvision network (resnet18, resnet34 or "
                f"resnet50), not train.network={self.network!r}: set train.network=resnet18 "
                "or train.pretrained=null"
            )
        return self

    @field_validator("distribution_alignment", mode="before")
    @classmethod
    def _alignment_from_bool(cls, v: object) -> object:
        """Older configs (and YAML's bare `off`) say true / false."""
        return {True: "prior", False: "off"}.get(v, v) if isinstance(v, bool) else v

    network: Literal["small_cnn", "wrn28_2", "resnet18", "resnet34", "resnet50"] = Field(
        "small_cnn", description="Backbone: small_cnn (28x28 on CPU), wrn28_2, torchvision."
    )
    image_size: int = Field(
        28,
        ge=8,
        description="Every image is resized to this square side (bilinear, aspect ratio not "
        "kept: a 64x128 crop is stretched to a square, nothing is cut off); `semilabel init` "
        "picks it from the image sizes found.",
    )
    channels: Literal[1, 3] = Field(1, description="1 = grayscale, 3 = RGB input.")
    pretrained: str | None = Field(
        None,
        description="resnet18/34/50 only: start from torchvision weights: `imagenet` (the "
        "torchvision ImageNet weights, read from the torch hub cache, downloaded there when "
        "missing) or the path of a saved state dict (.pt/.pth, e.g. for machines without "
        "network). The network keeps torchvision's stem and the input normalization those "
        "weights expect (ImageNet mean and std); its classification layer is new. "
        "null: random weights.",
    )
    teacher_steps: int = Field(300, ge=1, description="Supervised teacher steps.")
    student_steps: int = Field(600, ge=0, description="Semi-supervised student steps.")
    seeded_student_steps: int | None = Field(
        2400,
        ge=0,
        description="When the run starts seeded (train.start; few labels), the student "
        "trains at least this many steps: from one or two labels a class it is still "
        "improving at 600 (about 10 minutes more on 2 CPU cores at 28x28). null: "
        "train.student_steps.",
    )
    batch_size: int = Field(32, ge=1, description="Labeled examples per step.")
    uratio: int = Field(3, ge=1, description="Unlabeled examples per labeled example.")
    lr: float = Field(0.03, gt=0, description="SGD learning rate (cosine decay).")
    weight_decay: float = Field(5e-4, ge=0)
    ema_decay: float = Field(0.99, ge=0, lt=1, description="EMA of student weights.")
    threshold: Literal["fixed", "flexmatch", "freematch", "softmatch"] = Field(
        "flexmatch",
        description="Which pseudo-labels count: fixed (tau), flexmatch (class-adaptive, "
        "tau the upper bound), freematch (self-adaptive: follows the model's confidence) "
        "or softmatch (every pseudo-label weighted by a truncated Gaussian of confidence).",
    )
    tau: float = Field(
        0.95, gt=0, le=1, description="Confidence threshold (fixed; flexmatch's upper bound)."
    )
    threshold_momentum: float = Field(
        0.999,
        ge=0,
        lt=1,
        description="freematch and softmatch: momentum of their running confidence statistics.",
    )
    fairness_weight: float = Field(
        0.0,
        ge=0,
        description="freematch: weight of its self-adaptive fairness term (the paper: 0.001 "
        "to 0.01); 0 turns it off.",
    )
    lambda_u: float = Field(1.0, ge=0, description="Weight of the unlabeled loss.")
    distribution_alignment: Literal["off", "prior", "uniform"] = Field(
        "off",
        description="Scale the pseudo-label source's predictions so their running mean "
        "moves toward the labeled class prior or a uniform one (true = prior, false = off).",
    )
    start: Literal["labels", "seeded", "auto"] = Field(
        "auto",
        description="How the teacher starts: labels (the labels alone), seeded (the "
        "pre-phase, then propagation seeds) or auto (seeded when the class with the fewest "
        "human labels has at most train.few_labels).",
    )
    few_labels: int = Field(
        2,
        ge=0,
        description="train.start auto: the seeded start runs when some class has at most "
        "this many human labels.",
    )
    pretrain_steps: int = Field(
        300,
        ge=0,
        description="Seeded start: steps of the pre-phase that learns features from the "
        "unlabeled pool alone (SimCLR) before the teacher; cached per data snapshot. 0: none.",
    )
    pretrain_batch_size: int = Field(256, ge=2, description="Images per pre-phase step.")
    propagate_per_class: int = Field(
        100,
        ge=0,
        description="Seeded start: label propagation on the pre-phase's features; this many "
        "of the most confident propagated labels per class join the labeled set as weak "
        "labels. 0: none.",
    )
    pseudo_label_source: Literal["ema", "teacher", "self"] = Field(
        "self", description="Who pseudo-labels the weak view: student (FixMatch), EMA, teacher."
    )
    human_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="When weak labels are in the labeled set: the share of every labeled "
        "batch drawn from human labels (0 = draw uniformly over all labels). No effect "
        "without weak labels.",
    )
    augment: AugmentConfig = AugmentConfig()
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1.")
    bf16: bool = Field(True, description="bfloat16 autocast on CUDA.")
    compile: bool = Field(False, description="torch.compile the network (CUDA).")
    checkpoint_every: int = Field(100, ge=0, description="Steps between checkpoints.")
    eval_every: int = Field(100, ge=1, description="Steps between gold evaluations.")
    log_every: int = Field(10, ge=1, description="Steps between logged metric rows.")
    run_dir: str = Field(".semilabel/runs", description="Checkpoints, one folder per run.")
    cache_dir: str | None = Field(
        None,
        description="Decoded images, one flat uint8 file per store state and image size, "
        "built once and reused by later runs (local disk). Default: `cache/` beside a "
        "local store (`.semilabel/cache`), `.semilabel/cache` for a remote one.",
    )
    pool_memory_mb: int = Field(
        2048,
        ge=0,
        description="An unlabeled pool up to this size (decoded) is held in memory (on the "
        "GPU when there is one); a larger one is read batch by batch from the cache file.",
    )
    distributed: DistributedConfig = DistributedConfig()
    as_of: datetime | None = Field(
        None,
        description="Time travel: train on the store exactly as it was then (examples "
        "ingested and label events created up to this instant, ISO 8601 with a zone).",
    )
    shuffle_labels: bool = Field(
        False, description="Testing only: shuffle training labels to sabotage a run."
    )


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
