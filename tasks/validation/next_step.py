"""What the user should do after a gate decision, in full: for an undecided gate the
exact `semilabel sample` command for the gold labels that would most likely decide it,
capped by the gold pool; when the pool runs dry, what else would decide, with its cost."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from configs.redact import redact_text
from tasks.validation.evidence import LABELS_CAP
from tasks.validation.gate import REJECTED, UNDECIDED, GateReport


@dataclass(frozen=True)
class GoldPool:
    """What the next step needs to know about gold: how labels split into its test part,
    how many gold examples still lack a human label, and how large the store is."""

    fraction: float
    test_share: float
    unlabeled: int  # gold examples (dev or test) with no human label yet
    n_examples: int  # examples in the store


def gold_to_request(report: GateReport, pool: GoldPool) -> int:
    """Gold labels to ask for so the gold test part most likely grows by what the gate
    needs (only `test_share` of gold lands in test), capped by what the pool has left."""
    if not report.labels_needed or any(c.labels_needed >= LABELS_CAP for c in report.undecided):
        return 0
    return min(pool.unlabeled, math.ceil(report.labels_needed / pool.test_share))


def cli_args(config_path: str | None, overrides: Mapping[str, Any] | None) -> str:
    """The run's own `--config` and `--set` options, as they go after a subcommand, so a
    printed command works as it stands (the sampling keys it sets itself are left out),
    less credentials: it is shown in reports and descriptions (`configs.redact`)."""
    parts = [f"--config {shlex.quote(config_path)}"] if config_path else []
    for key, value in (overrides or {}).items():
        if key.startswith("sampling."):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"--set {shlex.quote(f'{key}={text}')}")
    return redact_text(" ".join(parts))


def next_step(report: GateReport, pool: GoldPool, args: str = "") -> str:
    """What the user should do after this decision, in full: for an undecided gate, the
    exact `semilabel sample` command for the gold labels that would most likely decide it,
    or, when the gold pool is exhausted, what else would. `args`: the run's own options
    (`cli_args`), repeated in every command."""
    a = f" {args}" if args else ""
    if report.verdict == REJECTED:
        return (
            "The candidate failed the checks above; the champion stays. Look at the failed "
            "checks and their per-class recall, fix the labels or data they point to (e.g. "
            f"`semilabel sample{a} --set sampling.budget.review=100` asks for likely-wrong labels "
            f"to be checked), then run `semilabel retrain{a}` again."
        )
    if report.verdict != UNDECIDED:
        return ""
    stuck = [c.name for c in report.undecided if c.labels_needed >= LABELS_CAP]
    if stuck:
        return (
            f"The estimate of {', '.join(stuck)} sits on its limit: more gold labels would "
            "most likely not decide it. Improve the candidate instead (more training labels: "
            f"`semilabel sample{a} --set sampling.budget.train=200 --set sampling.mode=export`, "
            f"label, `semilabel annotate import{a} --file <export>`), then `semilabel retrain{a}`."
        )
    need = report.labels_needed
    ask = gold_to_request(report, pool)
    improvable = any(c.low == c.low for c in report.undecided)  # a metric, not a count
    share = f"{pool.test_share:g}"
    if ask:
        text = (
            f"About {need} more gold test labels would most likely decide it. Ask for them: "
            f"`semilabel sample{a} --set sampling.budget.gold={ask} --set "
            "sampling.budget.train=0 --set sampling.mode=export`, label the tasks, "
            f"`semilabel annotate import{a} --file <export>`, then `semilabel retrain{a}`"
            f" (a share of {share} of gold lands in the test part, hence {ask} requests)."
        )
        if ask < math.ceil(need / pool.test_share):
            text += (
                f" That is every gold example still unlabeled ({pool.unlabeled}): it will not "
                "be enough. " + _grow_gold(need, report.candidate.n, pool, a, improvable)
            )
        return text
    return (
        f"About {need} more gold test labels would most likely decide it, but the gold pool "
        "is exhausted: every gold example already has a human label. "
        + _grow_gold(need, report.candidate.n, pool, a, improvable)
    )


def _grow_gold(need: int, have: int, pool: GoldPool, a: str, improvable: bool) -> str:
    """Ways to a decision when the pool runs dry, with what each costs: more gold test
    labels (more data, or a larger gold fraction), or, when a metric's bounds are what is
    undecided, a candidate clearly above its floors, which fewer labels decide."""
    images = math.ceil(need / (pool.fraction * pool.test_share))
    options = (
        f"Either ingest more data (about {images} more images give {need} gold test labels "
        f"at gold.fraction {pool.fraction:g})"
    )
    if have > 0 and pool.n_examples:
        wanted = pool.fraction * (have + need) / have
        if wanted < 1:
            moved = math.ceil(pool.n_examples * (wanted - pool.fraction))
            options += (
                f", or raise gold.fraction from {pool.fraction:g} to about {wanted:.2f} "
                f"(`--set gold.fraction={wanted:.2f}`): about {moved} more examples become "
                "gold, leave training, and need human labels before they count"
            )
    if improvable:
        options += (
            "; or improve the candidate, since one clearly above its floors is decided on far "
            "fewer gold labels: ask for training labels (`semilabel sample"
            f"{a} --set sampling.budget.train=200 --set sampling.mode=export`), label, import, "
            "and retrain"
        )
    return options + "."
