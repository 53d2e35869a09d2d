"""Gold-set metrics of one model's predicted probabilities: accuracy, macro-F1, per-class
recall and precision, the confusion matrix and calibration (ECE)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tasks.validation.evidence import ECE_BINS

METRICS = ("accuracy", "macro_f1", "ece")
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "ece": False}


@dataclass(frozen=True)
class GoldMetrics:
    n: int
    accuracy: float
    macro_f1: float
    ece: float
    per_class_recall: dict[str, float]  # classes present in the gold set only
    per_class_precision: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    absent_classes: tuple[str, ...] = ()  # taxonomy classes with no gold example

    def scalars(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "ece": self.ece}

    @property
    def worst_class_recall(self) -> float:
        return min(self.per_class_recall.values()) if self.per_class_recall else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gold_metrics(probs: np.ndarray, y: np.ndarray, classes: tuple[str, ...]) -> GoldMetrics:
    """Metrics of predicted probabilities (N, K) against true class indices (N,)."""
    k = len(classes)
    pred = probs.argmax(1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(1).astype(float)
    predicted = confusion.sum(0).astype(float)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0
    )
    present = support > 0
    return GoldMetrics(
        n=int(len(y)),
        accuracy=float((pred == y).mean()) if len(y) else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        ece=expected_calibration_error(probs, y),
        per_class_recall={c: float(recall[i]) for i, c in enumerate(classes) if present[i]},
        per_class_precision={c: float(precision[i]) for i, c in enumerate(classes)},
        confusion=confusion.tolist(),
        absent_classes=tuple(c for i, c in enumerate(classes) if not present[i]),
    )


def calibration_bins(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: its range, count, mean confidence and accuracy (for the ECE
    and the reliability diagram)."""
    conf = probs.max(1) if len(y) else np.zeros(0)
    correct = probs.argmax(1) == y if len(y) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": n,
                "confidence": float(conf[sel].mean()) if n else math.nan,
                "accuracy": float(correct[sel].mean()) if n else math.nan,
            }
        )
    return out


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over confidence bins of |accuracy - confidence| weighted by the bin's share."""
    if len(y) == 0:
        return 0.0
    return float(
        sum(
            b["count"] / len(y) * abs(b["accuracy"] - b["confidence"])
            for b in calibration_bins(probs, y, bins)
            if b["count"]
        )
    )
