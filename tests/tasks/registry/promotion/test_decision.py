"""The retrain's decision as people read it, from real gate reports: the decision word, the
summary rows, the one-line headline, the folded checks, and the gate task's artifact in a
real Prefect flow run."""

import numpy as np
import torch
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.runtime import flow_run

from tasks.registry.promotion import (
    Evaluation,
    RetrainDecision,
    check_lines,
    decision_headline,
    gate_candidate,
)
from tasks.validation import GoldEvidence, decide, gold_metrics
from tasks.validation.gold import GoldSet
from tasks.validation.next_step import GoldPool, next_step
from tasks.validation.reports import gate_markdown
from tests.tasks.validation.test_gate import ACCURACY_ONLY, DEFAULT, balanced, evidence, with_errors


def _decision(**kw) -> RetrainDecision:
    fields = dict(
        model_name="digits",
        version="5",
        gate="passed",
        promoted=True,
        reason="gate passed; promoted",
        champion_version="5",
        previous_champion="4",
        gate_summary="passed: 3 checks",
        mlflow_run_id="run-1",
        gold_accuracy=0.99,
        gold_macro_f1=0.98,
        gold_sizes={"test": 110, "dev": 90},
    )
    return RetrainDecision(**{**fields, **kw})


def test_the_decision_is_promoted_undecided_or_rejected():
    assert _decision().decision == "promoted"
    assert _decision(gate="undecided", promoted=False).decision == "undecided"
    assert _decision(gate="passed", promoted=False).decision == "rejected"  # champion moved
    assert _decision(gate="rejected", promoted=False).decision == "rejected"


def test_the_rows_say_what_was_registered_why_and_what_failed_after():
    decision = _decision(
        checks=(("accuracy_floor", "0.99 [0.96, 1.00] lower bound >= 0.9: pass"),),
        next_step="Nothing.",
        next_labels="40 requests",
        warnings=("the label-health push failed",),
    )
    rows = [(r["metric"], r["value"]) for r in decision.rows()]
    assert rows == [
        ("registered", "digits v5"),
        ("decision", "promoted"),
        ("why", "gate passed; promoted"),
        ("accuracy_floor", "0.99 [0.96, 1.00] lower bound >= 0.9: pass"),
        ("champion now", "v5"),
        ("previous champion", "v4"),
        ("gold test / dev labels", "110 / 90"),
        ("MLflow run", "run-1"),
        ("next step", "Nothing."),
        ("to label next", "40 requests"),
        ("warning", "the label-health push failed"),
    ]
    assert decision.state_message() == "digits v5 promoted; the label-health push failed"
    bare = _decision(promoted=False, champion_version=None, previous_champion=None)
    assert [r["value"] for r in bare.rows()][3:5] == ["none", "none"]
    assert bare.state_message() == "digits v5 rejected"


def test_the_checks_fold_the_class_recalls_that_did_not_fail_into_one_row():
    y = balanced(110, 10)
    report = decide(evidence(y, with_errors(y, 10, [0]), tuple("0123456789")), DEFAULT)
    lines = dict(check_lines(report))
    assert "gold_labels" not in lines and "labels_per_class" not in lines  # routine passes
    assert "ece_ceiling" not in lines  # disabled
    assert not any(name.startswith("recall[") for name in lines)
    folded = lines["recall (per class)"]
    assert folded.startswith("10 of 10 classes pass (lower bound >= 0.4); lowest bound recall[0] ")
    assert lines["accuracy_floor"] == "0.9909 [0.9576, 0.9995] lower bound >= 0.9: pass"


def test_a_failing_class_recall_keeps_its_own_row():
    y = balanced(2000, 2)
    cand = with_errors(y, 2, list(range(0, 2000, 2))[:700])  # class a: 700 of 1000 wrong
    lines = dict(check_lines(decide(evidence(y, cand, ("a", "b")), DEFAULT)))
    assert lines["recall[a]"].endswith(": FAIL")
    assert lines["recall (per class)"].startswith("1 of 2 classes pass")


def test_the_headline_says_the_verdict_and_why_in_one_line():
    y = balanced(200, 2)
    gained = decide(evidence(y, y, ("a", "b"), with_errors(y, 2, range(40))), ACCURACY_ONLY, "4")
    assert decision_headline(_decision(), gained) == (
        "PROMOTED: v5 is the champion (was v4); a significant gain"
    )
    y5 = balanced(500, 2)  # agreeing everywhere on 500 labels: shown no worse, passed
    same = decide(evidence(y5, y5, ("a", "b"), y5), ACCURACY_ONLY, "4")
    assert decision_headline(_decision(previous_champion=None), same) == (
        "PROMOTED: v5 is the champion; no significant gain over v4"
    )
    moved = _decision(promoted=False, reason="promo: champion moved from v4 to v6")
    assert decision_headline(moved, same) == (
        "NOT PROMOTED: v5 passed its gate, but promo: champion moved from v4 to v6"
    )
    cand = with_errors(y, 2, list(range(0, 200, 2))[:70])  # class a: 70 of 100 wrong
    rejected = decide(evidence(y, cand, ("a", "b")), DEFAULT)
    assert decision_headline(_decision(gate="rejected", promoted=False), rejected) == (
        "REJECTED: v5 failed 3 of 6 checks (accuracy_floor, macro_f1_floor, 1 class recall)"
    )
    thin = decide(evidence(balanced(20, 2), balanced(20, 2), ("a", "b")), DEFAULT)
    assert decision_headline(_decision(gate="undecided", promoted=False), thin).startswith(
        "UNDECIDED: v5 is not promoted, the champion stays: "
    )


def test_the_gate_task_publishes_its_report_with_the_next_step(prefect_api):
    y = balanced(20, 2)  # too few gold test labels for the default gate: undecided
    p = evidence(y, y, ("a", "b")).candidate  # right on every example
    gold = GoldSet(
        "test",
        [f"e{i}" for i in range(20)],
        [f"ev{i}" for i in range(20)],
        torch.zeros(20, 1, 28, 28, dtype=torch.uint8),
        torch.from_numpy(y),
        "gold-snap",
        {"test": 20, "dev": 18},
    )
    pool = GoldPool(0.2, 0.5, unlabeled=300, n_examples=2000)
    metrics = gold_metrics(p, y, ("a", "b"))
    evaluation = Evaluation(gold, metrics, p, None, None, pool=pool, classes=("a", "b"))

    @flow(name="gate-task-test")
    def gate() -> tuple:
        return gate_candidate(evaluation, DEFAULT, cli_args="--set x=1"), str(flow_run.id)

    report, run_id = gate()
    expected = decide(GoldEvidence(("a", "b"), y, p), DEFAULT, None, gold.sizes)
    assert report.to_dict() == expected.to_dict() and report.verdict == "undecided"
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["gate-report"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    assert artifact.data == gate_markdown(report, next_step(report, pool, "--set x=1"))
    assert "--set x=1" in artifact.data and artifact.description == "Gate: undecided"
    assert np.array_equal(evaluation.evidence().y, y)
