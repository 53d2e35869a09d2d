"""Validation on gold: the gold set, its metrics and their evidence, the promotion gate,
the monitor's comparison, what to do next, and the reports people read.

- `gold`: the gold holdout's latest human labels, images and slices, with a snapshot.
- `metrics`, `evidence`: gold metrics, and confidence bounds on them and on differences.
- `checks`, `gate`: the gate's checks and its verdict (passed, rejected, undecided).
- `monitor`: the live champion now against the champion at its gate.
- `next_step`: the labels or commands that would decide an undecided gate.
- `reports`: the gate, monitor and decision in Markdown, and their images.

Imported from here: the gate, its metrics and evidence, and the monitor's comparison
(numpy and scipy only). `gold` (the store, images, torch), `next_step` and `reports`
(matplotlib, on use) are imported by their module path.
"""

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
