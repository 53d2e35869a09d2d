"""The ingest flow as users run it: a real Prefect flow run, and the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.ingest import ingest
from tasks.store import Store
from tests.conftest import png, write

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(6):
        write(tmp_path / "images" / str(i % 3) / f"{i}.png", png(i))
    write(tmp_path / "images/unlabeled/u.png", png(100))
    write(tmp_path / "images/unlabeled/bad.png", b"garbage")
    return tmp_path / "images"


def _artifacts(key: str):
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


def test_flow_run_ingests_and_publishes_artifacts(prefect_api, tmp_path: Path, folder: Path):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"store:\n  root: {tmp_path / 'from-file'}\n")
    root = str(tmp_path / "from-param")
    summary = ingest(
        config_path=str(config),
        overrides={
            "store.root": root,
            "source.kind": "image_folder",
            "source.path": str(folder),
            "ingest.workers": 1,
        },
    )
    assert (summary.seen, summary.ingested, summary.label_events) == (8, 7, 6)
    assert summary.quarantined == {"not_an_image": 1}
    # Flow parameters override the file.
    assert Store(root).counts().examples == 7
    assert not (tmp_path / "from-file").exists()

    (table,) = _artifacts("ingest-summary")[:1]
    assert table.type == "table"
    assert '"examples ingested"' in table.data and '"store: examples"' in table.data
    progress = _artifacts("ingest-progress")
    assert progress and progress[0].type == "progress" and float(progress[0].data) == 100.0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.ingest", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_runs_the_flow_and_prints_a_summary(tmp_path: Path, folder: Path):
    root = tmp_path / "store"
    res = _cli(
        "--set",
        f"store.root={root}",
        "--set",
        "source.kind=image_folder",
        "--set",
        f"source.path={folder}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "examples ingested" in res.stdout and "│     7 │" in res.stdout
    assert "quarantined: not_an_image" in res.stdout
    assert Store(str(root)).counts().examples == 7


def test_cli_rejects_a_bad_key_before_starting_anything(tmp_path: Path):
    res = _cli("--set", "source.kindd=x", cwd=tmp_path)
    assert res.returncode == 2
    assert "unknown config key 'source.kindd'" in res.stderr


@pytest.mark.slow
def test_cli_reports_a_failing_source_and_exits_non_zero(tmp_path: Path):
    res = _cli(
        "--set",
        "source.kind=image_folder",
        "--set",
        f"source.path={tmp_path / 'nope'}",
        "--set",
        f"store.root={tmp_path / 's'}",
        cwd=tmp_path,
    )
    assert res.returncode == 1
    assert "is not a folder" in res.stderr
