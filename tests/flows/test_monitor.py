"""The monitor as schedulers run it: `semilabel monitor --strict` (and the flow's `strict`
parameter) fail unless the champion was checked and is ok."""

import json
from pathlib import Path

import pytest

from flows.cli import main
from flows.monitor import monitor
from tasks.registry.aliases import RegistryRef, promote
from tasks.registry.monitoring import ChampionNotVerified
from tests.tasks.registry.test_aliases import register


@pytest.fixture
def hand_registered_champion(store_cfg) -> dict:
    """A champion registered by hand (no gate tags: no baseline); the overrides that
    point a monitor at it."""
    ref = RegistryRef(store_cfg.mlflow.tracking_uri, "by-hand")
    promote(ref, register(ref), expected_champion=None)
    return {
        "store.root": store_cfg.store.root,
        "taxonomy.classes": ["0", "1", "2"],
        "gold.fraction": 0.3,
        "mlflow.tracking_uri": store_cfg.mlflow.tracking_uri,
        "mlflow.model_name": "by-hand",
        "monitor.min_gold_labels": 5,
    }


def _sets(overrides: dict) -> list[str]:
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={json.dumps(v)}")]


def test_strict_monitor_exits_3_on_no_baseline(prefect_api, hand_registered_champion, capsys):
    args = _sets(hand_registered_champion)
    assert main(["monitor", *args]) == 0  # reported, not failed
    assert "NO_BASELINE" in capsys.readouterr().out
    assert main(["monitor", "--strict", *args]) == 3
    captured = capsys.readouterr()
    assert "NO_BASELINE" in captured.out and "monitor: no_baseline for by-hand v1" in captured.err


def test_strict_flow_run_fails_for_the_scheduler(prefect_api, hand_registered_champion):
    state = monitor(overrides=hand_registered_champion, strict=True, return_state=True)
    assert state.is_failed()
    with pytest.raises(ChampionNotVerified, match="no_baseline"):
        state.result()


def test_flow_modules_run_alone_without_the_cli(tmp_path: Path):
    """`python -m flows.<name>` defines its flow once: no flow module imports the CLI."""
    import ast

    flows_dir = Path(__file__).resolve().parents[2] / "flows"
    for path in flows_dir.glob("*.py"):
        if path.name in ("cli.py", "__init__.py"):
            continue
        imported = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom)
        }
        assert "flows.cli" not in imported, path.name


def _stale_labels(store_cfg) -> dict:
    """Overrides on `store_cfg` under which every label is "stale": a forced breach."""
    return {
        "store.root": store_cfg.store.root,
        "taxonomy.classes": ["0", "1", "2"],
        "gold.fraction": 0.3,
        "mlflow.tracking_uri": store_cfg.mlflow.tracking_uri,
        "health.max_label_age_h": 0.000001,
    }


def test_fail_on_alert_exits_4_and_lists_each_breach_with_its_runbook(
    prefect_api, store_cfg, capsys
):
    from tasks.store import SLIS, Store

    ov = _stale_labels(store_cfg)
    assert main(["monitor", "--fail-on-alert", *_sets(ov)]) == 4
    out = capsys.readouterr()
    assert "Label health: 1 BREACH(ES)" in out.out and "label_age_median_seconds" in out.out
    assert "Labels are stale: sample and annotate recent data" in out.out
    assert "label-health breach" in out.err
    rows = Store(ov["store.root"]).read(SLIS).to_pylist()
    breach = [r for r in rows if r["metric"] == "sli_breach" and "label_age" in r["labels"]]
    assert breach and breach[-1]["value"] == 1.0
    assert main(["monitor", *_sets(ov)]) == 0  # without the flag: reported, not failed


def test_fail_on_alert_prints_the_summary_without_a_traceback(prefect_api, store_cfg):
    """The command line as a scheduler's shell sees it: exit 4, the breach and its
    runbook line, and no traceback (the exit code is the signal, not a crash)."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    ov = _stale_labels(store_cfg)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the test's server
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "monitor", "--fail-on-alert", *_sets(ov)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "Label health: 1 BREACH(ES)" in done.stdout
    assert "label-health breach" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


def _monitor_overrides(store_cfg, model_name: str) -> dict:
    return {
        "store.root": store_cfg.store.root,
        "taxonomy.classes": ["0", "1", "2"],
        "gold.fraction": 0.3,
        "mlflow.tracking_uri": store_cfg.mlflow.tracking_uri,
        "mlflow.model_name": model_name,
        "monitor.min_gold_labels": 5,
    }


def test_a_strict_monitor_before_any_champion_completes_and_says_so(prefect_api, store_cfg, capsys):
    """The hourly schedule starts before the first promotion: not a failure every hour."""
    ov = _monitor_overrides(store_cfg, "not-yet")
    state = monitor(overrides=ov, strict=True, return_state=True)
    assert state.is_completed(), state.message
    assert (
        state.message == "not-yet: no champion yet; nothing to monitor until a retrain promotes one"
    )
    assert main(["monitor", "--strict", *_sets(ov)]) == 0


def test_an_automatic_rollback_completes_as_rolled_back_and_names_the_new_champion(
    prefect_api, store_cfg
):
    from tasks.registry.aliases import champion_version, register_candidate
    from tests.tasks.registry.test_monitoring import GATED, _trained_model_uri

    ov = _monitor_overrides(store_cfg, "mon-flow")
    ref = RegistryRef(store_cfg.mlflow.tracking_uri, "mon-flow")
    trained = _trained_model_uri(store_cfg, ref.tracking_uri)  # right on this gold
    good = register_candidate(ref, trained, "run", GATED)
    promote(ref, good, expected_champion=None)
    bad = register(ref, GATED)  # untrained, claims 0.99 at its gate
    promote(ref, bad, expected_champion=good)
    state = monitor(overrides=ov, strict=True, return_state=True)
    assert state.is_completed() and state.name == "RolledBack", state.message
    assert state.message.startswith(f"mon-flow v{bad} regressed (")
    assert state.message.endswith(f"rolled back: the champion is now v{good}")
    assert state.result().rolled_back_to == good and champion_version(ref) == good
