"""Monitoring the live champion: re-evaluate it on the current gold test part (human
corrections and new gold labels arrive between runs) and roll back automatically when
its bounds show it worse than at its gate by more than `monitor.tolerance`, the same
statistics as the gate's (`gate.confidence`). Before it moves the alias it measures the
version it would restore on the same gold: when that one is no better, the gold or the
data moved, not the model, and walking the champion back one version per run would fix
nothing, so it reports `gold_shifted` and label health raises an alert instead.

The monitor measures one pinned version and rolls back only that version: if the
champion moved meanwhile, it says so and changes nothing. A champion without gate
metrics (registered by hand, say) is `no_baseline`: the monitor cannot tell whether it
regressed, so it never reports it as ok.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from configs.gate import MonitorConfig
from tasks.registry.aliases import (
    ChampionMoved,
    Lease,
    RegistryLeaseLost,
    RegistryRef,
    RollbackError,
    RollbackResult,
    champion_version,
    gate_baseline,
    get_version,
    rollback,
    rollback_target,
    tag_version,
)
from tasks.registry.model_format import load_classifier
from tasks.store import TEST, Store
from tasks.validation import (
    METRICS,
    Bounds,
    GoldMetrics,
    MonitorReport,
    PairedCounts,
    gold_metrics,
    paired_accuracy_bounds,
    proportion_bounds,
    regressions_since_gate,
)
from tasks.validation.evidence import Predictions, bootstrap_metrics, percentile_bounds
from tasks.validation.gold import GoldSelection, GoldSpec, predict_gold, select_gold
from tasks.validation.reports import monitor_markdown

log = logging.getLogger(__name__)


class ChampionNotVerified(RuntimeError):
    """A strict monitor run left something for a person (`MonitorReport.settled`)."""

    def __init__(self, report: MonitorReport):
        self.report = report
        super().__init__(
            f"monitor: {report.action} for {report.model_name} "
            f"{'v' + report.champion_version if report.champion_version else ''}".rstrip()
            + (f": {report.detail}" if report.detail else "")
        )


@dataclass(frozen=True)
class Evidence:
    """How sure the monitor must be, and how it resamples: the gate's own settings."""

    confidence: float = 0.95
    bootstrap_samples: int = 1000
    seed: int = 0


def metric_bounds(
    probs: np.ndarray, y: np.ndarray, metrics: GoldMetrics, evidence: Evidence
) -> dict[str, Bounds]:
    """Accuracy, macro-F1 and ECE of one model on gold (`metrics`, from `probs`), each
    with its bounds."""
    k = probs.shape[1]
    pred = Predictions.of(probs)
    boot = bootstrap_metrics(y, [pred], k, samples=evidence.bootstrap_samples, seed=evidence.seed)[
        0
    ]
    return {
        "accuracy": proportion_bounds(int((pred.pred == y).sum()), len(y), evidence.confidence),
        "macro_f1": percentile_bounds(metrics.macro_f1, boot["macro_f1"], evidence.confidence),
        "ece": percentile_bounds(metrics.ece, boot["ece"], evidence.confidence),
    }


def monitor_champion(
    store: Store,
    spec: GoldSpec,
    ref: RegistryRef,
    policy: MonitorConfig,
    *,
    trust_pickle: bool,
    evidence: Evidence = Evidence(),
    lease: Lease | None = None,
) -> MonitorReport:
    """Measure the champion on current gold; roll it back on a significant regression,
    unless the version it would restore is no better on the same gold (see module).
    `lease`: the run's registry lock, checked before the rollback writes."""
    name = ref.model_name
    version = champion_version(ref)
    if version is None:
        return MonitorReport(name, None, "no_champion", 0, {}, {}, [], detail="no champion yet")
    baseline = gate_baseline(get_version(ref, version))
    gold = select_gold(store, spec, TEST)  # the example ids only: no image read yet
    if len(gold) < policy.min_gold_labels:
        return _too_little_gold(name, version, len(gold), baseline, policy.min_gold_labels)
    measured = _measure(ref, version, store, gold, spec, baseline, evidence, trust_pickle)
    tag_version(ref, version, "monitor.last_accuracy", f"{measured.now.accuracy:.6f}")
    enabled = [m for m in METRICS if getattr(policy.tolerance, m) is not None]
    missing = [m for m in enabled if m not in baseline]
    if missing:
        return measured.report("no_baseline", _no_baseline_detail(version, missing))
    regressions = regressions_since_gate(measured.bounds, baseline, policy)
    if not regressions:
        return measured.report("ok")
    return _act_on_regression(ref, measured, regressions, trust_pickle, lease)


