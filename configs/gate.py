"""The validation gate that decides promotion, and the monitor that re-checks the
champion afterwards."""

from __future__ import annotations

from pydantic import Field

from configs.base import Section

_DISABLE = " null disables this check (the gate report lists it as disabled by config)."


class GateFloorsConfig(Section):
    accuracy: float | None = Field(0.9, ge=0, le=1, description="Accuracy floor." + _DISABLE)
    macro_f1: float | None = Field(0.9, ge=0, le=1, description="Macro-F1 floor." + _DISABLE)
    ece: float | None = Field(
        None, ge=0, le=1, description="Expected calibration error ceiling (off by default)."
    )


class GateRegressionConfig(Section):
    accuracy: float | None = Field(
        0.01, ge=0, le=1, description="Largest allowed accuracy drop vs the champion." + _DISABLE
    )
    macro_f1: float | None = Field(
        0.01, ge=0, le=1, description="Largest allowed macro-F1 drop vs the champion." + _DISABLE
    )
    ece: float | None = Field(
        0.05, ge=0, le=1, description="Largest allowed ECE rise vs the champion." + _DISABLE
    )


class GateConfig(Section):
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


class MonitorToleranceConfig(Section):
    accuracy: float | None = Field(
        0.02, ge=0, le=1, description="Accuracy drop vs gate time that triggers a rollback."
    )
    macro_f1: float | None = Field(
        0.02, ge=0, le=1, description="Macro-F1 drop vs gate time that triggers a rollback."
    )
    ece: float | None = Field(
        None, ge=0, le=1, description="ECE rise vs gate time that triggers a rollback (off)."
    )


class MonitorConfig(Section):
    tolerance: MonitorToleranceConfig = Field(
        MonitorToleranceConfig(),
        description="Regression of the live champion vs its gate-time metrics that "
        "triggers an automatic rollback; null switches a metric off.",
    )
    min_gold_labels: int = Field(
        100, ge=1, description="Fewer gold test labels: monitor reports and does nothing."
    )
