"""The reports people read, rendered from real gate decisions and monitor reports: the gate
report, the decision's description, the monitor report, and the images beside them."""

import io

import numpy as np
from PIL import Image

from tasks.validation import Bounds, GatePolicy, MonitorReport, decide
from tasks.validation.reports import (
    decision_markdown,
    evidence_line,
    gate_markdown,
    monitor_markdown,
    plot_confusion,
    plot_gate,
    plot_reliability,
)
from tests.tasks.validation.test_gate import (
    ACCURACY_ONLY,
    DEFAULT,
    TEN,
    balanced,
    evidence,
    probs,
    with_errors,
)


def _size(png: bytes) -> tuple[int, int]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(png)).size


def test_the_gate_report_reads_verdict_next_step_basis_then_every_check():
    y = balanced(200, 2)
    champion = with_errors(y, 2, range(40))  # 160 of 200 right
    report = decide(evidence(y, y, ("a", "b"), champion), ACCURACY_ONLY, "4", {"dev": 7})
    lines = gate_markdown(report, "Nothing to do.").splitlines()
    assert lines[:5] == [
        "# Gate: **PASSED**",
        "",
        report.summary(),
        "",
        "**Next step:** Nothing to do.",
    ]
    assert lines[6] == (
        "Gold test labels: 200 (gold dev: 7, used only for choosing). Champion: v4. Bounds "
        "are one-sided at 0.95: a floor passes when its lower bound clears it, fails when its "
        "upper bound is below it, and is otherwise undecided."
    )
    checks = lines[10 : 10 + len(report.checks)]  # after the table's header and rule
    assert [row.split(" | ")[0] for row in checks] == [f"| {c.name}" for c in report.checks]
    assert "| accuracy_floor | 1.0000 [0.9851, 1.0000] | 0.9 | lower bound >= 0.9 | pass |" in lines
    assert f"| accuracy | {report.bounds['accuracy']} | 0.8000 |" in lines
    assert (
        f"Accuracy, candidate minus champion on the same examples: {report.gain} (exact "
        f"McNemar p = {2 * 0.5**40:.3g}); a significant gain."
    ) in lines
    assert lines[-4:] == [
        "| class | recall | precision |",
        "|---|---:|---:|",
        "| a | 1.0000 | 1.0000 |",
        "| b | 1.0000 | 1.0000 |",
    ]


def test_a_first_gate_has_no_champion_column_and_no_comparison():
    y = balanced(200, 2)
    report = decide(evidence(y, with_errors(y, 2, range(30)), ("a", "b")), ACCURACY_ONLY)
    md = gate_markdown(report)
    assert "Champion: none (first run: floors only)." in md and "gold dev" not in md
    assert f"| accuracy | {report.bounds['accuracy']} | — |" in md
    assert "candidate minus champion" not in md and "Next step" not in md
    assert "| accuracy_floor | 0.8500 [0.8021, 0.8899] | 0.9 | upper bound < 0.9 | **FAIL** |" in md


def test_each_slice_is_a_row_with_its_difference_and_whether_it_blocks():
    y = balanced(1000, 2)
    source = np.array(["camera-a"] * 900 + ["camera-b"] * 100, dtype=object)
    champion = with_errors(y, 2, range(40))
    candidate = with_errors(y, 2, range(900, 930))
    policy = GatePolicy(**{**ACCURACY_ONLY.__dict__, "slices": ("source",)})
    report = decide(evidence(y, candidate, ("a", "b"), champion, {"source": source}), policy)
    a, b = report.slices
    md = gate_markdown(report)
    d = b.vs_champion
    assert (
        f"| source=camera-b | 100 | {b.accuracy} | -0.3000 [{d.low:+.4f}, {d.high:+.4f}] "
        "| **yes** |"
    ) in md
    assert f"| source=camera-a | 900 | {a.accuracy} | +0.0444 [" in md and md.count("| no |") == 1


def test_the_evidence_line_counts_the_class_recalls_by_outcome():
    y = balanced(2000, 2)
    cand = with_errors(y, 2, list(range(0, 2000, 2))[:700])  # class a: 700 of 1000 wrong
    report = decide(evidence(y, cand, ("a", "b"), y), DEFAULT, "3")
    line = evidence_line(report)
    assert line.startswith("accuracy_floor 0.650 [")
    assert "accuracy_vs_champion -0.350 [" in line and "gold_labels" not in line
    assert line.endswith("recall of 2 classes vs 0.4: 1 pass, 1 FAIL.")


