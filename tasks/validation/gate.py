"""The promotion gate, decided on evidence: every metric with its confidence bounds,
every comparison with the champion paired on the same gold examples.

Each check has three outcomes. A floor *passes* when its lower bound clears it, *fails*
when its upper bound is below it, and is otherwise *undecided*; a comparison with the
champion passes when the bound on the difference shows the candidate no worse than
`gate.max_regression` allows, fails when it shows it worse, and is otherwise undecided
(a tie within noise is never a regression). The gate is `rejected` when any check
failed, `undecided` when none failed and some could not be decided (the champion stays;
the report says how many more gold test labels would most likely decide it), and
`passed` only when every check passed. Every check is listed, violated, undecided or
disabled. Nothing here reads files, models or registries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from configs.gate import GateConfig
from tasks.validation.checks import (
    Check,
    SliceResult,
    champion_check,
    class_counts_check,
    floor_check,
    slice_results,
)
from tasks.validation.evidence import (
    Bounds,
    PairedCounts,
    Predictions,
    bootstrap_metrics,
    mcnemar_p,
    paired_accuracy_bounds,
    percentile_bounds,
    proportion_bounds,
)
from tasks.validation.metrics import HIGHER_IS_BETTER, METRICS, GoldMetrics, gold_metrics

PASSED, REJECTED, UNDECIDED = "passed", "rejected", "undecided"


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
    confidence: float = 0.95
    min_labels_per_class: int = 1
    bootstrap_samples: int = 1000
    seed: int = 0
    slices: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, gate: GateConfig, seed: int = 0) -> GatePolicy:
        f, r = gate.floors, gate.max_regression
        return cls(
            gate.min_gold_labels,
            Thresholds(f.accuracy, f.macro_f1, f.ece),
            gate.min_class_recall,
            Thresholds(r.accuracy, r.macro_f1, r.ece),
            gate.confidence,
            gate.min_labels_per_class,
            gate.bootstrap_samples,
            seed,
            tuple(gate.slices),
        )


@dataclass(frozen=True)
class GateReport:
    verdict: str  # passed | rejected | undecided
    candidate: GoldMetrics
    champion: GoldMetrics | None
    champion_version: str | None
    checks: list[Check] = field(default_factory=list)
    gold_sizes: dict[str, int] = field(default_factory=dict)  # dev/test human-labeled gold
    confidence: float = 0.95
    bounds: dict[str, Bounds] = field(default_factory=dict)  # the candidate's metrics
    gain: Bounds | None = None  # accuracy(candidate) - accuracy(champion), paired
    mcnemar_p: float | None = None
    slices: list[SliceResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    @property
    def decision(self) -> str:
        return self.verdict

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if c.status == "FAIL"]

    @property
    def undecided(self) -> list[Check]:
        return [c for c in self.checks if c.status == "undecided"]

    @property
    def disabled(self) -> list[Check]:
        return [c for c in self.checks if c.disabled]

    @property
    def labels_needed(self) -> int:
        """How many more gold test labels would most likely decide every undecided check
        (0 when nothing is undecided)."""
        need = max((c.labels_needed for c in self.undecided), default=0)
        return max(0, need - self.candidate.n) if self.undecided else 0

    @property
    def significant_gain(self) -> bool:
        """The candidate is more accurate than the champion beyond noise."""
        return self.gain is not None and self.gain.low > 0

    def tightest(self) -> Check | None:
        """The enabled check closest to failing (or failing by the most)."""
        live = [c for c in self.checks if not c.disabled and c.margin == c.margin]
        return min(live, key=lambda c: c.margin) if live else None

    def summary(self) -> str:
        enabled = [c for c in self.checks if not c.disabled]
        off = f"; {len(self.disabled)} disabled by config" if self.disabled else ""
        if self.verdict == PASSED:
            return f"passed: {len(enabled)} checks{off}"
        if self.verdict == REJECTED:
            return "rejected: " + "; ".join(c.sentence() for c in self.violations)
        names = [c.name for c in self.undecided]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        return (
            f"undecided on {self.candidate.n} gold test labels: {len(names)} check(s) cannot "
            f"be decided yet ({shown}); about {self.labels_needed} more gold test labels would "
            "most likely decide"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "decision": self.decision,
            "confidence": self.confidence,
            "champion_version": self.champion_version,
            "gold_sizes": self.gold_sizes,
            "labels_needed": self.labels_needed,
            "checks": [
                {**asdict(c), "disabled": c.disabled, "status": c.status} for c in self.checks
            ],
            "bounds": {k: asdict(b) for k, b in self.bounds.items()},
            "gain": asdict(self.gain) if self.gain else None,
            "mcnemar_p": self.mcnemar_p,
            "slices": [asdict(s) for s in self.slices],
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict() if self.champion else None,
        }


@dataclass(frozen=True)
class GoldEvidence:
    """What the gate judges: the true class of each gold test example, the candidate's
    class probabilities on it, the champion's on the same examples, and the slices each
    example belongs to (slice key -> (N,) group names)."""

    classes: tuple[str, ...]
    y: np.ndarray  # (N,) class indices
    candidate: np.ndarray  # (N, K) probabilities
    champion: np.ndarray | None = None  # (N, K), the same examples in the same order
    slices: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


def decide(
    evidence: GoldEvidence,
    policy: GatePolicy,
    champion_version: str | None = None,
    gold_sizes: dict[str, int] | None = None,
    extra: Sequence[Check] = (),
) -> GateReport:
    """Apply the gate policy to the evidence (see the module). `extra`: checks decided
    elsewhere that must pass too (e.g. drift, when it blocks)."""
    scored = _score(evidence, policy)
    bounds = _candidate_bounds(scored, policy.confidence)
    checks = [
        _gold_labels_check(scored.n, policy.min_gold_labels),
        class_counts_check(
            scored.y, evidence.classes, policy.min_labels_per_class, policy.confidence
        ),
        *_floor_checks(bounds, policy, scored.n),
        *_class_recall_checks(scored, evidence.classes, policy),
    ]
    comparison = _compare_with_champion(scored, policy)
    slices, slice_checks = slice_results(
        evidence.slices,
        policy.slices,
        scored.cand_ok,
        scored.champ_ok,
        policy.confidence,
        policy.max_regression.accuracy,
    )
    checks += [*comparison.checks, *slice_checks, *extra]
    return GateReport(
        _verdict(checks), scored.candidate, scored.champion, champion_version, checks,
        gold_sizes or {}, policy.confidence, bounds, comparison.gain, comparison.mcnemar_p,
        slices,
    )  # fmt: skip


@dataclass(frozen=True)
class _Scored:
    """Both models' predictions on gold test, scored: the metrics, which examples each
    got right, and the bootstrap replicates (one dict per model, paired)."""

    y: np.ndarray  # (N,) int64
    candidate: GoldMetrics
    champion: GoldMetrics | None
    cand_ok: np.ndarray  # (N,) bool
    champ_ok: np.ndarray | None  # (N,) bool
    boot: list[dict[str, np.ndarray]]

    @property
    def n(self) -> int:
        return len(self.y)


def _score(evidence: GoldEvidence, policy: GatePolicy) -> _Scored:
    ev, classes = evidence, evidence.classes
    y = np.asarray(ev.y, dtype=np.int64)
    cand = gold_metrics(ev.candidate, y, classes)
    champ = gold_metrics(ev.champion, y, classes) if ev.champion is not None else None
    models = [Predictions.of(ev.candidate)] + (
        [Predictions.of(ev.champion)] if ev.champion is not None else []
    )
    boot = bootstrap_metrics(
        y, models, len(classes), samples=policy.bootstrap_samples, seed=policy.seed
    )
    champ_ok = models[1].pred == y if champ is not None else None
    return _Scored(y, cand, champ, models[0].pred == y, champ_ok, boot)


def _candidate_bounds(scored: _Scored, conf: float) -> dict[str, Bounds]:
    """The candidate's gate metrics with their bounds: exact for accuracy, bootstrap for
    the rest."""
    cand, boot = scored.candidate, scored.boot[0]
    return {
        "accuracy": proportion_bounds(int(scored.cand_ok.sum()), scored.n, conf),
        "macro_f1": percentile_bounds(cand.macro_f1, boot["macro_f1"], conf),
        "ece": percentile_bounds(cand.ece, boot["ece"], conf),
        "worst_class_recall": percentile_bounds(
            cand.worst_class_recall, boot["worst_class_recall"], conf
        ),
    }


def _gold_labels_check(n: int, minimum: int) -> Check:
    """Enough gold test labels to judge at all (too few: undecided, never failed)."""
    return Check(
        "gold_labels",
        float(n),
        float(minimum),
        n >= minimum,
        f"{'needs ' if n < minimum else ''}>= {minimum} gold test labels",
        undecided=n < minimum,
        labels_needed=minimum,
    )


def _floor_checks(bounds: dict[str, Bounds], policy: GatePolicy, n: int) -> list[Check]:
    """Each metric's floor (for ECE: ceiling) on the candidate's bounds."""
    checks = []
    for metric, floor in policy.floors.items():
        hib = HIGHER_IS_BETTER[metric]
        name = f"{metric}_{'floor' if hib else 'ceiling'}"
        if floor is None:
            checks.append(Check(name, bounds[metric].value, None, True, "disabled by config"))
        else:
            checks.append(floor_check(name, bounds[metric], floor, hib, n))
    return checks


def _class_recall_checks(
    scored: _Scored, classes: tuple[str, ...], policy: GatePolicy
) -> list[Check]:
    """Each class's recall against `min_class_recall`, on the class's own labels; a class
    gold test lacks cannot be vouched for: undecided."""
    k, n, y, conf = len(classes), scored.n, scored.y, policy.confidence
    counts = np.bincount(y, minlength=k)
    hits = np.bincount(y[scored.cand_ok], minlength=k)
    floor = policy.min_class_recall
    checks = []
    for i, cls in enumerate(classes):
        name = f"recall[{cls}]"
        if floor is None:
            value = hits[i] / counts[i] if counts[i] else math.nan
            checks.append(Check(name, value, None, True, "disabled by config"))
        elif counts[i] == 0:  # a class gold test lacks cannot be vouched for: not yet
            checks.append(
                Check(
                    name,
                    math.nan,
                    floor,
                    False,
                    f"needs lower bound >= {floor}: class absent from the gold test set",
                    undecided=True,
                    labels_needed=n + max(policy.min_labels_per_class, 1) * k,
                )
            )
        else:
            b = proportion_bounds(int(hits[i]), int(counts[i]), conf)
            checks.append(floor_check(name, b, floor, True, n, per=int(counts[i])))
    return checks


@dataclass(frozen=True)
class _Comparison:
    """The candidate against the champion on the same examples (empty without one)."""

    checks: list[Check] = field(default_factory=list)
    gain: Bounds | None = None  # accuracy(candidate) - accuracy(champion), paired
    mcnemar_p: float | None = None


def _compare_with_champion(scored: _Scored, policy: GatePolicy) -> _Comparison:
    """Each metric's paired difference with the champion against its allowed regression."""
    cand, champ, conf = scored.candidate, scored.champion, policy.confidence
    if champ is None or scored.champ_ok is None:
        return _Comparison()
    paired = PairedCounts.of(scored.cand_ok, scored.champ_ok)
    gain = paired_accuracy_bounds(paired, conf)
    diffs = {
        "accuracy": gain,
        **{
            m: percentile_bounds(
                cand.scalars()[m] - champ.scalars()[m],
                scored.boot[0][m] - scored.boot[1][m],
                conf,
            )
            for m in ("macro_f1", "ece")
        },
    }
    checks = []
    for metric, tol in policy.max_regression.items():
        if tol is None:
            name = f"{metric}_vs_champion"
            checks.append(Check(name, diffs[metric].value, None, True, "disabled by config"))
        else:
            checks.append(champion_check(metric, diffs[metric], tol, scored.n))
    return _Comparison(checks, gain, mcnemar_p(paired.gained, paired.lost))


def _verdict(checks: list[Check]) -> str:
    # A NaN value (no evidence) is undecided, never passed: the gate stays closed.
    if any(c.status == "FAIL" for c in checks):
        return REJECTED
    if any(c.status == "undecided" for c in checks):
        return UNDECIDED
    return PASSED
