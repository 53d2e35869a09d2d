"""What the data is and where it lives: the store, the taxonomy (class names), the gold
holdout, and the source that ingest reads with its conversions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from configs.base import Section


class StoreConfig(Section):
    root: str = Field(
        ".semilabel/store",
        description="Store root: a local folder or a pyarrow filesystem URI such as "
        "s3://bucket/prefix (S3 query options like ?endpoint_override= are accepted).",
    )
    rows_per_file: int = Field(4096, ge=1, description="Rows per Parquet file written by ingest.")


class TaxonomyConfig(Section):
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


class SourceConfig(Section):
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


class GoldConfig(Section):
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


class IngestConfig(Section):
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


@dataclass(frozen=True)
class DataSpec:
    """What every stage needs to know about the data, and nothing else: where the store
    is, the classes in model output order, how gold is drawn, the image shape the model
    takes, and the run's seed. Built from a whole config by `Config.data_spec()`."""

    store: StoreConfig
    taxonomy: TaxonomyConfig
    gold: GoldConfig
    image_size: int
    channels: int
    seed: int

    @property
    def root(self) -> str:
        return self.store.root

    @property
    def classes(self) -> tuple[str, ...]:
        return self.taxonomy.classes