@dataclass(frozen=True)
class _Measured:
    """The champion measured on today's gold, beside its gate-time baseline."""

    model_name: str
    version: str
    store: Store
    gold: GoldSelection  # the examples measured; their images are read in batches
    spec: GoldSpec
    probs: np.ndarray  # (N, K) on the gold test examples
    now: GoldMetrics
    bounds: dict[str, Bounds]
    baseline: dict[str, float]
    evidence: Evidence

    def report(
        self,
        action: str,
        detail: str = "",
        regressions: list[str] | None = None,
        rolled_back_to: str | None = None,
    ) -> MonitorReport:
        return MonitorReport(
            self.model_name, self.version, action, self.now.n, self.now.scalars(),
            self.baseline, list(regressions or []), rolled_back_to=rolled_back_to,
            detail=detail, absent_classes=self.now.absent_classes, bounds=self.bounds,
            confidence=self.evidence.confidence,
        )  # fmt: skip


def _too_little_gold(
    name: str, version: str, n: int, baseline: dict[str, float], minimum: int
) -> MonitorReport:
    return MonitorReport(
        name,
        version,
        "insufficient_gold",
        n,
        {},
        baseline,
        [],
        detail=f"{n} gold test labels, fewer than monitor.min_gold_labels "
        f"({minimum}): nothing was judged",
    )


def _no_baseline_detail(version: str, missing: list[str]) -> str:
    return (
        f"v{version} has no gate-time {', '.join(missing)} (tags gate.<metric>): "
        "it was not registered through semilabel's gate (e.g. by hand), so whether it "
        "regressed cannot be told. Run `semilabel retrain` to gate a champion."
    )


def _probabilities(
    ref: RegistryRef,
    version: str,
    store: Store,
    gold: GoldSelection,
    spec: GoldSpec,
    trust_pickle: bool,
) -> np.ndarray:
    """Class probabilities (N, K) of the pinned `version` on the `gold` examples, in
    their order, their images streamed in batches."""
    model = load_classifier(ref.version_uri(version), ref.tracking_uri, trust_pickle=trust_pickle)
    return predict_gold(store, spec, gold, [model]).probs[0]


def _measure(
    ref: RegistryRef,
    version: str,
    store: Store,
    gold: GoldSelection,
    spec: GoldSpec,
    baseline: dict[str, float],
    evidence: Evidence,
    trust_pickle: bool,
) -> _Measured:
    probs = _probabilities(ref, version, store, gold, spec, trust_pickle)
    now = gold_metrics(probs, gold.y, spec.classes)
    bounds = metric_bounds(probs, gold.y, now, evidence)
    return _Measured(
        ref.model_name, version, store, gold, spec, probs, now, bounds, baseline, evidence
    )