def test_the_description_folds_the_class_recalls_and_names_what_is_off():
    y = balanced(300, 2)  # class "c" has no gold test example: its recall is undecided
    report = decide(evidence(y, y, ("a", "b", "c")), DEFAULT, None)
    text = decision_markdown(
        headline="UNDECIDED",
        report=report,
        snapshot_id="train-s",
        gold_snapshot_id="gold-s",
        champion_after=None,
        previous_after="1",
    )
    lines = text.splitlines()
    assert lines[:2] == ["UNDECIDED", ""]
    (folded,) = [line for line in lines if line.startswith("| recall, 3 classes |")]
    assert folded.endswith("| 0.4 | lower bound >= 0.4 | 2 pass, *undecided*: c |")
    assert (
        "Bounds one-sided at 0.95, on 300 gold test labels (snapshot `gold-s`); training "
        "snapshot `train-s`. Disabled by config: ece_ceiling."
    ) in lines
    assert lines[-1] == "Aliases after this run: `champion` → none, `previous_champion` → v1."


def test_the_description_starts_with_the_verdict_and_keeps_to_the_checks_that_matter():
    y = balanced(110, 10)
    report = decide(evidence(y, with_errors(y, 10, [0]), TEN), DEFAULT)
    text = decision_markdown(
        headline="PROMOTED: v1 is the champion",
        report=report,
        snapshot_id="s",
        gold_snapshot_id="g",
        champion_after="1",
        previous_after=None,
    )
    assert text.splitlines()[0] == "PROMOTED: v1 is the champion"
    # the evidence in one short paragraph right under it (what a collapsed description shows)
    line = text.splitlines()[2]
    assert line.startswith("accuracy_floor 0.991 [0.958, 1.000] vs 0.9: pass; ")
    assert line.endswith("recall of 10 classes vs 0.4: 10 pass.") and len(line) < 200
    assert "| recall, 10 classes | lowest bound: recall[" in text
    assert "accuracy_floor | 0.9909 [0.9576, 0.9995]" in text
    assert len(text.splitlines()) < 20  # one screen


def test_the_monitor_report_shows_gate_time_against_now_and_what_was_done():
    report = MonitorReport(
        "digits",
        "3",
        "rolled_back",
        120,
        {"accuracy": 0.5, "macro_f1": 0.48, "ece": 0.2},
        {"accuracy": 0.99, "macro_f1": 0.99},
        ["accuracy 0.9900 -> 0.5: worse"],
        rolled_back_to="2",
        absent_classes=("c",),
        bounds={"accuracy": Bounds(0.5, 0.42, 0.58)},
        label_health="# Label health\n\nno breach",
        confidence=0.9,
    )
    lines = monitor_markdown(report).splitlines()
    assert lines[:3] == [
        "# Monitor: **ROLLED_BACK**",
        "",
        "Model digits, champion v3; gold test labels now: 120.",
    ]
    assert "| metric | at gate | now [low, high] (one-sided 0.9) |" in lines
    assert "| accuracy | 0.9900 | 0.5000 [0.4200, 0.5800] |" in lines
    assert "| macro_f1 | 0.9900 | 0.4800 |" in lines  # no bounds: the value alone
    assert "| ece | — | 0.2000 |" in lines  # no gate-time value
    assert "Classes with no gold test example: c" in lines
    assert "- accuracy 0.9900 -> 0.5: worse" in lines
    assert "Rolled back: champion is now v2." in lines
    assert lines[-3:] == ["## Label health", "", "no breach"]


def test_a_monitor_report_without_a_champion_has_no_table():
    report = MonitorReport("digits", None, "no_champion", 0, {}, {}, [], detail="no champion yet")
    assert monitor_markdown(report) == (
        "# Monitor: **NO_CHAMPION**\n\nModel digits, champion none; gold test labels now: 0."
        "\n\nno champion yet\n\n"
    )


def test_the_gate_image_has_a_panel_for_the_comparison_only_when_there_is_a_champion():
    y = balanced(200, 2)
    alone = decide(evidence(y, y, ("a", "b")), ACCURACY_ONLY)
    paired = decide(evidence(y, y, ("a", "b"), y), ACCURACY_ONLY)
    # one enabled check a panel (the accuracy floor; the comparison): 7 x 1.9 in at 110 dpi
    assert _size(plot_gate(alone, "gate")) == (770, 209)
    assert _size(plot_gate(paired, "gate")) == (1540, 209)


def test_the_confusion_matrix_and_reliability_diagram_are_images():
    y = balanced(60, 3)
    p = probs(y, with_errors(y, 3, range(6)), 3)
    report = decide(evidence(y, with_errors(y, 3, range(6)), ("a", "b", "c")), DEFAULT)
    assert _size(plot_confusion(report.candidate, ("a", "b", "c"), "candidate")) == (605, 528)
    assert _size(plot_reliability(p, y, "candidate")) == (550, 495)
