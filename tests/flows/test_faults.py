"""The fault suite: `semilabel retrain` killed with SIGKILL at points a seeded generator
picks across the whole run (ingest, weak labeling, training, gate, registration), then
run again. Nothing may be lost or doubled, no partial file may be visible, and the
registry may hold no version without its gate decision."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tasks.registry.aliases import TAG_GATE
from tasks.store import EXAMPLES, LABELS, QUARANTINE, SNAPSHOTS, TMP_PREFIX, Store
from tests.conftest import digit_folder, tiny_run_overrides

pytestmark = pytest.mark.slow

SEED = 14
KILLS = 3
REPO = Path(__file__).resolve().parents[2]


def _overrides(home: Path, folder: Path) -> dict:
    ov = tiny_run_overrides(home, folder, f"sqlite:///{home / 'mlflow.db'}")
    return {
        **ov,
        "mlflow.model_name": "faults",
        "gate.min_gold_labels": 20,
        "train.checkpoint_every": 10,  # something to resume from
        "weak_labeling.enabled": True,
        "weak_labeling.functions": [{"name": "proto", "kind": "prototype", "embedding": "pca"}],
    }


def _command(ov: dict) -> list[str]:
    import json

    sets = [a for k, v in ov.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    return [sys.executable, "-m", "flows.cli", "retrain", *sets]


def _run(ov: dict, kill_after: float | None = None) -> float:
    """Run retrain in its own process group; SIGKILL it all after `kill_after` seconds.
    Returns the seconds it ran."""
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    start = time.monotonic()
    proc = subprocess.Popen(
        _command(ov),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    if kill_after is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    else:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.monotonic() - start


def _state(home: Path, ov: dict) -> dict:
    """What must hold after any crash and re-run."""
    root = Path(ov["store.root"])
    store = Store(str(root))
    ids = store.read(EXAMPLES, ["example_id"]).column(0).to_pylist()
    events = store.read(LABELS, ["event_id", "source_kind"])
    event_ids = events.column("event_id").to_pylist()
    # what readers see: no temporary file, and every file whole (a kill may leave a temp
    # file on disk, invisible to readers, which the next run removes)
    visible = [f for d in (EXAMPLES, LABELS, SNAPSHOTS, QUARANTINE) for f in store.files(d)]
    visible_temp = [f for f in visible if Path(f).name.startswith(TMP_PREFIX)]
    for f in visible:
        pq.read_metadata(f)  # raises on a partial file
    temp_on_disk = [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]
    uri = ov["mlflow.tracking_uri"]
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name='faults'")
    return {
        "examples": len(ids),
        "unique_examples": len(set(ids)),
        "events": len(event_ids),
        "unique_events": len(set(event_ids)),
        "human_events": int(pc.sum(pc.equal(events.column("source_kind"), "human")).as_py() or 0),
        "visible_temp": visible_temp,
        "temp_on_disk": temp_on_disk,
        "versions_without_gate": [
            v.version for v in versions if TAG_GATE not in v.tags or "gate.accuracy" not in v.tags
        ],
        "versions": len(versions),
        "snapshots": store.read(SNAPSHOTS, ["snapshot_id"]).num_rows,
    }


def test_retrain_killed_at_random_points_loses_and_doubles_nothing(tmp_path):
    folder = digit_folder(tmp_path / "images")
    clean_home = tmp_path / "clean"
    clean = _overrides(clean_home, folder)
    duration = _run(clean)
    expected = _state(clean_home, clean)
    assert expected["versions"] == 1 and expected["examples"] == 300

    rng = np.random.default_rng(SEED)
    points = sorted(rng.uniform(0.05, 0.95, size=KILLS) * duration)
    for i, at in enumerate(points):
        home = tmp_path / f"killed{i}"
        ov = _overrides(home, folder)
        _run(ov, kill_after=at)
        crashed = _state(home, ov) if (home / "mlflow.db").exists() else None
        if crashed is not None:  # what a reader sees right after the crash
            assert crashed["visible_temp"] == [], f"kill at {at:.1f}s"
            assert crashed["examples"] == crashed["unique_examples"]
            assert crashed["events"] == crashed["unique_events"]
            assert crashed["versions_without_gate"] == [], f"kill at {at:.1f}s"
        _run(ov)  # the same command again finishes the job
        after = _state(home, ov)
        msg = f"kill at {at:.1f}s of {duration:.1f}s"
        assert after["examples"] == after["unique_examples"] == expected["examples"], msg
        assert after["events"] == after["unique_events"], msg
        assert after["human_events"] == expected["human_events"], msg
        assert after["visible_temp"] == [] and after["versions_without_gate"] == [], msg
        assert after["temp_on_disk"] == [], msg  # the re-run cleared what the kill left
        assert after["versions"] >= 1, msg
