"""Sampling for annotation: strategies, budgets per stream, and Label Studio."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from configs.base import Section

Strategy = Literal[
    "random", "least_confidence", "margin", "entropy", "kcenter", "class_balanced", "cluster_margin"
]


class SamplingBudgetConfig(Section):
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


class SamplingConfig(Section):
    mode: Literal["off", "export", "label_studio", "simulate"] = Field(
        "off",
        description="What `retrain` does after promotion: off; export (request and write "
        "Label Studio tasks JSON + CSV); label_studio (request and push to Label Studio); "
        "simulate (the embedded default only: a simulated annotator answers at once).",
    )
    strategy: Strategy = Field(
        "margin", description="How the `train` stream picks examples (docs/loop/annotation.md)."
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
    review_pool_max: int = Field(
        20_000,
        ge=1,
        description="review: confident learning considers at most this many labeled "
        "examples, a uniform sample of them drawn with the batch's seeded generator (human "
        "and weak labels alike, so the per-class thresholds describe the labels training "
        "uses); a pool no larger is considered whole. Bounds the images scored, the "
        "embeddings held and the out-of-fold regression's rows.",
    )
    candidates_per_pick: int = Field(
        10,
        ge=1,
        description="kcenter and cluster_margin consider this many pool examples per "
        "request (kcenter a uniform sample, cluster_margin the smallest margins): only "
        "their embeddings are kept while the pool is scored.",
    )
    batch_rows: int = Field(1024, ge=1, description="Images scored per forward pass.")
    shard_rows: int = Field(
        50_000,
        ge=1,
        description="Rows of the train pool per shard, each scored by one mapped Prefect "
        "task; a pool of one shard is scored in-process.",
    )
    runner: Literal["processes", "threads", "dask"] = Field(
        "processes",
        description="Prefect task runner scoring the pool's shards: a process pool, a "
        "thread pool, or Dask (`pip install semilabel[dask]`).",
    )
    workers: int = Field(
        0, ge=0, description="Parallel shards (processes, threads or Dask workers); 0 = CPUs."
    )
    dask_address: str | None = Field(
        None,
        description="runner=dask: the scheduler of an existing Dask cluster "
        "(tcp://host:8786); a local cluster of `workers` processes when omitted.",
    )
    simulate_error_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="mode=simulate: share of the simulated annotator's answers that are wrong.",
    )


class LabelStudioConfig(Section):
    url: str = Field("http://127.0.0.1:8080", description="Label Studio's base URL.")
    api_key_env: str = Field(
        "LABEL_STUDIO_API_KEY",
        description="Environment variable holding the API token (never the token itself).",
    )
    project: str = Field(
        "semilabel", min_length=3, description="Project title: created if it does not exist."
    )
