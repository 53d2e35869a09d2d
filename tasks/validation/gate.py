"""Gold-set metrics and the promotion gate, as pure functions of numbers.

The gate fails closed: too little gold evidence, a metric under its floor, a class whose
recall is under the per-class floor (or that the gold test part does not contain at all),
or a change for the worse against the champion beyond the allowed tolerance each refuse
promotion, and every violation is listed, not just the first. A check switched off in
the config (`null`) is listed too, as disabled, so a report never hides what it did not
check. Nothing here reads files, models or registries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from configs.schema import GateConfig, MonitorConfig

ECE_BINS = 15
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


# -- the gate policy, typed --------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """One number per gate metric; None switches that metric's check off."""

    accuracy: float | None
    macro_f1: float | None
    ece: float | None

    def items(self) -> list[tuple[str, float | None]]:
        return [(m, getattr(self, m)) for m in METRICS]


@dataclass(frozen=True)
class GatePolicy:
    min_gold_labels: int
    floors: Thresholds  # for ece: a ceiling
    min_class_recall: float | None
    max_regression: Thresholds  # largest change for the worse vs the champion

    @classmethod
    def from_config(cls, gate: GateConfig) -> GatePolicy:
        f, r = gate.floors, gate.max_regression
        return cls(
            gate.min_gold_labels,
            Thresholds(f.accuracy, f.macro_f1, f.ece),
            gate.min_class_recall,
            Thresholds(r.accuracy, r.macro_f1, r.ece),
        )


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float | None  # None: disabled by config
    passed: bool
    rule: str
    higher_is_better: bool = True

    @property
    def disabled(self) -> bool:
        return self.threshold is None

    @property
    def margin(self) -> float:
        """How far inside (> 0) or outside (< 0) its threshold the value is."""
        if self.threshold is None or self.value != self.value:
            return math.nan
        gap = self.value - self.threshold
        return gap if self.higher_is_better else -gap


@dataclass(frozen=True)
class GateReport:
    passed: bool
    candidate: GoldMetrics
    champion: GoldMetrics | None
    champion_version: str | None
    checks: list[Check] = field(default_factory=list)
    gold_sizes: dict[str, int] = field(default_factory=dict)  # dev/test human-labeled gold

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def disabled(self) -> list[Check]:
        return [c for c in self.checks if c.disabled]

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "rejected"

    @property
    def gold_labels_missing(self) -> int:
        """How many more gold test labels the gate needs before it will decide."""
        need = next((c.threshold for c in self.checks if c.name == "gold_labels"), 0) or 0
        return max(0, int(need) - self.candidate.n)

    def tightest(self) -> Check | None:
        """The enabled check closest to failing (or failing by the most)."""
        live = [c for c in self.checks if not c.disabled and c.margin == c.margin]
        return min(live, key=lambda c: c.margin) if live else None

    def summary(self) -> str:
        enabled = [c for c in self.checks if not c.disabled]
        off = f"; {len(self.disabled)} disabled by config" if self.disabled else ""
        if self.passed:
            return f"passed: {len(enabled)} checks{off}"
        return "rejected: " + "; ".join(f"{c.name} {c.rule}" for c in self.violations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "decision": self.decision,
            "champion_version": self.champion_version,
            "gold_sizes": self.gold_sizes,
            "checks": [{**asdict(c), "disabled": c.disabled} for c in self.checks],
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict() if self.champion else None,
        }


def _cmp(metric: str) -> str:
    return ">=" if HIGHER_IS_BETTER[metric] else "<="


