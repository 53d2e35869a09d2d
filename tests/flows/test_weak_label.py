"""The weak-label flow as users run it: a real Prefect flow run whose applier is mapped
over shards of a real store on each task runner, giving the same label matrix as the
in-process applier."""

import os
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterName,
)

from configs.schema import load_config
from flows.weak_label import weak_label, weak_label_inputs
from tasks.store import LABELS, Store
from tasks.weak_labeling.applier import apply_in_shards, plan_shards
from tasks.weak_labeling.functions import build_functions
from tasks.weak_labeling.run import weak_label_store
from tests.conftest import digit_png, ingest_folder, write

REPO = Path(__file__).resolve().parents[2]
FUNCS = [
    {"name": "bar", "kind": "python", "target": "tests.tasks.weak_labeling.test_run:bar_position"},
    {"name": "coin", "kind": "python", "target": "tests.tasks.weak_labeling.test_run:coin_flip"},
    {"name": "knn", "kind": "knn", "embedding": "pixels", "k": 3, "min_agreement": 1.0},
    {"name": "proto", "kind": "prototype", "embedding": "pca", "dims": 8},
]


def _overrides(tmp_path: Path) -> dict:
    return {
        "store.root": str(tmp_path / "store"),
        "store.rows_per_file": 40,  # 240 rows -> 6 files, so there is something to shard
        "source.kind": "image_folder",
        "source.path": str(tmp_path / "images"),
        "taxonomy.classes": ["0", "1", "2"],
        "ingest.workers": 1,
        "gold.fraction": 0.3,
        "mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "weak_labeling.functions": FUNCS,
        "weak_labeling.min_gold_covered": 10,
        "weak_labeling.shard_rows": 60,  # -> 3 shards of 2 files (80 rows)
        "weak_labeling.batch_rows": 25,  # batches that straddle row groups
        "weak_labeling.workers": 2,
    }


@pytest.fixture
def sharded(tmp_path: Path) -> dict:
    for i in range(240):
        cls = i % 3
        sub = str(cls) if i < 150 else "unlabeled"
        write(tmp_path / "images" / sub / f"{i}.png", digit_png(cls, i))
    ov = _overrides(tmp_path)
    cfg = load_config(overrides=ov)
    ingest_folder(cfg, cfg.source.path, "f")
    return ov


def test_shards_cover_every_row_group_once_in_store_order(sharded):
    cfg = load_config(overrides=sharded)
    store = Store(cfg.store.root)
    shards = plan_shards(store, 60)
    files = store.files("examples")
    assert len(files) == 6
    assert [s.rows for s in shards] == [80, 80, 80]  # whole files of 40: 2 per shard
    assert [f for s in shards for f, _ in s.parts] == files
    assert all(groups == (0,) for s in shards for _, groups in s.parts)
    assert [s.rows for s in plan_shards(store, 1_000)] == [240]
    assert [s.rows for s in plan_shards(store, 1)] == [40] * 6


def _matrix(folder: str) -> tuple[list[str], np.ndarray]:
    table = ds.dataset(folder, format="parquet").to_table()
    names = [n for n in table.column_names if n != "example_id"]
    votes = np.stack([table.column(n).to_numpy() for n in names], 1)
    return table.column("example_id").to_pylist(), votes


@pytest.mark.parametrize("runner", ["processes", "threads", "dask"])
def test_flow_maps_shards_on_the_runner_and_matches_the_in_process_applier(
    prefect_api, sharded, runner
):
    if runner == "dask":
        pytest.importorskip("prefect_dask")
    cfg = load_config(overrides=sharded)
    store = Store(cfg.store.root)
    functions = build_functions(store, weak_label_inputs(cfg))
    one_worker = load_config(overrides={**sharded, "weak_labeling.workers": 1})
    serial = apply_in_shards(
        store, one_worker.data_spec(), one_worker.weak_labeling, functions, "serial"
    )
    assert serial.votes.shape == (240, 4)
    assert len(store.fs.get_file_info(_selector(serial.path))) == 3  # one part per shard

    env_before = dict(os.environ)
    state = weak_label(overrides={**sharded, "weak_labeling.runner": runner}, return_state=True)
    assert state.is_completed(), state.message
    # Nothing leaks into this process's environment (Dask's nanny sets OMP_NUM_THREADS=1
    # and more), apart from MLflow's own MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID and
    # the telemetry session id MLflow sets and unsets itself (_MLFLOW_TELEMETRY_SESSION_ID).
    ours = lambda env: {k: v for k, v in env.items() if not k.lstrip("_").startswith("MLFLOW_")}  # noqa: E731
    assert ours(os.environ) == ours(env_before)
    summary = state.result()
    ids, votes = _matrix(summary.matrix_path)
    assert ids == serial.example_ids  # store order, whatever order the shards finished in
    np.testing.assert_array_equal(votes, serial.votes)
    assert summary.n_rows == 240
    assert {f.name for f in summary.functions if f.quarantined} == {"coin"}

    # The shards ran as mapped Prefect tasks of this flow run.
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            ),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="apply-labeling-functions")),
        )
        assert sorted(r.name for r in runs) == [
            f"apply-labeling-functions-shard-{i}" for i in range(3)
        ]
        assert all(r.state.is_completed() for r in runs)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["lf-analysis"]))
        )
    assert any(a.flow_run_id == state.state_details.flow_run_id for a in artifacts)

    # Same data, same functions: a second applier run writes no new label events.
    events = store.read(LABELS).filter(pc.field("source_kind") == "label_model").num_rows
    assert events == summary.events_written > 0
    again = weak_label_store(weak_label_inputs(load_config(overrides=sharded)), "again")
    assert again.events_written == 0


def _selector(folder: str):
    from pyarrow import fs

    return fs.FileSelector(folder)


@pytest.mark.slow
def test_cli_runs_worker_processes_against_the_runs_own_temporary_server(sharded, tmp_path):
    """`semilabel weak-label` with no Prefect server configured: Prefect starts one
    temporary API for the run, and the worker processes report to it rather than each
    starting their own."""
    import subprocess
    import sys

    import yaml

    cfg = load_config(overrides={**sharded, "weak_labeling.runner": "processes"})
    path = tmp_path / "wl.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "weak-label", "--config", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert log.count("Starting temporary server") == 1, log[-3000:]
    for i in range(3):
        assert f"apply-labeling-functions-shard-{i}' - Finished in state Completed()" in log
    assert "label events written" in log
