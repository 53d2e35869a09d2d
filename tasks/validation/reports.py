"""The decision's reports, for people: the gate report and the monitor report in
Markdown (Prefect artifacts, MLflow artifacts, the CLI), and the confusion-matrix and
reliability-diagram images. Rendering only: nothing here decides anything.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from tasks.validation.checks import Check, SliceResult
from tasks.validation.gate import GateReport
from tasks.validation.metrics import (
    ECE_BINS,
    GoldMetrics,
    calibration_bins,
    expected_calibration_error,
)
from tasks.validation.monitor import MonitorReport


def _f(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.4f}"


def _check_rows(checks: list[Check]) -> list[str]:
    rows = ["| check | value [low, high] | limit | rule | outcome |", "|---|---:|---:|---|---|"]
    for c in checks:
        outcome = {"FAIL": "**FAIL**", "undecided": "*undecided*"}.get(c.status, c.status)
        limit = "—" if c.threshold is None else f"{c.threshold:g}"
        rows.append(f"| {c.name} | {c.shown()} | {limit} | {c.rule} | {outcome} |")
    return rows


def gate_markdown(report: GateReport, next_step: str = "") -> str:
    """The gate report: the verdict and the next step first, then every check (failed,
    undecided, passed, disabled) with its bounds, the metrics beside the champion's, the
    slices and the classes."""
    lines = [f"# Gate: **{report.decision.upper()}**", "", report.summary(), ""]
    if next_step:
        lines += [f"**Next step:** {next_step}", ""]
    lines += [_gate_basis(report), "", *_check_rows(report.checks), ""]
    lines += _metric_rows(report)
    lines += _gain_lines(report)
    lines += _slice_rows(report.slices)
    lines += _class_rows(report.candidate)
    return "\n".join(lines) + "\n"


def _gate_basis(report: GateReport) -> str:
    """What the gate was decided on: the gold labels, the champion, the bounds' rule."""
    champ = f"v{report.champion_version}" if report.champion_version else None
    dev = (
        f" (gold dev: {report.gold_sizes.get('dev', 0)}, used only for choosing)"
        if report.gold_sizes
        else ""
    )
    return (
        f"Gold test labels: {report.candidate.n}{dev}. Champion: "
        + (champ or "none (first run: floors only)")
        + f". Bounds are one-sided at {report.confidence:g}: a floor passes when its lower "
        "bound clears it, fails when its upper bound is below it, and is otherwise undecided."
    )


def _metric_rows(report: GateReport) -> list[str]:
    """The candidate's metrics with their bounds, beside the champion's."""
    theirs = report.champion.scalars() if report.champion else {}
    if report.champion:
        theirs["worst_class_recall"] = report.champion.worst_class_recall
    rows = ["| metric | candidate [low, high] | champion |", "|---|---:|---:|"]
    for name, b in report.bounds.items():
        rows.append(f"| {name} | {b} | {_f(theirs.get(name))} |")
    return rows


def _gain_lines(report: GateReport) -> list[str]:
    """The paired accuracy difference with the champion, when there is one."""
    if report.gain is None:
        return []
    return [
        "",
        f"Accuracy, candidate minus champion on the same examples: {report.gain} "
        f"(exact McNemar p = {report.mcnemar_p:.3g}); "
        + ("a significant gain." if report.significant_gain else "no significant gain."),
    ]


def _slice_rows(slices: list[SliceResult]) -> list[str]:
    """Each slice's accuracy and its difference with the champion, and whether it blocks."""
    if not slices:
        return []
    rows = [
        "",
        "| slice | labels | accuracy [low, high] | vs champion [low, high] | blocks |",
        "|---|---:|---:|---:|---|",
    ]
    for sl in slices:
        vs = (
            "—"
            if sl.vs_champion is None
            else f"{sl.vs_champion.value:+.4f} "
            + (f"[{sl.vs_champion.low:+.4f}, {sl.vs_champion.high:+.4f}]")
        )
        rows.append(
            f"| {sl.key}={sl.group} | {sl.n} | {sl.accuracy} | {vs} | "
            f"{'**yes**' if sl.blocked else 'no'} |"
        )
    return rows


