"""Gold-set evaluation and the promotion gate.

Candidate and champion are evaluated on the same gold snapshot in the same run. The
gate fails closed: too little gold evidence, a metric under its floor, a class whose
recall is under the per-class floor, or a drop against the champion beyond the allowed
tolerance each refuse promotion, and every violation is listed, not just the first.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from configs.schema import GateConfig
from models import predict_proba

log = logging.getLogger(__name__)

ECE_BINS = 15
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "ece": False}


@dataclass(frozen=True)
class GoldMetrics:
    n: int
    accuracy: float
    macro_f1: float
    ece: float
    per_class_recall: dict[str, float]
    per_class_precision: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def scalars(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "ece": self.ece}

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
    )


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over confidence bins of |accuracy - confidence| weighted by the bin's share."""
    if len(y) == 0:
        return 0.0
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def evaluate_model(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: tuple[str, ...]
) -> tuple[GoldMetrics, np.ndarray]:
    """(metrics, probabilities) of `model` on uint8 images x (N, C, H, W)."""
    probs = predict_proba(model, x).numpy()
    return gold_metrics(probs, y.numpy(), classes), probs


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    rule: str


@dataclass(frozen=True)
class GateReport:
    passed: bool
    candidate: GoldMetrics
    champion: GoldMetrics | None
    champion_version: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "rejected"

    def summary(self) -> str:
        if self.passed:
            return f"passed: {len(self.checks)} checks"
        return "rejected: " + "; ".join(f"{c.name} {c.rule}" for c in self.violations)

    def to_markdown(self) -> str:
        lines = [
            f"# Gate: **{self.decision.upper()}**",
            "",
            f"Gold examples: {self.candidate.n}. Champion: "
            + (
                f"version {self.champion_version}"
                if self.champion_version
                else "none (first run: floors only)"
            ),
            "",
            "| check | value | threshold | rule | result |",
            "|---|---:|---:|---|---|",
        ]
        for c in self.checks:
            lines.append(
                f"| {c.name} | {c.value:.4f} | {c.threshold:.4f} | {c.rule} | "
                f"{'pass' if c.passed else '**FAIL**'} |"
            )
        lines += ["", "| metric | candidate | champion |", "|---|---:|---:|"]
        champ = self.champion.scalars() if self.champion else {}
        for name, value in self.candidate.scalars().items():
            other = f"{champ[name]:.4f}" if name in champ else "—"
            lines.append(f"| {name} | {value:.4f} | {other} |")
        lines += ["", "| class | recall | precision |", "|---|---:|---:|"]
        for cls, r in self.candidate.per_class_recall.items():
            lines.append(f"| {cls} | {r:.4f} | {self.candidate.per_class_precision[cls]:.4f} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "decision": self.decision,
            "champion_version": self.champion_version,
            "checks": [asdict(c) for c in self.checks],
            "candidate": self.candidate.to_dict(),
            "champion": self.champion.to_dict() if self.champion else None,
        }


def decide(
    candidate: GoldMetrics,
    champion: GoldMetrics | None,
    policy: GateConfig,
    champion_version: str | None = None,
) -> GateReport:
    """Apply the gate policy. Fails closed; lists every violated check."""
    checks: list[Check] = [
        Check(
            "gold_labels",
            candidate.n,
            policy.min_gold_labels,
            candidate.n >= policy.min_gold_labels,
            f">= {policy.min_gold_labels} gold labels (too few: no decision on thin evidence)",
        )
    ]
    values = candidate.scalars()
    for metric, floor in policy.floors.items():
        hib = HIGHER_IS_BETTER[metric]
        ok = values[metric] >= floor if hib else values[metric] <= floor
        checks.append(
            Check(f"{metric}_floor", values[metric], floor, ok, f"{'>=' if hib else '<='} {floor}")
        )
    for cls, recall in candidate.per_class_recall.items():
        checks.append(
            Check(
                f"recall[{cls}]",
                recall,
                policy.min_class_recall,
                recall >= policy.min_class_recall,
                f">= {policy.min_class_recall}",
            )
        )
    if champion is not None:
        base = champion.scalars()
        for metric, tol in policy.max_regression.items():
            hib = HIGHER_IS_BETTER[metric]
            limit = base[metric] - tol if hib else base[metric] + tol
            ok = values[metric] >= limit if hib else values[metric] <= limit
            checks.append(
                Check(
                    f"{metric}_vs_champion",
                    values[metric],
                    limit,
                    ok,
                    f"{'drop' if hib else 'rise'} <= {tol} vs champion {base[metric]:.4f}",
                )
            )
    # NaN compares false everywhere, so a NaN metric fails its check: closed by default.
    passed = all(c.passed for c in checks)
    return GateReport(passed, candidate, champion, champion_version, checks)


