"""The typed configuration: one sub-config per stage, unknown keys rejected.

`load_config` reads a YAML file (the embedded default when none is given), applies
dotted-key overrides (`--set store.root=/data` on the CLI, or a flow's `overrides`
parameter), and validates the result. Every error names the offending key and what
it accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Section):
    root: str = Field(
        ".semilabel/store",
        description="Store root: a local folder or a pyarrow filesystem URI such as "
        "s3://bucket/prefix (S3 query options like ?endpoint_override= are accepted).",
    )
    rows_per_file: int = Field(4096, ge=1, description="Rows per Parquet file written by ingest.")


class TaxonomyConfig(_Section):
    version: str = Field("v1", description="Recorded on every label event.")
    classes: tuple[str, ...] = Field(
        ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
        min_length=2,
        description="Class names, in model output order. Labels outside it are quarantined.",
    )

    @model_validator(mode="after")
    def _unique(self) -> TaxonomyConfig:
        seen: set[str] = set()
        dupes = sorted({c for c in self.classes if c in seen or seen.add(c)})
        if dupes:
            raise ValueError(f"taxonomy.classes has duplicates: {dupes}")
        if "label" in self.classes:  # the served model's output has a `label` column
            raise ValueError(
                "taxonomy.classes: 'label' cannot be a class name (the served model returns "
                "a `label` column beside one column per class): rename that class"
            )
        return self


BUILTIN_SLICES = ("source", "ingest_date")  # gate slices every example has


class SourceConfig(_Section):
    kind: Literal["mnist5k", "image_folder", "manifest"] = Field(
        "mnist5k", description="Where ingest reads from."
    )
    path: str | None = Field(
        None, description="Folder (image_folder) or .parquet/.csv file (manifest)."
    )
    labels_per_class: int = Field(
        10, ge=0, description="mnist5k: human labels kept per class outside the gold set."
    )
    path_column: str = Field("path", description="manifest: column with image paths.")
    label_column: str = Field("label", description="manifest: optional label column.")
    metadata_columns: tuple[str, ...] = Field(
        (),
        description="manifest: columns read for each row and stored with its example as "
        "metadata (values as strings; an empty cell is left out), e.g. region or camera; "
        "each may name a slice in gate.slices. A column missing from the manifest fails the "
        "ingest. Other source kinds store no metadata.",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> SourceConfig:
        if self.kind != "mnist5k" and not self.path:
            raise ValueError(f"source.path is required when source.kind is {self.kind!r}")
        return self

    @model_validator(mode="after")
    def _metadata_names(self) -> SourceConfig:
        seen: set[str] = set()
        dupes = sorted({c for c in self.metadata_columns if c in seen or seen.add(c)})
        taken = sorted(set(self.metadata_columns) & set(BUILTIN_SLICES))
        problems = [f"has duplicates: {dupes}"] if dupes else []
        if taken:
            problems.append(
                f"{taken} would hide the built-in slice of that name (rename the column)"
            )
        if problems:
            raise ValueError("source.metadata_columns " + "; ".join(problems))
        return self


class GoldConfig(_Section):
    fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of examples (by id hash) in the gold holdout."
    )
    salt: str = Field("gold-v1", description="Hash salt; changing it re-draws the gold set.")
    test_share: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Share of the gold holdout (by id hash) in its `test` part, which only "
        "the gate and the monitor read; the rest is `dev`, for choosing (labeling-function "
        "floors, label-model alignment, training curves).",
    )


class IngestConfig(_Section):
    max_pixels: int = Field(
        50_000_000, ge=1, description="Images declaring more pixels are quarantined."
    )
    convert: Literal["auto", "L", "RGB", "off"] = Field(
        "auto",
        description="What ingest does with an image whose mode is not what training reads: "
        "auto (accept it; training converts it to train.channels: grayscale `L` for 1, `RGB` "
        "for 3), L or RGB (the same, naming the target, which must agree with "
        "train.channels), or off (quarantine every image whose channel count is not in "
        "ingest.channels). Palette, RGBA/LA (composited on white), CMYK, 16-bit and "
        "grayscale-in-RGB images are converted; the stored bytes stay the original and the "
        "ingest summary counts what was converted. EXIF orientation is always applied.",
    )
    channels: tuple[Literal[1, 2, 3, 4], ...] = Field(
        (1, 3),
        min_length=1,
        description="ingest.convert off: the channel counts accepted (others are quarantined).",
    )
    workers: int = Field(2, ge=1, description="Processes decoding and checking images.")
    runner: Literal["processes", "threads", "dask"] = Field(
        "processes",
        description="Where batches are decoded and checked: local processes, threads, or "
        "a Dask cluster (local with `workers` processes, or ingest.dask_address).",
    )
    dask_address: str | None = Field(
        None, description="An existing Dask scheduler for runner: dask (shared storage)."
    )


class LabelsConfig(_Section):
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


class AugmentConfig(_Section):
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


class DistributedConfig(_Section):
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


class TrainConfig(_Section):
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


class MlflowConfig(_Section):
    tracking_uri: str = Field(
        "sqlite:///.semilabel/mlflow.db", description="MLflow tracking URI (file, sqlite, http)."
    )
    experiment: str = Field("semilabel", description="MLflow experiment name.")
    model_name: str = Field("semilabel-classifier", description="Registered model name.")
    artifact_root: str | None = Field(
        None,
        description="Where a new experiment's artifacts go: a folder or s3://... (default: "
        "`artifacts/` beside a local SQLite store, the server's default for http(s)).",
    )
    ui_url: str = Field(
        "http://127.0.0.1:5000",
        description="The MLflow UI the CLI links runs to (the tracking server's URL when "
        "tracking_uri is http(s)).",
    )
    trust_pickled_models: bool = Field(
        False,
        description="Load model versions logged in the old pickled format (semilabel 0.1). "
        "Unpickling runs code stored in the registry: turn on only for a registry no one "
        "else can write to, e.g. to evaluate an old champion once (README: model format).",
    )
    registry_lock_timeout_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="How long retrain, monitor and rollback wait for the registry lock "
        "(one writer per registered model at a time) before giving up.",
    )


class LabelingFunctionConfig(_Section):
    name: str = Field(description="Unique name; recorded as the label source.")
    kind: Literal["knn", "prototype", "model", "external", "python"] = Field(
        description="Built-in family, or `python` for any function by import path."
    )
    accuracy_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Quarantine below this gold accuracy; 0 never quarantines (default: a "
        "python function's own floor, else weak_labeling.accuracy_floor).",
    )
    embedding: Literal["pixels", "pca", "champion"] = Field(
        "pca",
        description="knn/prototype: raw pixels, PCA of pixels, or the champion's "
        "penultimate layer (falls back to pca when there is no champion).",
    )
    dims: int = Field(50, ge=2, description="PCA dimensions.")
    k: int = Field(5, ge=1, description="knn: neighbours.")
    min_agreement: float = Field(
        0.8, ge=0, le=1, description="knn: share of neighbours that must agree, else abstain."
    )
    min_margin: float = Field(
        0.1,
        ge=0,
        description="prototype: relative distance margin "
        "between the two nearest class means, else abstain.",
    )
    model_uri: str | None = Field(None, description="model: an MLflow model URI.")
    min_confidence: float = Field(0.9, ge=0, le=1, description="model: abstain below this.")
    path: str | None = Field(None, description="external: CSV/Parquet with example_id,label.")
    target: str | None = Field(None, description="python: package.module:function.")
    model_backed: bool = Field(
        False,
        description="Its votes come from a model (a python function wrapping one, an external "
        "file another model wrote): labels built on them count against "
        "labels.max_model_share, as a model's own predictions do. kind model, and "
        "embedding champion once there is one, are model-backed anyway; so is a python "
        "function declared so in code (labeling_function(model_backed=True)).",
    )


class WeakLabelingConfig(_Section):
    enabled: bool = Field(False, description="Run weak labeling inside `retrain`.")
    functions: list[LabelingFunctionConfig] = Field(
        default_factory=list, description="Labeling functions to apply."
    )
    label_model: Literal["dawid_skene", "majority_vote"] = Field(
        "dawid_skene", description="How votes are combined."
    )
    accuracy_floor: float = Field(
        0.6, ge=0, le=1, description="A function whose gold accuracy is below it is ignored."
    )
    min_gold_covered: int = Field(
        20, ge=1, description="Gold rows a function must cover before its floor is judged."
    )
    batch_rows: int = Field(8192, ge=1, description="Rows per vectorized batch.")
    shard_rows: int = Field(
        50_000,
        ge=1,
        description="Rows per shard: the store's row groups are split into shards of about "
        "this many rows, each applied by one mapped Prefect task.",
    )
    runner: Literal["processes", "threads", "dask"] = Field(
        "processes",
        description="Prefect task runner for the shards: a process pool, a thread pool, or "
        "Dask (`pip install semilabel[dask]`). A store of one shard is applied in-process.",
    )
    workers: int = Field(
        0, ge=0, description="Parallel shards (processes, threads or Dask workers); 0 = CPUs."
    )
    dask_address: str | None = Field(
        None,
        description="runner=dask: the scheduler of an existing Dask cluster "
        "(tcp://host:8786); a local cluster of `workers` processes when omitted.",
    )


_DISABLE = " null disables this check (the gate report lists it as disabled by config)."


class GateFloorsConfig(_Section):
    accuracy: float | None = Field(0.9, ge=0, le=1, description="Accuracy floor." + _DISABLE)
    macro_f1: float | None = Field(0.9, ge=0, le=1, description="Macro-F1 floor." + _DISABLE)
    ece: float | None = Field(
        None, ge=0, le=1, description="Expected calibration error ceiling (off by default)."
    )


class GateRegressionConfig(_Section):
    accuracy: float | None = Field(
        0.01, ge=0, le=1, description="Largest allowed accuracy drop vs the champion." + _DISABLE
    )
    macro_f1: float | None = Field(
        0.01, ge=0, le=1, description="Largest allowed macro-F1 drop vs the champion." + _DISABLE
    )
    ece: float | None = Field(
        0.05, ge=0, le=1, description="Largest allowed ECE rise vs the champion." + _DISABLE
    )


class GateConfig(_Section):
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="Level of every bound the gate decides on: a floor passes when the lower "
        "bound clears it, fails when the upper bound is below it, and is otherwise undecided; "
        "a model truly under a floor is promoted at most 1 - confidence of the time.",
    )
    min_gold_labels: int = Field(
        30,
        ge=1,
        description="A safety minimum: with fewer human labels in the gold test part the gate "
        "is undecided (the bounds decide the rest).",
    )
    min_labels_per_class: int = Field(
        4,
        ge=1,
        description="A class with fewer gold test labels makes the gate undecided, with the "
        "number of labels needed.",
    )
    floors: GateFloorsConfig = Field(
        GateFloorsConfig(),
        description="Absolute floors (for ece: a ceiling). A key left out keeps its default.",
    )
    min_class_recall: float | None = Field(
        0.4,
        ge=0,
        le=1,
        description="Per-class recall floor, judged on each class's bounds: a class the model "
        "has collapsed on never passes." + _DISABLE,
    )
    max_regression: GateRegressionConfig = Field(
        GateRegressionConfig(),
        description="Largest allowed change for the worse vs the champion, on the same gold "
        "examples (paired). A key left out keeps its default.",
    )
    bootstrap_samples: int = Field(
        1000,
        ge=100,
        description="Bootstrap replicates for the bounds on macro-F1, ECE and worst-class recall "
        "(seeded by `seed`).",
    )
    slices: tuple[str, ...] = Field(
        ("source",),
        description="Gold test is also judged per slice: `source`, `ingest_date`, or a column "
        "of source.metadata_columns. A slice where the candidate is significantly worse than "
        "the champion blocks promotion.",
    )


class MonitorToleranceConfig(_Section):
    accuracy: float | None = Field(
        0.02, ge=0, le=1, description="Accuracy drop vs gate time that triggers a rollback."
    )
    macro_f1: float | None = Field(
        0.02, ge=0, le=1, description="Macro-F1 drop vs gate time that triggers a rollback."
    )
    ece: float | None = Field(
        None, ge=0, le=1, description="ECE rise vs gate time that triggers a rollback (off)."
    )


class MonitorConfig(_Section):
    tolerance: MonitorToleranceConfig = Field(
        MonitorToleranceConfig(),
        description="Regression of the live champion vs its gate-time metrics that "
        "triggers an automatic rollback; null switches a metric off.",
    )
    min_gold_labels: int = Field(
        100, ge=1, description="Fewer gold test labels: monitor reports and does nothing."
    )


Strategy = Literal[
    "random", "least_confidence", "margin", "entropy", "kcenter", "class_balanced", "cluster_margin"
]


class SamplingBudgetConfig(_Section):
    train: int = Field(
        200, ge=0, description="Unlabeled, non-gold examples to request, chosen by the strategy."
    )
    gold: int = Field(
        0,
        ge=0,
        description="Gold-holdout examples without a human label to request, uniformly at "
        "random (the gold set grows unbiased).",
    )
    review: int = Field(
        0,
        ge=0,
        description="Existing human or weak labels most likely wrong (confident learning), "
        "to be checked again.",
    )


class SamplingConfig(_Section):
    mode: Literal["off", "export", "label_studio", "simulate"] = Field(
        "off",
        description="What `retrain` does after promotion: off; export (request and write "
        "Label Studio tasks JSON + CSV); label_studio (request and push to Label Studio); "
        "simulate (the embedded default only: a simulated annotator answers at once).",
    )
    strategy: Strategy = Field(
        "margin", description="How the `train` stream picks examples (see README)."
    )
    budget: SamplingBudgetConfig = SamplingBudgetConfig()
    export_dir: str = Field(
        ".semilabel/annotation", description="Where `annotate export` and mode=export write."
    )
    cold_start_steps: int = Field(
        300,
        ge=1,
        description="Without a champion, a supervised teacher trained this many steps on the "
        "current labels scores the pool.",
    )
    review_folds: int = Field(
        5, ge=2, description="review: folds of the out-of-sample predicted probabilities."
    )
    simulate_error_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="mode=simulate: share of the simulated annotator's answers that are wrong.",
    )


class LabelStudioConfig(_Section):
    url: str = Field("http://127.0.0.1:8080", description="Label Studio's base URL.")
    api_key_env: str = Field(
        "LABEL_STUDIO_API_KEY",
        description="Environment variable holding the API token (never the token itself).",
    )
    project: str = Field(
        "semilabel", min_length=3, description="Project title: created if it does not exist."
    )


class DriftConfig(_Section):
    reference_size: int = Field(
        2000, ge=50, description="Examples of earlier ingests the newest batch is compared with."
    )
    sample_size: int = Field(
        400, ge=20, description="Examples drawn from each side for the embedding test."
    )
    permutations: int = Field(200, ge=20, description="Permutations of the MMD test.")
    p_value: float = Field(
        0.01, gt=0, lt=1, description="MMD permutation test: drift when p is below this."
    )
    js_threshold: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Jensen-Shannon distance of pixel-intensity histograms above which the "
        "images drifted.",
    )
    on_breach: Literal["report", "block", "sample"] = Field(
        "report",
        description="report: in the label-health report; block: the gate refuses promotion; "
        "sample: also request annotation of the drifted batch (the train stream's budget).",
    )


class HealthConfig(_Section):
    pseudo_label_precision_floor: float | None = Field(
        0.8,
        ge=0,
        le=1,
        description="Feedback-loop guard: pseudo-labels right less often than this on the "
        "gold dev part switch pseudo-labeling off for the run (null: no guard).",
    )
    max_label_age_h: float = Field(
        24 * 30, gt=0, description="Median age of training labels above this: stale labels."
    )
    max_backlog: int = Field(1000, ge=0, description="Open annotation requests above this.")
    max_backlog_age_h: float = Field(
        72, gt=0, description="The oldest open annotation request older than this."
    )
    min_retrain_success: float = Field(
        0.8, ge=0, le=1, description="Share of the last retrains that must complete."
    )
    retrain_window: int = Field(10, ge=1, description="How many recent retrains count.")
    max_model_influenced: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share of training labels a model influenced above this (feedback risk).",
    )
    min_class_recall: float | None = Field(
        0.4,
        ge=0,
        le=1,
        description="A class's gold recall below this is a collapse (reported; the gate's own "
        "gate.min_class_recall blocks promotion).",
    )
    drift: DriftConfig = DriftConfig()


class MetricsConfig(_Section):
    pushgateway_url: str | None = Field(
        None, description="Push every run's SLIs to this Prometheus Pushgateway (batch jobs)."
    )
    job: str = Field("semilabel", description="The Pushgateway job label.")


class Config(_Section):
    seed: int = Field(0, description="Seed for every random choice in a run.")
    store: StoreConfig = StoreConfig()
    taxonomy: TaxonomyConfig = TaxonomyConfig()
    source: SourceConfig = SourceConfig()
    gold: GoldConfig = GoldConfig()
    ingest: IngestConfig = IngestConfig()
    labels: LabelsConfig = LabelsConfig()
    train: TrainConfig = TrainConfig()
    mlflow: MlflowConfig = MlflowConfig()
    weak_labeling: WeakLabelingConfig = WeakLabelingConfig()
    gate: GateConfig = GateConfig()
    monitor: MonitorConfig = MonitorConfig()
    sampling: SamplingConfig = SamplingConfig()
    label_studio: LabelStudioConfig = LabelStudioConfig()
    health: HealthConfig = HealthConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _convert_matches_channels(self) -> Config:
        wanted = {"L": 1, "RGB": 3}.get(self.ingest.convert)
        if wanted is not None and wanted != self.train.channels:
            raise ValueError(
                f"ingest.convert={self.ingest.convert} converts images to {wanted} channel(s) "
                f"but train.channels={self.train.channels}: set train.channels={wanted} or "
                "ingest.convert=auto"
            )
        return self

    @field_validator("gate")
    @classmethod
    def _slices_known(cls, gate: GateConfig, info: ValidationInfo) -> GateConfig:
        """A slice is built-in or a stored metadata column (on the field, not the model,
        so the error names `gate` and not the whole config)."""
        source = info.data.get("source")
        if source is None:  # source itself is invalid: that error is reported
            return gate
        accepted = (*BUILTIN_SLICES, *source.metadata_columns)
        unknown = [s for s in gate.slices if s not in accepted]
        if unknown:
            raise ValueError(
                f"gate.slices: unknown slice {', '.join(map(repr, unknown))}; accepted: "
                f"{', '.join(accepted)} (built-in, then source.metadata_columns)"
            )
        return gate

    def train_settings(self) -> Any:
        """This config as `models.TrainSettings`, the training loop's own settings: the
        one place the `train:` section is mapped (models is imported only when called,
        so loading a config needs no torch)."""
        from models import AugmentSettings, TrainSettings

        t = self.train
        return TrainSettings(
            num_classes=len(self.taxonomy.classes),
            network=t.network,
            pretrained=t.pretrained,
            teacher_steps=t.teacher_steps,
            student_steps=t.student_steps,
            batch_size=t.batch_size,
            uratio=t.uratio,
            lr=t.lr,
            weight_decay=t.weight_decay,
            ema_decay=t.ema_decay,
            threshold=t.threshold,
            tau=t.tau,
            threshold_momentum=t.threshold_momentum,
            fairness_weight=t.fairness_weight,
            lambda_u=t.lambda_u,
            pseudo_label_precision_floor=self.health.pseudo_label_precision_floor,
            distribution_alignment=t.distribution_alignment,
            pseudo_label_source=t.pseudo_label_source,
            human_share=t.human_share,
            start=t.start,
            few_labels=t.few_labels,
            pretrain_steps=t.pretrain_steps,
            pretrain_batch_size=t.pretrain_batch_size,
            propagate_per_class=t.propagate_per_class,
            augment=AugmentSettings(
                pad=t.augment.pad,
                flip=t.augment.flip,
                n_ops=t.augment.n_ops,
                cutout=t.augment.cutout,
                colour=t.augment.colour,
            ),
            device=t.device,
            bf16=t.bf16,
            compile=t.compile,
            checkpoint_every=t.checkpoint_every,
            eval_every=t.eval_every,
            log_every=t.log_every,
            seed=self.seed,
        )

    def distributed_settings(self) -> Any:
        """`train.distributed` as `models.distributed.DistributedSettings`."""
        from models.distributed import DistributedSettings

        return DistributedSettings(**self.train.distributed.model_dump())


def parse_set_args(items: Iterable[str]) -> dict[str, Any]:
    """Turn `["a.b=1", "c=x"]` into `{"a.b": 1, "c": "x"}`; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. store.root=/data")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _section_model(path: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        section = _section_model(tuple(parts[: depth + 1]))
        if section is None:
            parent = _section_model(tuple(parts[:depth])) or Config
            raise ConfigError(
                f"unknown config key {'.'.join(parts[: depth + 1])!r}; "
                f"allowed here: {', '.join(_allowed_keys(parent))}"
            )
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    leaf_parent = _section_model(tuple(parts[:-1]))
    if leaf_parent is None or parts[-1] not in leaf_parent.model_fields:
        allowed = _allowed_keys(leaf_parent or Config)
        raise ConfigError(f"unknown config key {dotted!r}; allowed here: {', '.join(allowed)}")
    node[parts[-1]] = value


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        parent = _section_model(tuple(str(p) for p in error["loc"][:-1])) or Config
        return f"unknown config key {loc!r}; allowed here: {', '.join(_allowed_keys(parent))}"
    given = error.get("input")
    msg = error["msg"].removeprefix("Value error, ")
    if isinstance(given, Mapping):  # a section's own check: its message names the keys
        return msg if loc == "<root>" else f"{loc}: {msg}"
    return f"{loc}: {msg} (got {given!r})"


def validate_config(data: Mapping[str, Any]) -> Config:
    """Validate a plain mapping into a `Config`, naming every bad key at once."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Load `path` (default: the embedded default), apply dotted overrides, validate."""
    file = Path(path) if path else DEFAULT_CONFIG_PATH
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(file)!r} must hold a mapping of keys")
    for dotted, value in (overrides or {}).items():
        _apply_override(data, dotted, value)
    return validate_config(data)
