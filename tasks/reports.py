"""The decision's reports, for people: the gate report and the monitor report in
Markdown (Prefect artifacts, MLflow artifacts, the CLI), and the confusion-matrix and
reliability-diagram images. Rendering only: nothing here decides anything.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from tasks.validation import (
    ECE_BINS,
    Check,
    GateReport,
    GoldMetrics,
    MonitorReport,
    calibration_bins,
    expected_calibration_error,
)


def _f(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.4f}"


def gate_markdown(report: GateReport, sample_hint: str = "") -> str:
    """The gate report: the verdict first, then every check (failed, passed, disabled)."""
    champ = f"v{report.champion_version}" if report.champion_version else None
    lines = [
        f"# Gate: **{report.decision.upper()}**",
        "",
        report.summary(),
        "",
        f"Gold test labels: {report.candidate.n}"
        + (
            f" (gold dev: {report.gold_sizes.get('dev', 0)}, used only for choosing)"
            if report.gold_sizes
            else ""
        )
        + ". Champion: "
        + (champ or "none (first run: floors only)"),
        "",
    ]
    missing = report.gold_labels_missing
    if missing:
        lines += [
            f"**Too few gold labels: {missing} more human labels on gold test examples are "
            "needed before the gate will decide.**" + (f" {sample_hint}" if sample_hint else ""),
            "",
        ]
    lines += ["| check | value | threshold | rule | result |", "|---|---:|---:|---|---|"]
    for c in report.checks:
        result = "disabled" if c.disabled else ("pass" if c.passed else "**FAIL**")
        if c.name == "gold_labels":  # a count
            value, threshold = f"{c.value:.0f}", f"{c.threshold:.0f}"
        else:
            value, threshold = _f(c.value), _f(c.threshold)
        lines.append(f"| {c.name} | {value} | {threshold} | {c.rule} | {result} |")
    lines += ["", "| metric | candidate | champion |", "|---|---:|---:|"]
    theirs = report.champion.scalars() if report.champion else {}
    for name, value in report.candidate.scalars().items():
        lines.append(f"| {name} | {value:.4f} | {_f(theirs.get(name))} |")
    lines += ["", "| class | recall | precision |", "|---|---:|---:|"]
    for cls, r in report.candidate.per_class_recall.items():
        lines.append(f"| {cls} | {r:.4f} | {report.candidate.per_class_precision[cls]:.4f} |")
    if report.candidate.absent_classes:
        lines += [
            "",
            "Classes with no gold test example: " + ", ".join(report.candidate.absent_classes),
        ]
    return "\n".join(lines) + "\n"


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
        lines += ["| metric | at gate | now |", "|---|---:|---:|"]
        for k, v in report.metrics.items():
            lines.append(f"| {k} | {_f(report.baseline.get(k))} | {v:.4f} |")
    if report.absent_classes:
        lines += ["", "Classes with no gold test example: " + ", ".join(report.absent_classes)]
    if report.regressions:
        lines += ["", "Regressions beyond tolerance:", *[f"- {r}" for r in report.regressions]]
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


def _check(report: GateReport, name: str) -> Check | None:
    return next((c for c in report.checks if c.name == name), None)


def decision_markdown(
    *,
    headline: str,
    report: GateReport,
    snapshot_id: str,
    gold_snapshot_id: str,
    champion_after: str | None,
    previous_after: str | None,
) -> str:
    """The run's and the version's description: the decision in one line, then the
    candidate against the champion with each check's floor, allowed regression and
    margin, the tightest check, the data, and who holds which alias now."""
    cand, champ = report.candidate, report.champion
    rows = [
        "| metric | candidate | champion | floor | allowed regression | margin |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in ("accuracy", "macro_f1", "ece"):
        floor = _check(report, f"{m}_floor") or _check(report, f"{m}_ceiling")
        vs = _check(report, f"{m}_vs_champion")
        theirs = champ.scalars()[m] if champ else None
        allowed = (
            "off"
            if vs is not None and vs.disabled
            else f"{abs(theirs - vs.threshold):.4f}"
            if vs is not None and theirs is not None and vs.threshold is not None
            else "—"
        )
        margins = [c.margin for c in (floor, vs) if c is not None and c.margin == c.margin]
        rows.append(
            f"| {m} | {cand.scalars()[m]:.4f} | {_f(theirs)} | "
            f"{'off' if floor is None or floor.disabled else f'{floor.threshold:.4f}'} | "
            f"{allowed} | {_f(min(margins)) if margins else '—'} |"
        )
    recall_floor = next(
        (c.threshold for c in report.checks if c.name.startswith("recall[") and not c.disabled),
        None,
    )
    worst = cand.worst_class_recall
    their_worst = champ.worst_class_recall if champ else None
    margin = _f(worst - recall_floor) if recall_floor is not None else "—"
    rows.append(
        f"| worst-class recall | {_f(worst)} | {_f(their_worst)} | {_f(recall_floor)} | — "
        f"| {margin} |"
    )
    tight = report.tightest()
    lines = [
        f"**{headline}**",
        "",
        *rows,
        "",
        f"Tightest check: `{tight.name}` {_f(tight.value)} against {_f(tight.threshold)} "
        f"(margin {_f(tight.margin)})."
        if tight
        else "No enabled check.",
        "",
        f"Data: training snapshot `{snapshot_id}`, gold test snapshot `{gold_snapshot_id}` "
        f"({cand.n} labels).",
        "",
        "Aliases after this run: `champion` → "
        + (f"v{champion_after}" if champion_after else "none")
        + ", `previous_champion` → "
        + (f"v{previous_after}" if previous_after else "none")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def plot_gate(report: GateReport, title: str) -> bytes:
    """PNG of the decision: each enabled check's value against its floor or limit (and
    the champion's value where it has one), green when it passed, red when it failed."""
    plt = _pyplot()
    checks = [c for c in report.checks if not c.disabled and c.name != "gold_labels"]
    champ = report.champion.scalars() if report.champion else {}
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(checks) + 1.4), dpi=110)
    for i, c in enumerate(checks):
        colour = "#2e7d32" if c.passed else "#c62828"
        value = c.value if c.value == c.value else 0.0
        ax.barh(i, value, color=colour, alpha=0.75)
        if c.threshold is not None:
            ax.plot([c.threshold, c.threshold], [i - 0.4, i + 0.4], color="black", lw=2)
        metric = c.name.split("_vs_")[0].split("_floor")[0].split("_ceiling")[0]
        if metric in champ:
            ax.plot(champ[metric], i, marker="D", color="#1565c0", ms=6)
        ax.text(
            1.01,
            i,
            f"{c.value:.3f} {'pass' if c.passed else 'FAIL'}",
            va="center",
            fontsize=7,
            transform=ax.get_yaxis_transform(),
        )
    ax.set_yticks(range(len(checks)), [c.name for c in checks], fontsize=7)
    ax.set_xlim(0, 1.0)
    ax.invert_yaxis()
    ax.set_xlabel("value (bar) | floor or limit (black) | champion (blue diamond)")
    ax.set_title(f"{title}: {report.decision.upper()}")
    return _png(fig)