def plot_confusion(metrics: GoldMetrics, classes: tuple[str, ...], title: str) -> bytes:
    """PNG of the confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    fig.colorbar(im, ax=ax)
    return _png(fig)


def plot_reliability(probs: np.ndarray, y: np.ndarray, title: str) -> bytes:
    """PNG of the reliability diagram: accuracy per confidence bin vs the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0, 1, ECE_BINS + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, ECE_BINS - 1)
    acc = [correct[which == b].mean() if (which == b).any() else np.nan for b in range(ECE_BINS)]
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=110)
    ax.bar(
        edges[:-1],
        acc,
        width=1 / ECE_BINS,
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {expected_calibration_error(probs, y):.3f})")
    ax.legend(loc="upper left")
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# -- gold set, candidate vs champion ----------------------------------------------------


@dataclass
class GoldSet:
    ids: list[str]
    label_event_ids: list[str]
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) class indices
    snapshot_id: str


def load_gold_set(store: Any, cfg: Any) -> GoldSet:
    """The gold holdout's latest human labels and images, streamed from the store, and a
    snapshot of exactly which examples and label events they were."""
    from tasks.store import EXAMPLES, gold_mask, resolve_labels
    from tasks.training import decode_image

    classes = {c: i for i, c in enumerate(cfg.taxonomy.classes)}
    resolved = resolve_labels(store, confidence_floor=1.1, max_model_share=0.0)  # human only
    human = {
        ex: (lab, ev)
        for ex, lab, kind, ev in zip(
            resolved.column("example_id").to_pylist(),
            resolved.column("label").to_pylist(),
            resolved.column("source_kind").to_pylist(),
            resolved.column("event_id").to_pylist(),
            strict=True,
        )
        if kind == "human" and lab in classes
    }
    gold_ids = [
        e
        for e, g in zip(
            human, gold_mask(list(human), cfg.gold.fraction, cfg.gold.salt), strict=True
        )
        if g
    ]
    wanted = set(gold_ids)
    ids, images = [], []
    for batch in store.iter_batches(EXAMPLES, ["example_id", "image"], batch_size=4096):
        for ex, data in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            if ex in wanted:
                ids.append(ex)
                images.append(decode_image(data, cfg.train.image_size, cfg.train.channels))
    events = [human[e][1] for e in ids]
    snapshot_id = store.write_snapshot(ids, events, purpose="gold", run_id="gold") if ids else ""
    size, ch = cfg.train.image_size, cfg.train.channels
    x = (
        torch.from_numpy(np.stack(images))
        if images
        else torch.zeros(0, ch, size, size, dtype=torch.uint8)
    )
    y = torch.tensor([classes[human[e][0]] for e in ids], dtype=torch.long)
    return GoldSet(ids, events, x, y, snapshot_id)


@dataclass
class Evaluation:
    gold: GoldSet
    candidate: GoldMetrics
    candidate_probs: np.ndarray
    champion: GoldMetrics | None
    champion_version: str | None


def load_model(uri: str) -> torch.nn.Module:
    import mlflow

    return mlflow.pytorch.load_model(uri, map_location="cpu").eval()


def evaluate_candidate_and_champion(cfg: Any, candidate_uri: str) -> Evaluation:
    """Both models on the same gold snapshot, in the same run."""
    import mlflow

    from tasks.registry import CHAMPION, get_client, version_by_alias
    from tasks.store import Store

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    gold = load_gold_set(Store(cfg.store.root), cfg)
    classes = tuple(cfg.taxonomy.classes)
    candidate, probs = evaluate_model(load_model(candidate_uri), gold.x, gold.y, classes)
    champ_version = version_by_alias(
        get_client(cfg.mlflow.tracking_uri), cfg.mlflow.model_name, CHAMPION
    )
    champion = None
    if champ_version is not None:
        champion, _ = evaluate_model(
            load_model(f"models:/{cfg.mlflow.model_name}@{CHAMPION}"), gold.x, gold.y, classes
        )
    return Evaluation(
        gold, candidate, probs, champion, str(champ_version.version) if champ_version else None
    )


# -- monitoring the live champion -------------------------------------------------------


