"""The typed configuration: one sub-config per stage, unknown keys rejected.

`load_config` reads a YAML file (the embedded default when none is given), applies
dotted-key overrides (`--set store.root=/data` on the CLI, or a flow's `overrides`
parameter), and validates the result. Every error names the offending key and what
it accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:  # models imports torch; a config loads without it
    from models import TrainSettings
    from models.distributed import DistributedSettings

from configs.base import ConfigError, Section
from configs.data import (
    BUILTIN_SLICES,
    DataSpec,
    GoldConfig,
    IngestConfig,
    SourceConfig,
    StoreConfig,
    TaxonomyConfig,
)
from configs.gate import GateConfig, MonitorConfig
from configs.health import HealthConfig, MetricsConfig
from configs.sampling import LabelStudioConfig, SamplingConfig
from configs.tracking import MlflowConfig
from configs.train import LabelsConfig, TrainConfig
from configs.weak_labeling import WeakLabelingConfig

__all__ = ["Config", "ConfigError", "load_config", "parse_set_args", "validate_config"]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")


class Config(Section):
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

    def data_spec(self) -> DataSpec:
        """The part of this config that every stage shares (see `DataSpec`)."""
        return DataSpec(
            store=self.store,
            taxonomy=self.taxonomy,
            gold=self.gold,
            image_size=self.train.image_size,
            channels=self.train.channels,
            seed=self.seed,
        )

    def train_settings(self) -> TrainSettings:
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
            seeded_student_steps=t.seeded_student_steps,
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
            guard_margin=self.health.guard_margin,
            guard_warmup_steps=self.health.guard_warmup_steps,
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

    def distributed_settings(self) -> DistributedSettings:
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
