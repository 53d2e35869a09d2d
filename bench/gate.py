"""Gate: how often the evidence gate (issue 24) promotes a model it should not, rejects one
it should promote, or takes no decision, next to the rule it replaces ("fixed-200":
refuse below 200 gold test labels, else pass iff the point accuracy clears the floor and
the point difference with the champion clears -max_regression).

    .venv/bin/python -m bench.gate               # 2000 draws a cell, writes bench/RESULTS.md
    .venv/bin/python -m bench.gate --quick       # a smoke run: 200 draws, no RESULTS.md

Every evidence-gate decision is made by the real `tasks.validation.decide`. Where only
accuracy checks are on (scenarios A and B) its verdict depends on the counts alone, so it
is memoized on them: the evidence is built from the drawn counts (2 classes alternating,
probability 0.9 on the predicted class) and every call that fills the memo asserts that
the evidence and the report carry exactly the drawn counts.

- A. Floor 0.90, no champion: the candidate gets k ~ Binomial(n, true accuracy) right.
  Memo key (n, k). Wrong promotion: promoted while the true accuracy is under the floor.
- B. Regression vs a champion of true accuracy 0.95, max_regression 0.01, floors off:
  paired outcomes from a 4-cell multinomial with P(gained) - P(lost) = the true difference
  and P(gained) + P(lost) = 0.03 (or 0.08) + |difference|. Memo key (n, gained, lost):
  with the floors off the gate reads only the discordant pairs (spot-checked below by
  re-deciding with another split of the concordant pairs). Wrong promotion: promoted
  while the true difference is under -0.01.
- C. The 1,000-image dataset with its whole gold pool labeled: 110 gold test labels over
  10 (and 5) classes, full per-example evidence, the default policy from
  configs/default.yaml, not memoized.

Draws are seeded per cell (`numpy.random.default_rng((seed, scenario, cell...))`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import scipy
from scipy.stats import binom

from bench.common import RESULTS_MD, load_now, machine_line, update_results, verdict
from configs.schema import load_config
from tasks.validation import (
    PASSED,
    REJECTED,
    UNDECIDED,
    GatePolicy,
    GoldEvidence,
    PairedCounts,
    Thresholds,
    decide,
)

SECTION = "## Gate: evidence vs the fixed-200 rule (bench/gate.py)"
NOTES = "### Notes"

CONFIDENCE = 0.95
TARGET_WRONG_PROMOTION = 1 - CONFIDENCE  # at every size, for every true value under the bar
FIXED_MIN_LABELS = 200
SIZES = (50, 100, 200, 500, 1000, 2000, 5000)

FLOOR = 0.90
TRUE_ACCURACY = (0.85, 0.87, 0.88, 0.89, 0.899, 0.90, 0.91, 0.92, 0.93, 0.95, 0.97)

CHAMPION_ACCURACY = 0.95
MAX_REGRESSION = 0.01
TRUE_DIFFERENCE = (-0.03, -0.02, -0.015, -0.011, -0.01, -0.005, 0.0, 0.01, 0.02)
DISAGREEMENT_BASE = (0.03, 0.08)  # P(gained) + P(lost) = base + |difference|

SMALL_GOLD = 110  # the 1,000-image dataset's gold test part, whole gold pool labeled
SMALL_CELLS = ((10, 0.99), (10, 0.95), (10, 0.90), (5, 0.99), (5, 0.95), (5, 0.90))
TARGET_SMALL_PROMOTION = 0.90  # "a 0.99 candidate gets promoted": in at least 90% of draws

GATES = ("evidence", "fixed-200")


# -- the gates on counts ---------------------------------------------------------------------


def _probs(y: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(N, 2) probabilities: 0.9 on the true class where `correct`, on the other one elsewhere."""
    pred = np.where(correct, y, 1 - y)
    p = np.full((len(y), 2), 0.1)
    p[np.arange(len(y)), pred] = 0.9
    return p


def floor_evidence(n: int, k: int) -> GoldEvidence:
    """n gold examples of 2 alternating classes; the candidate is right on the first k."""
    y = np.arange(n) % 2
    return GoldEvidence(("a", "b"), y, _probs(y, np.arange(n) < k))


def paired_evidence(n: int, both: int, gained: int, lost: int) -> GoldEvidence:
    """Blocks [both right | gained | lost | both wrong] over 2 alternating classes."""
    y = np.arange(n) % 2
    i = np.arange(n)
    cand = i < both + gained
    champ = (i < both) | ((i >= both + gained) & (i < both + gained + lost))
    return GoldEvidence(("a", "b"), y, _probs(y, cand), _probs(y, champ))