@dataclass(frozen=True)
class MonitorReport:
    model_name: str
    champion_version: str | None  # before any action
    action: str  # ok | rolled_back | no_champion | insufficient_gold
    n_gold: int
    metrics: dict[str, float]
    baseline: dict[str, float]  # the champion's gate-time metrics
    regressions: list[str]
    rolled_back_to: str | None = None

    def to_markdown(self) -> str:
        lines = [
            f"# Monitor: **{self.action.upper()}**",
            "",
            f"Model {self.model_name}, champion "
            f"{'v' + self.champion_version if self.champion_version else 'none'}; "
            f"gold labels now: {self.n_gold}.",
            "",
        ]
        if self.metrics:
            lines += ["| metric | at gate | now |", "|---|---:|---:|"]
            for k, v in self.metrics.items():
                b = self.baseline.get(k)
                lines.append(
                    f"| {k} | {b:.4f} | {v:.4f} |" if b is not None else f"| {k} | — | {v:.4f} |"
                )
        if self.regressions:
            lines += ["", "Regressions beyond tolerance:", *[f"- {r}" for r in self.regressions]]
        if self.rolled_back_to:
            lines += ["", f"Rolled back: champion is now v{self.rolled_back_to}."]
        return "\n".join(lines) + "\n"


def monitor_champion(cfg: Any) -> MonitorReport:
    """Re-evaluate the champion on the current gold holdout; roll back when it has
    regressed beyond `monitor.tolerance` against its own gate-time metrics."""
    from tasks.registry import CHAMPION, get_client, rollback, version_by_alias
    from tasks.store import Store

    name = cfg.mlflow.model_name
    client = get_client(cfg.mlflow.tracking_uri)
    champ = version_by_alias(client, name, CHAMPION)
    if champ is None:
        return MonitorReport(name, None, "no_champion", 0, {}, {}, [])
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    gold = load_gold_set(Store(cfg.store.root), cfg)
    if len(gold.y) < cfg.monitor.min_gold_labels:
        return MonitorReport(name, str(champ.version), "insufficient_gold", len(gold.y), {}, {}, [])
    now, _ = evaluate_model(
        load_model(f"models:/{name}@{CHAMPION}"), gold.x, gold.y, tuple(cfg.taxonomy.classes)
    )
    metrics = now.scalars()
    baseline = {k: float(champ.tags[f"gate.{k}"]) for k in metrics if f"gate.{k}" in champ.tags}
    regressions = []
    for metric, tol in cfg.monitor.tolerance.items():
        if metric not in baseline:
            continue
        delta = metrics[metric] - baseline[metric]
        worse = -delta if HIGHER_IS_BETTER[metric] else delta
        if not worse <= tol:  # NaN counts as a regression
            regressions.append(
                f"{metric} {baseline[metric]:.4f} -> {metrics[metric]:.4f} "
                f"(worse by {worse:.4f} > tolerance {tol})"
            )
    client.set_model_version_tag(
        name, champ.version, "monitor.last_accuracy", f"{now.accuracy:.6f}"
    )
    if not regressions:
        return MonitorReport(name, str(champ.version), "ok", now.n, metrics, baseline, [])
    result = rollback(client, name, reason="monitor: " + "; ".join(regressions))
    return MonitorReport(
        name,
        str(champ.version),
        "rolled_back",
        now.n,
        metrics,
        baseline,
        regressions,
        rolled_back_to=result.to_version,
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="evaluate-on-gold", cache_policy=NO_CACHE)
def evaluate_on_gold(cfg: Any, candidate_uri: str) -> Evaluation:
    """Evaluate the candidate and the current champion on the same gold snapshot."""
    ev = evaluate_candidate_and_champion(cfg, candidate_uri)
    get_run_logger().info(
        "gold (%d labels): candidate accuracy %.4f%s",
        ev.candidate.n,
        ev.candidate.accuracy,
        f", champion v{ev.champion_version} {ev.champion.accuracy:.4f}" if ev.champion else "",
    )
    return ev


@task(name="gate-candidate", cache_policy=NO_CACHE)
def gate_candidate(cfg: Any, evaluation: Evaluation) -> GateReport:
    """Apply the gate policy and publish its report as a markdown artifact."""
    report = decide(
        evaluation.candidate, evaluation.champion, cfg.gate, evaluation.champion_version
    )
    create_markdown_artifact(
        report.to_markdown(), key="gate-report", description=f"Gate: {report.decision}"
    )
    (get_run_logger().info if report.passed else get_run_logger().warning)(
        "gate %s", report.summary()
    )
    return report


@task(name="monitor-champion", cache_policy=NO_CACHE)
def check_champion(cfg: Any) -> MonitorReport:
    """Re-evaluate the champion on current gold; roll back on regression."""
    report = monitor_champion(cfg)
    create_markdown_artifact(
        report.to_markdown(), key="monitor-report", description=f"Monitor: {report.action}"
    )
    (get_run_logger().warning if report.action == "rolled_back" else get_run_logger().info)(
        "monitor: %s%s",
        report.action,
        f" ({'; '.join(report.regressions)})" if report.regressions else "",
    )
    return report
