"""The retrain's decision as people read it: the typed result the CLI and Prefect show,
its one-line verdict, the checks folded for a summary table, and the gate task."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.registry.promotion.evaluation import Evaluation
from tasks.validation import (
    REJECTED,
    UNDECIDED,
    Check,
    GatePolicy,
    GateReport,
    decide,
)
from tasks.validation.next_step import GoldPool, next_step
from tasks.validation.reports import gate_markdown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainDecision:
    model_name: str
    version: str
    gate: str  # passed | rejected | undecided: the gate's verdict
    promoted: bool
    reason: str  # why promoted or not, in full
    champion_version: str | None  # after the decision
    previous_champion: str | None
    gate_summary: str
    mlflow_run_id: str
    gold_accuracy: float
    gold_macro_f1: float
    gold_sizes: dict[str, int]
    run_url: str = ""  # the run in the MLflow UI
    next_labels: str = ""  # what was sampled for people to label, when sampling is on
    next_step: str = ""  # what the user should do now, in full
    checks: tuple[tuple[str, str], ...] = ()  # (check, "value [low, high] rule: outcome")
    gold_labels_requested: int = 0  # undecided: gold labels the next step asks for
    # steps after the decision that failed even when retried (describing it in MLflow,
    # the label-health push, the requests for people): the decision stands regardless
    warnings: tuple[str, ...] = ()

    @property
    def decision(self) -> str:
        """promoted: the champion now; undecided: too little evidence, the champion stays;
        rejected: registered, not promoted."""
        if self.promoted:
            return "promoted"
        return UNDECIDED if self.gate == UNDECIDED else REJECTED

    def rows(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = [
            {"metric": "registered", "value": f"{self.model_name} v{self.version}"},
            {"metric": "decision", "value": self.decision},
            {"metric": "why", "value": self.reason},
            *({"metric": name, "value": text} for name, text in self.checks),
            {
                "metric": "champion now",
                "value": f"v{self.champion_version}" if self.champion_version else "none",
            },
            {
                "metric": "previous champion",
                "value": f"v{self.previous_champion}" if self.previous_champion else "none",
            },
            {"metric": "gold test / dev labels", "value": _sizes(self.gold_sizes)},
            {"metric": "MLflow run", "value": self.mlflow_run_id},
        ]
        if self.next_step:
            rows.append({"metric": "next step", "value": self.next_step})
        if self.next_labels:
            rows.append({"metric": "to label next", "value": self.next_labels})
        for warning in self.warnings:
            rows.append({"metric": "warning", "value": warning})
        return rows

    def state_message(self) -> str:
        """The run's final state message: the decision, then what failed after it."""
        head = f"{self.model_name} v{self.version} {self.decision}"
        return "; ".join([head, *self.warnings])


def check_lines(report: GateReport) -> tuple[tuple[str, str], ...]:
    """The report's checks for a summary table: each failed or undecided check and each
    overall metric or comparison, one row each; the per-class recall checks that did not
    fail folded into one row (how many pass, which are undecided, the lowest bound)."""
    out = []
    recall = [c for c in report.checks if c.name.startswith("recall[") and not c.disabled]
    folded = [c for c in recall if c.status != "FAIL"]
    for c in report.checks:
        if c in folded or c.disabled:
            continue
        if c.name in ("gold_labels", "labels_per_class") and c.status == "pass":
            continue
        out.append((c.name, f"{c.shown()} {c.rule}: {c.status}"))
    if folded:
        passing = [c for c in folded if c.status == "pass"]
        waiting = [c.name[len("recall[") : -1] for c in folded if c.status == "undecided"]
        text = (
            f"{len(passing)} of {len(recall)} classes pass (lower bound >= {folded[0].threshold:g})"
        )
        if waiting:
            text += f"; undecided: {', '.join(waiting)}"
        if passing:
            low = min(passing, key=lambda c: c.low)
            text += f"; lowest bound {low.name} {low.shown()}"
        out.append(("recall (per class)", text))
    return tuple(out)


def _sizes(sizes: dict[str, int]) -> str:
    return f"{sizes.get('test', 0)} / {sizes.get('dev', 0)}"


def _names(checks: list[Check]) -> str:
    """Check names, the per-class recall checks counted rather than listed."""
    recall = [c for c in checks if c.name.startswith("recall[")]
    names = [c.name for c in checks if c not in recall]
    if recall:
        names.append(f"{len(recall)} class recall{'s' if len(recall) > 1 else ''}")
    return ", ".join(names)


def decision_headline(decision: RetrainDecision, report: GateReport) -> str:
    """The verdict in one short plain-text line (the first line of every description;
    the evidence is on the next line, see `tasks.validation.reports.decision_markdown`)."""
    v = f"v{decision.version}"
    if decision.promoted:
        was = f" (was v{decision.previous_champion})" if decision.previous_champion else ""
        gain = ""
        if report.gain is not None:
            gain = (
                "; a significant gain"
                if report.significant_gain
                else f"; no significant gain over v{report.champion_version}"
            )
        return f"PROMOTED: {v} is the champion{was}{gain}"
    if report.passed:
        return f"NOT PROMOTED: {v} passed its gate, but {decision.reason}"
    n = len([c for c in report.checks if not c.disabled])
    if report.verdict == UNDECIDED:
        return (
            f"UNDECIDED: {v} is not promoted, the champion stays: {len(report.undecided)} of "
            f"{n} checks undecided on {report.candidate.n} gold test labels "
            f"({_names(report.undecided)})"
        )
    return (
        f"REJECTED: {v} failed {len(report.violations)} of {n} checks ({_names(report.violations)})"
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="gate-candidate", cache_policy=NO_CACHE)
def gate_candidate(
    evaluation: Evaluation,
    policy: GatePolicy,
    extra: list[Check] | None = None,
    cli_args: str = "",
) -> GateReport:
    """Apply the gate policy and publish its report, with the next step whose commands
    repeat the run's own options (`cli_args`), as a markdown artifact."""
    report = decide(
        evaluation.evidence(),
        policy,
        evaluation.champion_version,
        evaluation.gold.sizes,
        extra or (),
    )
    create_markdown_artifact(
        gate_markdown(
            report, next_step(report, evaluation.pool or GoldPool(0.0, 1.0, 0, 0), cli_args)
        ),
        key="gate-report",
        description=f"Gate: {report.decision}",
    )
    (get_run_logger().info if report.passed else get_run_logger().warning)(
        "gate %s", report.summary()
    )
    return report
