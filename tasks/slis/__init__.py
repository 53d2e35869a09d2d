"""Label health: the ten label SLIs every retrain and monitor run computes (`compute`,
per family over the store's Arrow columns, `columns`), drift checks (`drift`, run on a
store by `drift_check`), what a run measures beyond the store (`measure`), and where
SLIs go (`record`): the store's `slis` dataset (history that survives without MLflow)
and each flow's latest computation (`latest`, what a scrape serves), MLflow metrics
under `sli/`, and a Prometheus Pushgateway when `metrics.pushgateway_url` is set. The
flows' tasks (`run`) also publish them as Prefect artifacts (`label-health-slis`, and
`label-health` listing each breach with its runbook line). `inputs.LabelHealthInputs`
is what they all take from the config.
"""

from tasks.slis.compute import RunFacts, Sli, compute_slis
from tasks.slis.drift import DriftCheck
from tasks.slis.drift_check import check_drift, drift_gate_checks
from tasks.slis.health import LabelHealth, LabelHealthAlert
from tasks.slis.inputs import LabelHealthInputs
from tasks.slis.measure import retrain_outcomes
from tasks.slis.record import label_health, record_slis
from tasks.slis.run import drift_task, monitor_facts, report_label_health

__all__ = [
    "DriftCheck",
    "LabelHealth",
    "LabelHealthAlert",
    "LabelHealthInputs",
    "RunFacts",
    "Sli",
    "check_drift",
    "compute_slis",
    "drift_gate_checks",
    "drift_task",
    "label_health",
    "monitor_facts",
    "record_slis",
    "report_label_health",
    "retrain_outcomes",
]