def _class_rows(candidate: GoldMetrics) -> list[str]:
    """The candidate's recall and precision per class, and the classes gold test lacks."""
    rows = ["", "| class | recall | precision |", "|---|---:|---:|"]
    for cls, r in candidate.per_class_recall.items():
        rows.append(f"| {cls} | {r:.4f} | {candidate.per_class_precision[cls]:.4f} |")
    if candidate.absent_classes:
        rows += ["", "Classes with no gold test example: " + ", ".join(candidate.absent_classes)]
    return rows


def monitor_markdown(report: MonitorReport) -> str:
    champ = f"v{report.champion_version}" if report.champion_version else "none"
    lines = [
        f"# Monitor: **{report.action.upper()}**",
        "",
        f"Model {report.model_name}, champion {champ}; gold test labels now: {report.n_gold}.",
        "",
    ]
    if report.detail:
        lines += [report.detail, ""]
    if report.metrics:
        lines += [
            f"| metric | at gate | now [low, high] (one-sided {report.confidence:g}) |",
            "|---|---:|---:|",
        ]
        for k, v in report.metrics.items():
            now = str(report.bounds[k]) if k in report.bounds else f"{v:.4f}"
            lines.append(f"| {k} | {_f(report.baseline.get(k))} | {now} |")
    if report.absent_classes:
        lines += ["", "Classes with no gold test example: " + ", ".join(report.absent_classes)]
    if report.regressions:
        lines += [
            "",
            "Regressions beyond tolerance and beyond noise:",
            *[f"- {r}" for r in report.regressions],
        ]
    if report.rolled_back_to:
        lines += ["", f"Rolled back: champion is now v{report.rolled_back_to}."]
    if report.label_health:
        lines += ["", report.label_health.replace("# Label health", "## Label health")]
    return "\n".join(lines) + "\n"


def plot_confusion(metrics: GoldMetrics, classes: tuple[str, ...], title: str) -> bytes:
    """PNG of the confusion matrix."""
    plt = _pyplot()
    cm = np.array(metrics.confusion)
    fig, ax = plt.subplots(figsize=(5.5, 4.8), dpi=110)
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (gold)")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                color = "white" if cm[i, j] > cm.max() / 2 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax)
    return _png(fig)