def _act_on_regression(
    ref: RegistryRef,
    measured: _Measured,
    regressions: list[str],
    trust_pickle: bool,
    lease: Lease | None,
) -> MonitorReport:
    """Roll the regressed champion back, unless it is no longer the champion or the
    version a rollback would restore is no better on the same gold."""
    name, version = ref.model_name, measured.version

    def judged(action: str, detail: str = "", to: str | None = None) -> MonitorReport:
        return measured.report(action, detail, regressions, to)

    moved = champion_version(ref)
    if moved != version:  # nothing to do for a version that is no longer the champion
        return judged(
            "champion_moved",
            f"{name}: champion moved from v{version} to v{moved} during this run; "
            f"v{version} was measured, so v{moved} is not rolled back.",
        )
    target = rollback_target(ref, version)
    if target is not None:
        # Before walking the champion back, the version it would restore on the same gold:
        # if it is no better, the gold or the data moved, not the model.
        gain = _gain_of(ref, target, measured, trust_pickle)
        if gain.low <= 0:
            return judged("gold_shifted", _gold_shifted_detail(version, target, measured, gain))
    try:
        result = rollback(
            ref, "monitor: " + "; ".join(regressions), expected_champion=version, lease=lease
        )
    except ChampionMoved as exc:
        return judged("champion_moved", str(exc))
    except RegistryLeaseLost as exc:
        return judged("regressed_no_rollback", str(exc))
    except RollbackError as exc:
        return judged("regressed_no_rollback", str(exc))
    return judged("rolled_back", to=result.to_version)


def _gain_of(ref: RegistryRef, target: str, measured: _Measured, trust_pickle: bool) -> Bounds:
    """Accuracy of `target` minus the measured champion's, paired on the same gold
    examples (the measured selection, read again in batches)."""
    y = measured.gold.y
    target_probs = _probabilities(
        ref, target, measured.store, measured.gold, measured.spec, trust_pickle
    )
    return paired_accuracy_bounds(
        PairedCounts.of(target_probs.argmax(1) == y, measured.probs.argmax(1) == y),
        measured.evidence.confidence,
    )


def _gold_shifted_detail(version: str, target: str, measured: _Measured, gain: Bounds) -> str:
    return (
        f"v{version} regressed on the current gold, but v{target}, the version a "
        f"rollback would restore, is no better on the same {measured.now.n} examples (accuracy "
        f"v{target} - v{version}: {gain}). The gold labels or the data moved, not the "
        "model, so nothing was rolled back. Look at recent gold corrections and "
        "newly ingested data (`semilabel lineage`, the label-health report), then "
        "`semilabel retrain` on the current labels."
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="monitor-champion", cache_policy=NO_CACHE)
def check_champion(
    store_root: str,
    spec: GoldSpec,
    ref: RegistryRef,
    policy: MonitorConfig,
    trust_pickle: bool,
    evidence: Evidence = Evidence(),
    lease: Lease | None = None,
) -> MonitorReport:
    """Re-evaluate the champion on current gold; roll back on a significant regression."""
    report = monitor_champion(
        Store(store_root),
        spec,
        ref,
        policy,
        trust_pickle=trust_pickle,
        evidence=evidence,
        lease=lease,
    )
    create_markdown_artifact(
        monitor_markdown(report), key="monitor-report", description=f"Monitor: {report.action}"
    )
    logger = get_run_logger()
    (logger.info if report.healthy else logger.warning)(
        "monitor: %s%s%s",
        report.action,
        f" ({'; '.join(report.regressions)})" if report.regressions else "",
        f": {report.detail}" if report.detail else "",
    )
    return report


@task(name="rollback-champion", cache_policy=NO_CACHE)
def roll_back_champion(ref: RegistryRef, reason: str, lease: Lease | None = None) -> RollbackResult:
    """Move `champion` back to the previous passing version, recording `reason`
    (`lease`: the run's registry lock, checked before each alias write)."""
    result = rollback(ref, reason, lease=lease)
    create_markdown_artifact(
        f"# Rollback\n\n{ref.model_name}: champion v{result.from_version} -> "
        f"v{result.to_version}\n\nReason: {reason}\n",
        key="rollback",
    )
    get_run_logger().warning(
        "rolled back %s: champion v%s -> v%s",
        ref.model_name,
        result.from_version,
        result.to_version,
    )
    return result