def _only(accuracy_floor: float | None, accuracy_regression: float | None) -> GatePolicy:
    """A policy with every check but the accuracy floor / regression switched off."""
    return GatePolicy(
        min_gold_labels=1,
        floors=Thresholds(accuracy_floor, None, None),
        min_class_recall=None,
        max_regression=Thresholds(accuracy_regression, None, None),
        confidence=CONFIDENCE,
        min_labels_per_class=1,
        bootstrap_samples=0,  # only macro-F1/ECE/worst-recall use it, all off here
        seed=0,
        slices=(),
    )


class CountGate:
    """`decide` memoized on the counts its verdict depends on when only accuracy is checked."""

    def __init__(self) -> None:
        self.floor_policy = _only(FLOOR, None)
        self.paired_policy = _only(None, MAX_REGRESSION)
        self.floor_memo: dict[tuple[int, int], str] = {}
        self.paired_memo: dict[tuple[int, int, int], str] = {}
        self.paired_both: dict[tuple[int, int, int], int] = {}  # the split first used
        self.paired_limit: dict[tuple[int, int], int] = {}  # (n, gained) -> most losses passed
        self.seconds = 0.0

    def floor(self, n: int, k: int) -> str:
        key = (n, k)
        if key not in self.floor_memo:
            t = time.perf_counter()
            ev = floor_evidence(n, k)
            assert len(ev) == n and int((ev.candidate.argmax(1) == ev.y).sum()) == k
            report = decide(ev, self.floor_policy)
            assert report.candidate.n == n and round(report.candidate.accuracy * n) == k
            assert report.bounds["accuracy"].value == k / n
            self.floor_memo[key] = report.verdict
            self.seconds += time.perf_counter() - t
        return self.floor_memo[key]

    def paired(self, n: int, both: int, gained: int, lost: int) -> str:
        key = (n, gained, lost)
        if key not in self.paired_memo:
            t = time.perf_counter()
            self.paired_memo[key] = self._paired_decide(n, both, gained, lost)
            self.paired_both[key] = both
            self.seconds += time.perf_counter() - t
        return self.paired_memo[key]

    def _paired_decide(self, n: int, both: int, gained: int, lost: int) -> str:
        ev = paired_evidence(n, both, gained, lost)
        assert ev.champion is not None
        counts = PairedCounts.of(ev.candidate.argmax(1) == ev.y, ev.champion.argmax(1) == ev.y)
        assert counts == PairedCounts(n, gained, lost), (counts, n, gained, lost)
        assert int((ev.champion.argmax(1) == ev.y).sum()) == both + lost
        report = decide(ev, self.paired_policy)
        assert report.gain is not None and report.gain.value == (gained - lost) / n
        assert report.candidate.n == n
        return report.verdict

    def spot_check_paired(self, keys: int, rng: np.random.Generator) -> int:
        """Re-decide some memoized (n, gained, lost) with another split of the concordant
        pairs: the verdict must not change (the memo key is complete). Returns the number
        checked."""
        items = sorted(self.paired_memo)
        picks = rng.choice(len(items), size=min(keys, len(items)), replace=False)
        for j in picks:
            n, g, lo = items[int(j)]
            both = self.paired_both[(n, g, lo)]
            other = (both + (n - g - lo) // 2 + 1) % (n - g - lo + 1)  # another both-right count
            assert self._paired_decide(n, other, g, lo) == self.paired_memo[(n, g, lo)], (n, g, lo)
        return len(picks)


def fixed200_floor(n: int, k: int) -> str:
    if n < FIXED_MIN_LABELS:
        return UNDECIDED
    return PASSED if 10 * k >= 9 * n else REJECTED  # k / n >= 0.90, in integers


def fixed200_paired(n: int, gained: int, lost: int) -> str:
    if n < FIXED_MIN_LABELS:
        return UNDECIDED
    return PASSED if 100 * (gained - lost) >= -n else REJECTED  # diff >= -0.01, in integers


# -- tallies ---------------------------------------------------------------------------------


@dataclass
class Tally:
    passed: int = 0
    rejected: int = 0
    undecided: int = 0

    def add(self, v: str) -> None:
        setattr(self, v, getattr(self, v) + 1)

    def __iadd__(self, other: Tally) -> Tally:
        self.passed += other.passed
        self.rejected += other.rejected
        self.undecided += other.undecided
        return self

    @property
    def n(self) -> int:
        return self.passed + self.rejected + self.undecided

    @property
    def p_pass(self) -> float:
        return self.passed / self.n if self.n else math.nan

    @property
    def p_reject(self) -> float:
        return self.rejected / self.n if self.n else math.nan

    @property
    def p_decided(self) -> float:
        return (self.passed + self.rejected) / self.n if self.n else math.nan


def pct(x: float, digits: int = 1) -> str:
    return "—" if x != x else f"{100 * x:.{digits}f}%"


def se_pct(p: float, n: int) -> str:
    """Monte Carlo standard error of a rate, in points."""
    return f"±{100 * math.sqrt(max(p * (1 - p), 0.25 / n) / n):.1f}"


# -- A: the floor ----------------------------------------------------------------------------

Cells = dict[tuple[float, int], dict[str, Tally]]


def scenario_a(gate: CountGate, draws: int, seed: int) -> Cells:
    cells: Cells = {}
    for i, p in enumerate(TRUE_ACCURACY):
        for j, n in enumerate(SIZES):
            ks = np.random.default_rng((seed, 1, i, j)).binomial(n, p, size=draws)
            t = {g: Tally() for g in GATES}
            for k, count in zip(*np.unique(ks, return_counts=True), strict=True):
                for g, v in (
                    ("evidence", gate.floor(n, int(k))),
                    ("fixed-200", fixed200_floor(n, int(k))),
                ):
                    setattr(t[g], v, getattr(t[g], v) + int(count))
            cells[(p, n)] = t
    return cells


def exact_floor_thresholds(gate: CountGate, n: int) -> tuple[int, int]:
    """(smallest k the evidence gate passes, largest k it rejects), by bisection through
    `decide` (its verdict is monotone in k; checked against every memoized k of this n)."""

    def first(pred) -> int:  # smallest k in [0, n + 1] with pred(k), pred monotone
        lo, hi = 0, n + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if pred(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    k_pass = first(lambda k: k <= n and gate.floor(n, k) == PASSED)
    k_fail = first(lambda k: k > n or gate.floor(n, k) != REJECTED) - 1
    for (m, k), v in gate.floor_memo.items():
        if m == n:
            want = PASSED if k >= k_pass else REJECTED if k <= k_fail else UNDECIDED
            assert v == want, (n, k, v, k_pass, k_fail)
    return k_pass, k_fail


def report_a(
    cells: Cells, gate: CountGate, draws: int
) -> tuple[list[str], dict[int, float], dict[tuple[float, int], float]]:
    """The tables, the exact worst wrong-promotion rate per size, and the exact rate of
    every (true accuracy under the floor, size)."""
    below = [p for p in TRUE_ACCURACY if p < FLOOR]
    above = [p for p in TRUE_ACCURACY if p >= FLOOR]
    lines = [
        f"### A. Accuracy floor {FLOOR}, no champion ({draws} draws a cell)",
        "",
        "Per gold test size, pooled over the true accuracies: wrong promotions over the "
        f"{len(below)} true values under the floor ({', '.join(map(str, below))}), wrong "
        f"rejections over the {len(above)} at or above it, decisions taken (passed or "
        "rejected) over all 11. Worst: the highest wrong-promotion rate over the true values "
        "under the floor, simulated, and exact (the binomial tail at the smallest k "
        "`decide` passes, found by bisection).",
        "",
        "| gold test | evidence: wrong prom. | wrong rej. | decided | worst wrong prom. (at) "
        "| worst, exact | fixed-200: wrong prom. | wrong rej. | decided | worst wrong prom. (at) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst_exact: dict[int, float] = {}
    exact_all: dict[tuple[float, int], float] = {}
    for n in SIZES:
        row = [f"{n:,}"]
        for g in GATES:
            bad, miss, allv = Tally(), Tally(), Tally()
            for p in TRUE_ACCURACY:
                t = cells[(p, n)][g]
                allv += t
                if p < FLOOR:
                    bad += t
                else:
                    miss += t
            worst_p = max(below, key=lambda p: cells[(p, n)][g].p_pass)
            worst = cells[(worst_p, n)][g].p_pass
            row += [
                pct(bad.p_pass),
                pct(miss.p_reject),
                pct(allv.p_decided),
                f"{pct(worst)} {se_pct(worst, draws)} ({worst_p})",
            ]
            if g == "evidence":
                k_pass, _ = exact_floor_thresholds(gate, n)
                exact = {p: float(binom.sf(k_pass - 1, n, p)) for p in below}
                exact_all.update({(p, n): v for p, v in exact.items()})
                q = max(exact, key=exact.__getitem__)
                worst_exact[n] = exact[q]
                row.append(f"{pct(exact[q], 2)} ({q}; passes k >= {k_pass})")
        lines.append("| " + " | ".join(row) + " |")
    for g in GATES:
        lines += [
            "",
            f"{g}: promoted / rejected, % of draws (the rest undecided), per true accuracy "
            "(rows) and gold test size (columns)",
            "",
            "| true acc | " + " | ".join(f"{n:,}" for n in SIZES) + " |",
            "|---:|" + "---:|" * len(SIZES),
        ]
        for p in TRUE_ACCURACY:
            cols = [
                f"{100 * cells[(p, n)][g].p_pass:.1f} / {100 * cells[(p, n)][g].p_reject:.1f}"
                for n in SIZES
            ]
            mark = " (under)" if p < FLOOR else ""
            lines.append(f"| {p}{mark} | " + " | ".join(cols) + " |")
    return lines, worst_exact, exact_all


# -- B: the regression check -----------------------------------------------------------------


def cell_probs(diff: float, base: float) -> tuple[float, float, float, float] | None:
    """(both right, gained, lost, both wrong) probabilities, or None when the champion's
    accuracy leaves no room for them."""
    s = base + abs(diff)
    gained, lost = (s + diff) / 2, (s - diff) / 2
    both = CHAMPION_ACCURACY - lost
    neither = 1 - both - gained - lost
    if min(both, gained, lost, neither) < -1e-12:
        return None
    return both, gained, lost, max(neither, 0.0)


BCells = dict[tuple[float, float, int], dict[str, Tally] | None]


def scenario_b(gate: CountGate, draws: int, seed: int) -> BCells:
    cells: BCells = {}
    for b, base in enumerate(DISAGREEMENT_BASE):
        for i, d in enumerate(TRUE_DIFFERENCE):
            probs = cell_probs(d, base)
            for j, n in enumerate(SIZES):
                if probs is None:
                    cells[(base, d, n)] = None
                    continue
                rng = np.random.default_rng((seed, 2, b, i, j))
                draws_ = rng.multinomial(n, np.asarray(probs) / sum(probs), size=draws)
                t = {g: Tally() for g in GATES}
                keys, first, counts = np.unique(
                    draws_[:, 1:3], axis=0, return_index=True, return_counts=True
                )
                for (g_, l_), f, c in zip(keys, first, counts, strict=True):
                    ev = gate.paired(n, int(draws_[f, 0]), int(g_), int(l_))
                    fx = fixed200_paired(n, int(g_), int(l_))
                    setattr(t["evidence"], ev, getattr(t["evidence"], ev) + int(c))
                    setattr(t["fixed-200"], fx, getattr(t["fixed-200"], fx) + int(c))
                cells[(base, d, n)] = t
    return cells


def exact_paired_promotion(
    gate: CountGate, n: int, probs: tuple[float, float, float, float]
) -> float:
    """P(the evidence gate passes) without Monte Carlo error: for each gained count g, the
    largest lost count `decide` still passes (bisection; the lower bound falls as losses
    grow, checked against every memoized key of this n), then the trinomial sum
    P(G = g) * P(L <= l*(g) | G = g)."""
    _, p10, p01, _ = probs
    lo_g, hi_g = int(binom.ppf(1e-10, n, p10)), int(binom.isf(1e-10, n, p10))
    total = 0.0
    for g in range(lo_g, hi_g + 1):
        lo, hi = 0, n - g + 1  # first l that does not pass, in [0, n - g + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if mid <= n - g and gate.paired(n, n - g - mid, g, mid) == PASSED:
                lo = mid + 1
            else:
                hi = mid
        l_star = lo - 1  # -1: no l passes
        gate.paired_limit[(n, g)] = l_star
        if l_star >= 0:
            total += float(binom.pmf(g, n, p10)) * float(binom.cdf(l_star, n - g, p01 / (1 - p10)))
    for (m, g, lost), v in gate.paired_memo.items():
        if m == n and (n, g) in gate.paired_limit:
            assert (v == PASSED) == (lost <= gate.paired_limit[(n, g)]), (n, g, lost, v)
    return total


def report_b(
    cells: BCells, gate: CountGate, draws: int
) -> tuple[list[str], dict[tuple[float, int], tuple[float, float]], dict[tuple, float]]:
    """The tables, the exact worst wrong-promotion rate (and where) per (base, size), and
    the exact rate of every (base, true difference under -0.01, size)."""
    bad_d = [d for d in TRUE_DIFFERENCE if d < -MAX_REGRESSION - 1e-12]
    lines = [
        f"### B. Regression vs the champion (true accuracy {CHAMPION_ACCURACY}), "
        f"max_regression {MAX_REGRESSION}, floors off ({draws} draws a cell)",
        "",
        "Wrong promotions pooled over the true differences under -0.01 "
        f"({', '.join(f'{d:+}' for d in bad_d)}), wrong rejections over those at or above "
        "it, decisions over all; worst: the highest wrong-promotion rate over the true "
        "differences under -0.01, simulated and exact (the trinomial sum over the losses "
        "`decide` still passes for each gained count, found by bisection). "
        "P(gained) + P(lost) = base + |difference|.",
        "",
        "| base | gold test | evidence: wrong prom. | wrong rej. | decided "
        "| worst wrong prom. (at) | worst, exact | fixed-200: wrong prom. | wrong rej. | decided "
        "| worst wrong prom. (at) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst_ev: dict[tuple[float, int], tuple[float, float]] = {}
    exact_all: dict[tuple, float] = {}
    for base in DISAGREEMENT_BASE:
        for n in SIZES:
            row = [f"{base}", f"{n:,}"]
            for g in GATES:
                bad, miss, allv = Tally(), Tally(), Tally()
                rates = {}
                for d in TRUE_DIFFERENCE:
                    c = cells[(base, d, n)]
                    if c is None:
                        continue
                    t = c[g]
                    allv += t
                    if d in bad_d:
                        bad += t
                        rates[d] = t.p_pass
                    else:
                        miss += t
                wd = max(rates, key=rates.__getitem__)
                row += [
                    pct(bad.p_pass),
                    pct(miss.p_reject),
                    pct(allv.p_decided),
                    f"{pct(rates[wd])} {se_pct(rates[wd], draws)} ({wd:+})",
                ]
                if g == "evidence":
                    exact = {d: exact_paired_promotion(gate, n, cell_probs(d, base)) for d in rates}  # type: ignore[arg-type]
                    exact_all.update({(base, d, n): v for d, v in exact.items()})
                    q = max(exact, key=exact.__getitem__)
                    worst_ev[(base, n)] = (exact[q], q)
                    row.append(f"{pct(exact[q], 2)} ({q:+})")
            lines.append("| " + " | ".join(row) + " |")
    for base in DISAGREEMENT_BASE:
        for g in GATES:
            lines += [
                "",
                f"{g}, base {base}: promoted / rejected, % of draws (the rest undecided), per "
                "true difference (rows) and gold test size (columns)",
                "",
                "| true diff | P(gained), P(lost) | " + " | ".join(f"{n:,}" for n in SIZES) + " |",
                "|---:|---:|" + "---:|" * len(SIZES),
            ]
            for d in TRUE_DIFFERENCE:
                probs = cell_probs(d, base)
                mark = " (worse)" if d in bad_d else ""
                if probs is None:
                    s = base + abs(d)
                    why = f"infeasible: P(gained) {(s + d) / 2:.3f} > 1 - {CHAMPION_ACCURACY}"
                    lines.append(
                        f"| {d:+}{mark} | {why} | " + " | ".join("—" for _ in SIZES) + " |"
                    )
                    continue
                cols = []
                for n in SIZES:
                    t = cells[(base, d, n)][g]  # type: ignore[index]
                    cols.append(f"{100 * t.p_pass:.1f} / {100 * t.p_reject:.1f}")
                pg = f"{probs[1]:.4f}, {probs[2]:.4f}"
                lines.append(f"| {d:+}{mark} | {pg} | " + " | ".join(cols) + " |")
    return lines, worst_ev, exact_all


# -- C: the small dataset, the default policy, full evidence ---------------------------------


@dataclass
class SmallCell:
    classes: int
    accuracy: float
    tally: Tally
    undecided_by: Counter  # check name -> draws it was undecided in (undecided verdicts)
    rejected_by: Counter
    labels_needed: list[int]


def small_evidence(rng: np.random.Generator, k: int, accuracy: float) -> GoldEvidence:
    """SMALL_GOLD examples, classes uniform; right with probability `accuracy` whatever the
    class (confidence U(0.9, 1.0)), else a uniform other class (confidence U(0.4, 0.7))."""
    n = SMALL_GOLD
    y = rng.integers(0, k, n)
    right = rng.random(n) < accuracy
    pred = np.where(right, y, (y + rng.integers(1, k, n)) % k)
    conf = np.where(right, rng.uniform(0.9, 1.0, n), rng.uniform(0.4, 0.7, n))
    p = np.repeat(((1 - conf) / (k - 1))[:, None], k, 1)
    p[np.arange(n), pred] = conf
    return GoldEvidence(tuple(f"c{i}" for i in range(k)), y, p)


def _check_kind(name: str) -> str:
    return "recall[class]" if name.startswith("recall[") else name


def scenario_c(draws: int, seed: int) -> tuple[list[SmallCell], GatePolicy]:
    cfg = load_config()
    policy = GatePolicy.from_config(cfg.gate, seed=cfg.seed)
    out = []
    for i, (k, acc) in enumerate(SMALL_CELLS):
        rng = np.random.default_rng((seed, 3, i))
        cell = SmallCell(k, acc, Tally(), Counter(), Counter(), [])
        for _ in range(draws):
            report = decide(small_evidence(rng, k, acc), policy)
            cell.tally.add(report.verdict)
            if report.verdict == UNDECIDED:
                cell.undecided_by.update({_check_kind(c.name) for c in report.undecided})
                cell.labels_needed.append(report.labels_needed)
            elif report.verdict == REJECTED:
                cell.rejected_by.update({_check_kind(c.name) for c in report.violations})
        out.append(cell)
    return out, policy


def _top(counter: Counter, total: int) -> str:
    if not counter:
        return "—"
    return "; ".join(f"{name} {pct(c / total)}" for name, c in counter.most_common(3))


def report_c(cells: list[SmallCell], policy: GatePolicy, draws: int) -> list[str]:
    lines = [
        f"### C. The 1,000-image dataset, whole gold pool labeled ({SMALL_GOLD} gold test labels, "
        f"{draws} draws a cell)",
        "",
        f"Default policy (`GatePolicy.from_config(load_config().gate)`): confidence "
        f"{policy.confidence}, min_gold_labels {policy.min_gold_labels}, min_labels_per_class "
        f"{policy.min_labels_per_class}, floors accuracy {policy.floors.accuracy} / macro_f1 "
        f"{policy.floors.macro_f1}, min_class_recall {policy.min_class_recall}, "
        f"{policy.bootstrap_samples} bootstrap samples; no champion; per-class counts "
        "multinomial (uniform), errors uniform over classes. fixed-200 takes no decision in "
        f"any of these draws ({SMALL_GOLD} < {FIXED_MIN_LABELS} gold test labels): 100% "
        "undecided.",
        "",
        "| classes | true acc | promoted | undecided | rejected | undecided by (% of draws) "
        "| rejected by (% of draws) | median more labels needed, when undecided |",
        "|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for c in cells:
        t = c.tally
        need = f"{int(np.median(c.labels_needed)):,}" if c.labels_needed else "—"
        lines.append(
            f"| {c.classes} | {c.accuracy} | {pct(t.p_pass)} | {pct(t.undecided / t.n)} "
            f"| {pct(t.p_reject)} | {_top(c.undecided_by, t.n)} | {_top(c.rejected_by, t.n)} "
            f"| {need} |"
        )
    return lines


def findings(a: Cells, exact_a: dict, b: BCells, exact_b: dict) -> list[str]:
    """Where wrong promotions are highest, in a few sentences computed from the tables."""
    below = [p for p in TRUE_ACCURACY if p < FLOOR]
    big = [n for n in SIZES if n >= FIXED_MIN_LABELS]

    def span(values: list[float], digits: int = 1) -> str:
        return f"{pct(min(values), digits)}-{pct(max(values), digits)}"

    top_a = {max(below, key=lambda p, n=n: exact_a[(p, n)]) for n in SIZES}
    near = max(below)
    rest = [exact_a[(p, n)] for p in below if p != near for n in SIZES]
    fix = [a[(near, n)]["fixed-200"].p_pass for n in big]
    fix2 = {(p, n): a[(p, n)]["fixed-200"].p_pass for p in below if p != near for n in big}
    at2 = max(fix2, key=fix2.__getitem__)
    out = [
        f"- A, evidence: wrong promotions are highest just under the floor (true "
        f"{', '.join(map(str, sorted(top_a)))} at every size), exact "
        f"{span([exact_a[(near, n)] for n in SIZES], 2)}; at true <= "
        f"{max(p for p in below if p != near)} at most {pct(max(rest), 2)}. fixed-200 promotes "
        f"{span(fix)} of draws at true {near} at every size from {FIXED_MIN_LABELS} (a coin "
        f"flip), and up to {pct(fix2[at2])} further below the floor (true {at2[0]}, "
        f"n={at2[1]:,})."
    ]
    bad_d = sorted({d for (_, d, _) in exact_b})
    for base in DISAGREEMENT_BASE:
        top = {max(bad_d, key=lambda d, n=n: exact_b[(base, d, n)]) for n in SIZES}
        worst = max(SIZES, key=lambda n: max(exact_b[(base, d, n)] for d in bad_d))
        edge = max(bad_d)
        fixed = [b[(base, edge, n)]["fixed-200"].p_pass for n in big]  # type: ignore[index]
        out.append(
            f"- B, base {base}, evidence: wrong promotions peak at true difference "
            f"{', '.join(f'{d:+}' for d in sorted(top))} (per size), highest at n={worst:,}: "
            f"{pct(max(exact_b[(base, d, worst)] for d in bad_d), 2)} exact; at "
            f"{min(bad_d):+} at most {pct(max(exact_b[(base, min(bad_d), n)] for n in SIZES), 2)}. "
            f"fixed-200 at {edge:+}: {span(fixed)} of draws promoted."
        )
    return out


# -- main ------------------------------------------------------------------------------------


def _existing_notes() -> bool:
    if not RESULTS_MD.exists():
        return False
    text = RESULTS_MD.read_text()
    at = text.find(SECTION + "\n")
    if at < 0:
        return False
    rest = text[at + len(SECTION) :]
    end = rest.find("\n## ")
    return f"\n{NOTES}\n" in (rest if end < 0 else rest[:end])


def notes_lines() -> list[str]:
    """Written once, when the section has no notes yet; hand edits survive re-runs."""
    return [
        NOTES,
        "",
        "- fixed-200's refusals (under 200 gold test labels) count as undecided, not as "
        "rejections: the champion stays either way.",
        "- The A and B verdicts use the exact columns: at 2000 draws a simulated rate near 5% "
        "carries about ±0.5 points of Monte Carlo error. Both exact columns come from the "
        "decision boundary found through `decide` itself (smallest k passed in A; for each "
        "gained count, the most losses passed in B), checked against every memoized draw.",
        "- A floor uses Clopper-Pearson, conservative by construction; the regression check "
        "uses Tango's score bound, an approximation, which is why B's exact worst sits closer "
        "to 5% than A's.",
        "- In B, (difference +0.02, base 0.08) is infeasible with a champion at 0.95: "
        "P(gained) = 0.06 would exceed P(champion wrong) = 0.05. It is left out.",
        "- Pooled rates average over the grid of true values, which is not a prior: read the "
        "per-value tables for any one situation.",
        "- C: 'promoted in >= 90% of draws' is this bench's reading of 'a 0.99 candidate gets "
        "promoted'. What holds it back at 10 classes is the per-class evidence, not accuracy: "
        "110 labels over 10 classes leave a class under min_labels_per_class (5) in some "
        "draws, and a class with 4 labels, all right, has a Clopper-Pearson lower recall "
        "bound of 0.05^(1/4) = 0.47 < min_class_recall 0.5, so it stays undecided.",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=2000, help="draws a cell (A and B)")
    p.add_argument("--small-draws", type=int, default=None, help="draws a cell in C (draws / 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="200 draws a cell; RESULTS.md untouched")
    p.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    args = p.parse_args(argv)
    draws = 200 if args.quick else args.draws
    small_draws = args.small_draws or min(1000, max(100, draws // 2))
    started = datetime.now(UTC)
    load_start = load_now()
    t0 = time.perf_counter()

    gate = CountGate()
    t = time.perf_counter()
    a = scenario_a(gate, draws, args.seed)
    a_lines, worst_a_exact, exact_a = report_a(a, gate, draws)
    ta = time.perf_counter() - t
    t = time.perf_counter()
    b = scenario_b(gate, draws, args.seed)
    spot = gate.spot_check_paired(50, np.random.default_rng((args.seed, 4)))
    b_lines, worst_b, exact_b = report_b(b, gate, draws)
    tb = time.perf_counter() - t
    t = time.perf_counter()
    c, policy = scenario_c(small_draws, args.seed)
    c_lines = report_c(c, policy, small_draws)
    tc = time.perf_counter() - t
    wall = time.perf_counter() - t0

    worst_a_sim = {
        n: max(a[(q, n)]["evidence"].p_pass for q in TRUE_ACCURACY if q < FLOOR) for n in SIZES
    }
    worst_a_fixed = {
        n: max(a[(q, n)]["fixed-200"].p_pass for q in TRUE_ACCURACY if q < FLOOR) for n in SIZES
    }
    ok_a_exact = all(v <= TARGET_WRONG_PROMOTION for v in worst_a_exact.values())
    ok_a_fixed = all(v <= TARGET_WRONG_PROMOTION for v in worst_a_fixed.values())
    wb = max(worst_b, key=lambda key: worst_b[key][0])
    ok_b = worst_b[wb][0] <= TARGET_WRONG_PROMOTION
    small99 = next(x for x in c if (x.classes, x.accuracy) == (10, 0.99))
    small99_5 = next(x for x in c if (x.classes, x.accuracy) == (5, 0.99))
    ok_c = small99.tally.p_pass >= TARGET_SMALL_PROMOTION
    wa = max(worst_a_sim, key=worst_a_sim.__getitem__)
    wae = max(worst_a_exact, key=worst_a_exact.__getitem__)
    verdicts = [
        f"- A, evidence gate: worst wrong-promotion rate under the floor <= "
        f"{pct(TARGET_WRONG_PROMOTION, 0)} at every size: simulated max {pct(worst_a_sim[wa])} "
        f"(n={wa:,}), exact max {pct(worst_a_exact[wae], 2)} (n={wae:,}): "
        f"{verdict(ok_a_exact)} (judged on the exact rates)",
        f"- A, fixed-200 against the same target: max {pct(max(worst_a_fixed.values()))} "
        f"(n={max(worst_a_fixed, key=worst_a_fixed.__getitem__):,}): {verdict(ok_a_fixed)}",
        f"- B, evidence gate, the same {pct(TARGET_WRONG_PROMOTION, 0)} bound on wrong "
        "promotions for the regression check (not a stated target; the evidence module's "
        f"claim), exact: max {pct(worst_b[wb][0], 2)} (true difference {worst_b[wb][1]:+}, "
        f"base {wb[0]}, n={wb[1]:,}): {verdict(ok_b)}",
        f"- C, a 0.99 candidate on {SMALL_GOLD} gold test labels, 10 classes, promoted in >= "
        f"{pct(TARGET_SMALL_PROMOTION, 0)} of draws: {pct(small99.tally.p_pass)} "
        f"(undecided {pct(small99.tally.undecided / small99.tally.n)}, rejected "
        f"{pct(small99.tally.p_reject)}; at 5 classes {pct(small99_5.tally.p_pass)}): "
        f"{verdict(ok_c)}; fixed-200: 0% (never decides at {SMALL_GOLD})",
    ]
    cmd = "`.venv/bin/python -m bench.gate" + (" --quick" if args.quick else "")
    cmd += f" --draws {args.draws}" if not args.quick and args.draws != 2000 else ""
    cmd += "`"
    md = [
        f"Command: {cmd} (run {started:%Y-%m-%d %H:%M} UTC, {wall:.0f} s: A {ta:.0f} s, "
        f"B {tb:.0f} s, C {tc:.0f} s).",
        "",
        f"Machine: {machine_line(numpy=np.__version__, scipy=scipy.__version__)}; "
        f"{load_start} at start, {load_now()} at end.",
        "",
        f"Evidence gate: `tasks.validation.decide` at confidence {CONFIDENCE}; in A and B "
        f"memoized on the counts ({len(gate.floor_memo):,} + {len(gate.paired_memo):,} distinct "
        f"calls, {gate.seconds:.0f} s in `decide`; {spot} memoized B keys re-decided with "
        "another concordant split, same verdict). fixed-200: fewer than 200 gold test labels "
        "-> undecided, else passed iff the point accuracy >= the floor and the point "
        "difference >= -max_regression. Rates are % of draws.",
        "",
        "**Targets**",
        "",
        *verdicts,
        "",
        "**Where wrong promotions are highest**",
        "",
        *findings(a, exact_a, b, exact_b),
        "",
        *a_lines,
        "",
        *b_lines,
        "",
        *c_lines,
    ]
    print("\n".join([SECTION, "", *md]))
    if not (args.quick or args.no_results):
        if not _existing_notes():
            md += ["", *notes_lines()]
        update_results(SECTION, md, notes=NOTES)
        print(f"\nwrote the '{SECTION}' section of {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
