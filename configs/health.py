"""Label health: drift checks, SLI thresholds, and where SLIs are pushed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from configs.base import Section


class DriftConfig(Section):
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


class HealthConfig(Section):
    guard_margin: float | None = Field(
        0.05,
        ge=0,
        le=1,
        description="Feedback-loop guard: when the student's accuracy on gold dev (its EMA) "
        "falls more than this below the teacher's on the same examples, the student "
        "restarts from the teacher's weights and pseudo-labeling is off for the rest of "
        "the run (null: no guard).",
    )
    guard_warmup_steps: int = Field(
        200,
        ge=0,
        description="Feedback-loop guard: student steps before it judges (right after the "
        "student starts, its accuracy dips for a while and recovers).",
    )
    pseudo_label_precision_floor: float | None = Field(
        0.8,
        ge=0,
        le=1,
        description="Label health: pseudo-labels right less often than this on gold dev "
        "breach the pseudo-label precision SLI (null: no threshold). The guard judges the "
        "student against the teacher instead (health.guard_margin).",
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


class MetricsConfig(Section):
    pushgateway_url: str | None = Field(
        None, description="Push every run's SLIs to this Prometheus Pushgateway (batch jobs)."
    )
    job: str = Field("semilabel", description="The Pushgateway job label.")
