"""Weak labeling: the labeling functions and the label model that combines them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from configs.base import Section


class LabelingFunctionConfig(Section):
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


class WeakLabelingConfig(Section):
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
