"""One run's label health: its breaches, its rows and markdown for a person, and the
rows every run adds (its success, time, breach count, and one breach flag per SLI)."""

import pytest

from tasks.slis.catalog import METRICS
from tasks.slis.compute import Sli
from tasks.slis.health import LabelHealth, LabelHealthAlert, breach_rows, run_rows
from tasks.store import utcnow

AGE = Sli("label_age_median_seconds", 90000.0, (), 72000.0, True)
BACKLOG_OK = Sli("annotation_backlog", 3.0, (("stream", "train"),), 1000, False)
BACKLOG_BAD = Sli("annotation_backlog", 2000.0, (("stream", "gold"),), 1000, True)
COVERAGE = Sli("label_coverage_ratio", 0.123456)


def test_breaches_rows_and_markdown():
    health = LabelHealth("monitor", "run-1", [AGE, BACKLOG_OK, BACKLOG_BAD, COVERAGE])
    assert health.breaches == [AGE, BACKLOG_BAD]
    assert health.rows() == [
        {"sli": "label_age_median_seconds", "value": 90000.0, "threshold": 72000.0}
        | {"status": "BREACH"},
        {"sli": "annotation_backlog{stream=train}", "value": 3.0, "threshold": 1000}
        | {"status": "ok"},
        {"sli": "annotation_backlog{stream=gold}", "value": 2000.0, "threshold": 1000}
        | {"status": "BREACH"},
        {"sli": "label_coverage_ratio", "value": 0.1235, "threshold": "—", "status": "—"},
    ]
    md = health.markdown()
    assert md.startswith("# Label health: 2 BREACH(ES)\n")
    lines = md.splitlines()
    backlog = METRICS["annotation_backlog"].runbook
    assert f"| annotation_backlog stream=gold | 2000.0000 | 1000 | {backlog} |" in lines
    age = METRICS["label_age_median_seconds"].runbook
    assert f"| label_age_median_seconds | 90000.0000 | 72000.0 | {age} |" in lines
    assert "label_coverage" not in md and "stream=train" not in md


def test_a_healthy_run_says_ok():
    health = LabelHealth("retrain", "run-2", [BACKLOG_OK, COVERAGE])
    assert health.breaches == []
    assert health.markdown() == "# Label health: OK\n\n2 SLIs, no breach (retrain run-2).\n"


def test_the_alert_names_each_breach():
    health = LabelHealth("monitor", "run-1", [AGE, BACKLOG_OK, BACKLOG_BAD])
    with pytest.raises(LabelHealthAlert, match="2 label-health breach") as caught:
        raise LabelHealthAlert(health)
    assert caught.value.health is health
    assert "label_age_median_seconds {}; annotation_backlog {'stream': 'gold'}" in str(caught.value)


def test_one_breach_flag_per_sli_with_a_threshold():
    health = LabelHealth("monitor", "run-1", [AGE, BACKLOG_OK, BACKLOG_BAD, COVERAGE])
    assert breach_rows(health) == [
        Sli("sli_breach", 1.0, (("sli", "annotation_backlog"),)),  # any series breached
        Sli("sli_breach", 1.0, (("sli", "label_age_median_seconds"),)),
    ]
    fine = LabelHealth("monitor", "run-1", [BACKLOG_OK])
    assert breach_rows(fine) == [Sli("sli_breach", 0.0, (("sli", "annotation_backlog"),))]


def test_the_run_rows():
    health = LabelHealth("retrain", "run-3", [AGE, COVERAGE])
    before = utcnow().timestamp()
    success, at, breaches, *flags = run_rows(health)
    assert success == Sli("run_success", 1.0, (("flow", "retrain"),))
    assert at.metric == "run_timestamp_seconds" and at.labels == (("flow", "retrain"),)
    assert before <= at.value <= utcnow().timestamp()
    assert breaches == Sli("health_breaches", 1.0, (("flow", "retrain"),))
    assert flags == breach_rows(health)
