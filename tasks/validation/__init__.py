"""Gold-set metrics, their evidence, the promotion gate and the monitor's comparison."""

from tasks.validation.evidence import (
    Bounds,
    PairedCounts,
    mcnemar_p,
    paired_accuracy_bounds,
    proportion_bounds,
)
from tasks.validation.gate import (
    PASSED,
    REJECTED,
    UNDECIDED,
    Check,
    GatePolicy,
    GateReport,
    GoldEvidence,
    SliceResult,
    Thresholds,
    decide,
)
from tasks.validation.metrics import (
    ECE_BINS,
    HIGHER_IS_BETTER,
    METRICS,
    GoldMetrics,
    calibration_bins,
    expected_calibration_error,
    gold_metrics,
)
from tasks.validation.monitor import MonitorReport, regressions_since_gate

__all__ = [
    "ECE_BINS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "PASSED",
    "REJECTED",
    "UNDECIDED",
    "Bounds",
    "Check",
    "GateReport",
    "GatePolicy",
    "GoldEvidence",
    "GoldMetrics",
    "MonitorReport",
    "PairedCounts",
    "SliceResult",
    "Thresholds",
    "calibration_bins",
    "decide",
    "expected_calibration_error",
    "gold_metrics",
    "mcnemar_p",
    "paired_accuracy_bounds",
    "proportion_bounds",
    "regressions_since_gate",
]
