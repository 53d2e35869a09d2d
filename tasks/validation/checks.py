"""The gate's checks, each decided on bounds: a floor or ceiling, a comparison with the
champion, the per-class label minimum, and the per-slice comparison. Each returns a
`Check` whose status is pass, FAIL or undecided, with the bounds it was decided on and,
when undecided, how many gold test labels would most likely decide it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm

from tasks.validation.evidence import (
    Bounds,
    PairedCounts,
    labels_to_decide,
    paired_accuracy_bounds,
    proportion_bounds,
)
from tasks.validation.metrics import HIGHER_IS_BETTER


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float | None  # None: disabled by config
    passed: bool
    rule: str
    higher_is_better: bool = True
    low: float = math.nan  # the value's one-sided confidence bounds (NaN: a count or a flag)
    high: float = math.nan
    undecided: bool = False  # the evidence is too thin either way
    labels_needed: int = 0  # undecided: gold test labels in all that would most likely decide

    @property
    def disabled(self) -> bool:
        return self.threshold is None

    @property
    def status(self) -> str:
        if self.disabled:
            return "disabled"
        if self.undecided:
            return "undecided"
        return "pass" if self.passed else "FAIL"

    @property
    def margin(self) -> float:
        """How far inside (> 0) or outside (< 0) its threshold the value is."""
        if self.threshold is None or self.value != self.value:
            return math.nan
        gap = self.value - self.threshold
        return gap if self.higher_is_better else -gap

    def shown(self) -> str:
        """`value [low, high]`, or the bare value for a count or a flag."""
        if self.value != self.value:
            return "—"
        if self.low != self.low:
            return f"{self.value:.0f}" if float(self.value).is_integer() else f"{self.value:.4f}"
        signed = "+" if self.name.endswith("_vs_champion") or self.name.startswith("slice") else ""
        return f"{self.value:{signed}.4f} [{self.low:{signed}.4f}, {self.high:{signed}.4f}]"

    def sentence(self) -> str:
        """The check in one line: name, value with bounds, the rule and the outcome."""
        return f"{self.name} {self.shown()} {self.rule}: {self.status}"


@dataclass(frozen=True)
class SliceResult:
    """One slice of gold test (e.g. source=camera-2): its accuracy with bounds, and the
    paired difference with the champion on the slice's examples."""

    key: str
    group: str
    n: int
    accuracy: Bounds
    vs_champion: Bounds | None
    blocked: bool


def floor_check(
    name: str, bounds: Bounds, floor: float, higher_is_better: bool, n: int, per: int | None = None
) -> Check:
    """A floor (a ceiling when lower is better) judged on the value's bounds. `per`: the
    labels behind this value when it is a part of the `n` gold labels (one class)."""
    worst, best = (bounds.low, bounds.high) if higher_is_better else (bounds.high, bounds.low)
    ok = worst >= floor if higher_is_better else worst <= floor
    bad = best < floor if higher_is_better else best > floor
    if bounds.value != bounds.value:
        ok, bad = False, False
    # The rule says what decided it: the bound that cleared the floor, the one that missed
    # it, or that the floor lies between the two.
    good, poor = (">=", "<") if higher_is_better else ("<=", ">")
    near, far = ("lower", "upper") if higher_is_better else ("upper", "lower")
    if ok:
        rule = f"{near} bound {good} {floor}"
    elif bad:
        rule = f"{far} bound {poor} {floor}"
    else:
        rule = f"needs {near} bound {good} {floor}"
    need = 0
    if not ok and not bad:
        own = per if per is not None else n
        need = labels_to_decide(own, bounds, floor)
        need = math.ceil(need * n / own) if per else need
    return Check(
        name, bounds.value, floor, ok, rule, higher_is_better, bounds.low, bounds.high,
        not ok and not bad, need,
    )  # fmt: skip


def champion_check(metric: str, diff: Bounds, tol: float, n: int) -> Check:
    """The paired difference candidate - champion against the allowed regression."""
    hib = HIGHER_IS_BETTER[metric]
    limit = -tol if hib else tol
    check = floor_check(f"{metric}_vs_champion", diff, limit, hib, n)
    what = "drop" if hib else "rise"
    return _with_rule(check, f"{what} <= {tol} vs champion: {check.rule}")


def _with_rule(check: Check, rule: str) -> Check:
    return Check(**{**asdict(check), "rule": rule})


def _more_for_class(have: int, minimum: int, share: float, confidence: float) -> int:
    """Gold test labels to add so a class with `share` of them most likely (at
    `confidence`) reaches `minimum`: the smallest x with
    have + share x - z sqrt(share (1 - share) x) >= minimum."""
    z = float(norm.ppf(confidence))
    gap = minimum - have
    if gap <= 0:
        return 0
    spread = z * math.sqrt(share * (1 - share))
    root = (spread + math.sqrt(spread**2 + 4 * share * gap)) / (2 * share)
    return math.ceil(root**2)


def class_counts_check(
    y: np.ndarray, classes: tuple[str, ...], minimum: int, confidence: float
) -> Check:
    counts = np.bincount(y, minlength=len(classes))
    short = [c for c, m in zip(classes, counts, strict=True) if m < minimum]
    n = len(y)
    need = 0
    if short:
        # a class's share of gold test: as observed, but never under a uniform share
        shares = [max(m / n if n else 0.0, 1.0 / len(classes)) for m in counts]
        need = n + max(
            _more_for_class(int(m), minimum, s, confidence)
            for m, s in zip(counts, shares, strict=True)
            if m < minimum
        )
    names = ", ".join(short[:10]) + (f" and {len(short) - 10} more" if len(short) > 10 else "")
    return Check(
        "labels_per_class",
        float(counts.min()) if len(counts) else 0.0,
        float(minimum),
        not short,
        (f"needs >= {minimum} gold test labels of every class (too few: {names})")
        if short
        else f">= {minimum} gold test labels of every class",
        undecided=bool(short),
        labels_needed=need,
    )


def slice_results(
    slices: Mapping[str, np.ndarray],
    keys: Sequence[str],
    cand_ok: np.ndarray,
    champ_ok: np.ndarray | None,
    confidence: float,
    tol: float | None,
) -> tuple[list[SliceResult], list[Check]]:
    """Each slice's accuracy with its bounds and, against a champion, the paired
    difference on the slice's examples: a check that fails when the candidate is
    significantly worse there than `tol` allows (never undecided: a slice only blocks)."""
    results: list[SliceResult] = []
    checks: list[Check] = []
    for key in keys:
        groups = slices.get(key)
        if groups is None or len(np.unique(groups)) < 2:
            continue  # one group is the whole gold set, judged above
        for group in sorted(np.unique(groups).tolist()):
            sel = groups == group
            n = int(sel.sum())
            acc = proportion_bounds(int(cand_ok[sel].sum()), n, confidence)
            diff = None
            blocked = False
            if champ_ok is not None:
                diff = paired_accuracy_bounds(
                    PairedCounts.of(cand_ok[sel], champ_ok[sel]), confidence
                )
                if tol is not None:
                    blocked = diff.high < -tol
                    checks.append(
                        Check(
                            f"slice[{key}={group}]_accuracy_vs_champion",
                            diff.value,
                            -tol,
                            not blocked,
                            f"not significantly worse than the champion by more than {tol} "
                            f"({n} labels; upper bound >= {-tol})",
                            True,
                            diff.low,
                            diff.high,
                        )
                    )
            results.append(SliceResult(key, str(group), n, acc, diff, blocked))
    return results, checks
