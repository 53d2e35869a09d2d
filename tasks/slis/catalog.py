"""Every label-health metric semilabel reports: its Prometheus name, what it means (the
`# HELP` text), and, for those that can breach, the runbook line an on-call person
acts on. The dashboard and the alert rules under `dashboards/` use these names only.
Times are in seconds, Prometheus's base unit (`promtool check metrics` rejects hours)."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "semilabel_"


@dataclass(frozen=True)
class Metric:
    name: str  # without the prefix
    help: str
    labels: tuple[str, ...] = ()
    runbook: str = ""

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        # M1 coverage
        Metric("label_coverage_ratio", "Share of stored examples with a label (training or gold)."),
        Metric(
            "label_coverage_source_ratio",
            "Share of stored examples whose label comes from each kind of source.",
            ("source_kind",),
        ),
        Metric(
            "label_class_share_ratio", "Share of the training labels in each class.", ("class",)
        ),
        # M2 freshness
        Metric(
            "label_age_median_seconds",
            "Median age of the training labels.",
            runbook="Labels are stale: sample and annotate recent data (semilabel sample), "
            "then semilabel annotate pull/import.",
        ),
        Metric(
            "ingest_to_label_median_seconds",
            "Median time from an example's ingest to its first label event.",
        ),
        # M3 accuracy on gold
        Metric(
            "label_accuracy_gold_ratio",
            "Accuracy of each label source on gold examples with a human label.",
            ("source_kind", "source"),
            runbook="A label source disagrees with gold: check the labeling function or "
            "annotator named in `source`; weak labeling quarantines functions below "
            "weak_labeling.accuracy_floor.",
        ),
        # M4 diversity
        Metric("label_sources", "Distinct label sources in the label log."),
        Metric(
            "label_source_agreement_ratio",
            "Mean pairwise agreement of labeling functions on rows both vote on "
            "(latest label matrix).",
        ),
        # M5 pseudo-labels
        Metric(
            "pseudo_label_precision_ratio",
            "Share of pseudo-labels the threshold keeps on gold dev that are right.",
            runbook="Pseudo-labels feed the model its own mistakes: pseudo-labeling was "
            "switched off for the run; add human labels (semilabel sample) before the next.",
        ),
        Metric("pseudo_label_coverage_ratio", "Share of gold dev examples the threshold keeps."),
        # M6 drift
        Metric(
            "drift_mmd_p_value",
            "MMD permutation-test p-value of model embeddings (low: drift).",
            ("check",),
            runbook="The model sees the two sets differently: see drift_breach for the "
            "check (newest batch, or labeled against unlabeled) and sample the drifted slice "
            "for annotation (health.drift.on_breach: sample).",
        ),
        Metric(
            "drift_intensity_js",
            "Jensen-Shannon distance of pixel histograms.",
            ("check",),
            runbook="The images look different (brightness, contrast, colour): see "
            "drift_breach for the check; a new camera or source shows here first.",
        ),
        Metric(
            "drift_breach",
            "1 when a drift check breached its threshold.",
            ("check",),
            runbook="The data moved: look at the newest ingest batch (check=newest_batch) or "
            "the labeled set's bias (check=labeled_vs_unlabeled); sample the drifted slice "
            "for annotation (health.drift.on_breach: sample).",
        ),
        # M7 retrain success
        Metric(
            "retrain_success_ratio",
            "Share of the last retrains that completed.",
            runbook="Retrains fail: open the failed flow runs in the Prefect UI; their logs "
            "name the stage and the record.",
        ),
        Metric("retrains_counted", "Retrains the success ratio is over."),
        # M8 backlog
        Metric(
            "annotation_backlog",
            "Open annotation requests.",
            ("stream",),
            runbook="The annotation backlog grows: staff the Label Studio project or lower "
            "sampling.budget.*.",
        ),
        Metric(
            "annotation_backlog_oldest_seconds",
            "Age of the oldest open annotation request.",
            ("stream",),
            runbook="Annotation requests wait too long: pull answers (semilabel annotate "
            "pull) or staff the project.",
        ),
        # M9 feedback
        Metric(
            "model_influenced_label_ratio",
            "Share of training labels a model influenced.",
            runbook="Models label their own training data: lower labels.max_model_share or "
            "add human labels.",
        ),
        # M10 cost
        Metric("label_cost_per_verified_label", "Spend on labels per human-verified label."),
        # the gate and the run
        Metric("gate_passed", "1 when the last gate passed."),
        Metric("gate_gold_metric", "The last candidate's gold test metrics.", ("metric",)),
        Metric(
            "class_recall_min_ratio",
            "Worst per-class recall of the last candidate on gold test.",
            runbook="A class collapsed: look at its labels (per-class coverage) and the "
            "confusion matrix in the gate report; the gate refuses it below "
            "gate.min_class_recall.",
        ),
        Metric(
            "gold_shift",
            "1 when the monitor found the champion and the version a rollback would restore "
            "equally worse on the current gold.",
            runbook="The gold labels or the data moved, not the model: look at recent gold "
            "corrections and new data (semilabel lineage), then semilabel retrain.",
        ),
        Metric("run_success", "1 when the last run of the flow completed.", ("flow",)),
        Metric("run_timestamp_seconds", "When the flow last computed its SLIs.", ("flow",)),
        Metric("health_breaches", "Label-health breaches in the flow's last run.", ("flow",)),
        Metric(
            "sli_breach",
            "1 when any series of the SLI breached its configured threshold (health.*) in the "
            "last run that measured it; alert rules use this, so thresholds live in config.",
            ("sli",),
        ),
    )
}