def plot_reliability(probs: np.ndarray, y: np.ndarray, title: str) -> bytes:
    """PNG of the reliability diagram: accuracy per confidence bin vs the diagonal, with
    each bin's example count over its bar."""
    plt = _pyplot()
    bins = calibration_bins(probs, y, ECE_BINS)
    acc = [b["accuracy"] if b["count"] else np.nan for b in bins]
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=110)
    ax.bar(
        [b["lo"] for b in bins],
        acc,
        width=1 / ECE_BINS,
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    for b, a in zip(bins, acc, strict=True):
        if b["count"]:
            ax.text(
                (b["lo"] + b["hi"]) / 2,
                min(a, 0.97) + 0.015 if not math.isnan(a) else 0.02,
                str(b["count"]),
                ha="center",
                fontsize=6,
            )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence (numbers: examples per bin)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {expected_calibration_error(probs, y):.3f})")
    ax.legend(loc="upper left")
    return _png(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def evidence_line(report: GateReport) -> str:
    """Every check in one short paragraph, so the decision and its evidence fit the
    collapsed description at the top of an MLflow run page: `name value [low, high] vs
    limit: outcome`, the per-class recall checks counted by outcome."""
    parts = []
    recall = [c for c in report.checks if c.name.startswith("recall[") and not c.disabled]
    for c in report.checks:
        if (
            c.disabled
            or c in recall
            or (c.name in ("gold_labels", "labels_per_class") and c.passed)
        ):
            continue
        shown = c.shown() if c.low != c.low else f"{c.value:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
        if c.low == c.low and "_vs_" not in c.name and not c.name.startswith("slice"):
            shown = f"{c.value:.3f} [{c.low:.3f}, {c.high:.3f}]"
        parts.append(f"{c.name} {shown} vs {c.threshold:g}: {c.status}")
    if recall:
        counts = {s: sum(c.status == s for c in recall) for s in ("pass", "undecided", "FAIL")}
        parts.append(
            f"recall of {len(recall)} classes vs {recall[0].threshold:g}: "
            + ", ".join(f"{k} {s}" for s, k in counts.items() if k)
        )
    return "; ".join(parts) + "."


def decision_markdown(
    *,
    headline: str,
    report: GateReport,
    snapshot_id: str,
    gold_snapshot_id: str,
    champion_after: str | None,
    previous_after: str | None,
) -> str:
    """The run's and the version's description, short enough for the first screen: the
    verdict in plain text on the first line, then every check that decided it (failed or
    undecided ones first, passing per-class recall folded into one row), the data, and
    who holds which alias now."""
    cand = report.candidate
    recall = [c for c in report.checks if c.name.startswith("recall[") and not c.disabled]
    folded = [c for c in recall if c.status != "FAIL"]
    routine = ("gold_labels", "labels_per_class")
    live = [c for c in report.checks if not c.disabled and c not in folded]
    shown = [c for c in live if c.status in ("FAIL", "undecided")]
    shown += [c for c in live if c.status == "pass" and c.name not in routine]
    rows = _check_rows(shown)
    if folded:
        passing = [c for c in folded if c.status == "pass"]
        waiting = [c.name[len("recall[") : -1] for c in folded if c.status == "undecided"]
        low = min(passing, key=lambda c: c.low) if passing else None
        rows.append(
            f"| recall, {len(recall)} classes | "
            + (f"lowest bound: {low.name} {low.shown()}" if low else "—")
            + f" | {folded[0].threshold:g} | lower bound >= {folded[0].threshold:g} | "
            + f"{len(passing)} pass"
            + (f", *undecided*: {', '.join(waiting)}" if waiting else "")
            + " |"
        )
    off = [c.name for c in report.disabled]
    lines = [
        headline,
        "",
        evidence_line(report),
        "",
        *rows,
        "",
        f"Bounds one-sided at {report.confidence:g}, on {cand.n} gold test labels "
        f"(snapshot `{gold_snapshot_id}`); training snapshot `{snapshot_id}`."
        + (f" Disabled by config: {', '.join(off)}." if off else ""),
        "",
        "Aliases after this run: `champion` → "
        + (f"v{champion_after}" if champion_after else "none")
        + ", `previous_champion` → "
        + (f"v{previous_after}" if previous_after else "none")
        + ".",
    ]
    return "\n".join(lines) + "\n"


STATUS_COLOUR = {"pass": "#2e7d32", "FAIL": "#c62828", "undecided": "#ef6c00"}


def plot_gate(report: GateReport, title: str) -> bytes:
    """PNG of the decision: each enabled check's value with its confidence bounds (the
    whiskers) against its floor or limit (black tick), green when it passed, red when it
    failed, orange when undecided; floors on the left, differences with the champion on
    the right."""
    plt = _pyplot()
    live = [
        c
        for c in report.checks
        if not c.disabled and c.name not in ("gold_labels", "labels_per_class")
    ]
    groups = [
        [c for c in live if "_vs_champion" not in c.name],
        [c for c in live if "_vs_champion" in c.name],
    ]
    groups = [g for g in groups if g]
    height = 0.4 * max((len(g) for g in groups), default=1) + 1.5
    fig, axes = plt.subplots(
        1, len(groups) or 1, figsize=(7 * max(len(groups), 1), height), dpi=110
    )
    axes = list(np.atleast_1d(axes))
    for ax, checks in zip(axes, groups, strict=False):
        for i, c in enumerate(checks):
            colour = STATUS_COLOUR.get(c.status, "gray")
            value = c.value if c.value == c.value else (c.threshold or 0.0)
            lo = c.low if c.low == c.low else value
            hi = c.high if c.high == c.high else value
            ax.plot([lo, hi], [i, i], color=colour, lw=2)
            ax.plot(value, i, "o", color=colour, ms=5)
            if c.threshold is not None:
                ax.plot([c.threshold, c.threshold], [i - 0.35, i + 0.35], color="black", lw=2)
            ax.text(
                1.01,
                i,
                f"{c.shown()} {c.status}",
                va="center",
                fontsize=7,
                transform=ax.get_yaxis_transform(),
            )
        ax.set_yticks(range(len(checks)), [c.name for c in checks], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("value, one-sided bounds (line), floor or limit (black)")
    axes[0].set_title(f"{title}: {report.decision.upper()}")
    return _png(fig)
