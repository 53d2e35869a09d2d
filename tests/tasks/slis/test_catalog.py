"""The SLI catalog: every SLI that can breach tells the on-call person what to do."""

import ast
from pathlib import Path

import tasks.slis.compute as compute
from tasks.slis.catalog import METRICS


def _metrics_with_a_threshold() -> set[str]:
    """The metric names `compute` builds an Sli for with a threshold (4+ arguments)."""
    tree = ast.parse(Path(compute.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "Sli"
            and len(node.args) + len(node.keywords) >= 4
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return names


def test_every_sli_that_can_breach_has_a_runbook():
    can_breach = _metrics_with_a_threshold()
    assert {"drift_mmd_p_value", "drift_breach", "label_age_median_seconds"} <= can_breach
    missing = sorted(name for name in can_breach if not METRICS[name].runbook.strip())
    assert missing == []  # a breach logged as "... (threshold 0.01): " and nothing after