def decide(
    candidate: GoldMetrics,
    champion: GoldMetrics | None,
    policy: GatePolicy,
    champion_version: str | None = None,
    gold_sizes: dict[str, int] | None = None,
    extra: Sequence[Check] = (),
) -> GateReport:
    """Apply the gate policy. Fails closed; lists every check, violated or disabled.
    `extra`: checks decided elsewhere that must pass too (e.g. drift, when it blocks)."""
    checks: list[Check] = [
        Check(
            "gold_labels",
            candidate.n,
            policy.min_gold_labels,
            candidate.n >= policy.min_gold_labels,
            f">= {policy.min_gold_labels} gold test labels (too few: no decision on thin evidence)",
        )
    ]
    values = candidate.scalars()
    for metric, floor in policy.floors.items():
        name = f"{metric}_{'floor' if HIGHER_IS_BETTER[metric] else 'ceiling'}"
        if floor is None:
            checks.append(Check(name, values[metric], None, True, "disabled by config"))
            continue
        hib = HIGHER_IS_BETTER[metric]
        ok = values[metric] >= floor if hib else values[metric] <= floor
        checks.append(Check(name, values[metric], floor, ok, f"{_cmp(metric)} {floor}", hib))
    floor = policy.min_class_recall
    for cls, recall in candidate.per_class_recall.items():
        if floor is None:
            checks.append(Check(f"recall[{cls}]", recall, None, True, "disabled by config"))
        else:
            checks.append(Check(f"recall[{cls}]", recall, floor, recall >= floor, f">= {floor}"))
    for cls in candidate.absent_classes:
        # A class the gold test part does not contain cannot be vouched for.
        checks.append(
            Check(
                f"recall[{cls}]",
                math.nan,
                floor,
                floor is None,
                "disabled by config"
                if floor is None
                else f">= {floor}: class absent from the gold test set, its recall cannot "
                "be checked (add gold labels for it)",
            )
        )
    if champion is not None:
        base = champion.scalars()
        for metric, tol in policy.max_regression.items():
            name = f"{metric}_vs_champion"
            if tol is None:
                checks.append(Check(name, values[metric], None, True, "disabled by config"))
                continue
            hib = HIGHER_IS_BETTER[metric]
            limit = base[metric] - tol if hib else base[metric] + tol
            ok = values[metric] >= limit if hib else values[metric] <= limit
            checks.append(
                Check(
                    name,
                    values[metric],
                    limit,
                    ok,
                    f"{'drop' if hib else 'rise'} <= {tol} vs champion {base[metric]:.4f}",
                    hib,
                )
            )
    checks += list(extra)
    # NaN compares false everywhere, so a NaN metric fails its check: closed by default.
    passed = all(c.passed for c in checks)
    return GateReport(passed, candidate, champion, champion_version, checks, gold_sizes or {})


# -- the monitor's comparison ------------------------------------------------------------


def regressions_since_gate(
    now: GoldMetrics, baseline: dict[str, float], monitor: MonitorConfig
) -> list[str]:
    """Each metric that got worse than at the champion's gate by more than its tolerance
    (a NaN counts as worse), as a sentence."""
    t = monitor.tolerance
    out = []
    for metric, tol in Thresholds(t.accuracy, t.macro_f1, t.ece).items():
        if tol is None or metric not in baseline:
            continue
        value = now.scalars()[metric]
        delta = value - baseline[metric]
        worse = -delta if HIGHER_IS_BETTER[metric] else delta
        if not worse <= tol:
            out.append(
                f"{metric} {baseline[metric]:.4f} -> {value:.4f} "
                f"(worse by {worse:.4f} > tolerance {tol})"
            )
    return out


@dataclass(frozen=True)
class MonitorReport:
    """What one monitor run found about the live champion, and what it did.

    action: ok | rolled_back | no_champion | no_baseline | insufficient_gold |
    champion_moved | nothing_to_roll_back. Only `ok` vouches for the champion."""

    model_name: str
    champion_version: str | None  # the version measured (before any action)
    action: str
    n_gold: int
    metrics: dict[str, float]
    baseline: dict[str, float]  # the champion's gate-time metrics
    regressions: list[str]
    rolled_back_to: str | None = None
    absent_classes: tuple[str, ...] = ()
    detail: str = ""
    label_health: str = ""  # the label-health report of the same run (Markdown)

    @property
    def healthy(self) -> bool:
        return self.action == "ok"
