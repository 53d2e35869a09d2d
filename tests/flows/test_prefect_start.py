"""On a busy machine Prefect's temporary server starts slowly: semilabel gives it a start
timeout from its own setting, and when the start still fails, says what to change."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

READ = (
    "import flows; from prefect.settings import "
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; print(s.value())"
)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PREFECT_API_URL",
            "SEMILABEL_PREFECT_START_TIMEOUT_S",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
        )
    }
    return {**env, **extra}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "300"),  # semilabel's default, not Prefect's 20 s
        ({"SEMILABEL_PREFECT_START_TIMEOUT_S": "123"}, "123"),
        # Prefect's own variable, when a user sets it, wins
        (
            {
                "SEMILABEL_PREFECT_START_TIMEOUT_S": "123",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "45",
            },
            "45",
        ),
    ],
)
def test_the_start_timeout_prefect_uses_comes_from_our_setting(extra, expected):
    got = subprocess.run(
        [sys.executable, "-c", READ], env=_env(**extra), capture_output=True, text=True
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == expected


def test_a_server_that_does_not_start_in_time_names_the_setting(tmp_path: Path):
    # 0 s: the temporary server cannot answer in time, as on a machine far too busy
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "ingest",
            "--set",
            f"store.root={tmp_path / 'store'}",
        ],
        env=_env(SEMILABEL_PREFECT_START_TIMEOUT_S="0"),
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=300,
    )
    assert got.returncode == 1
    said = " ".join(got.stderr.split())  # rich wraps lines
    assert "Prefect's temporary API server did not start within 0 s" in said
    assert "export SEMILABEL_PREFECT_START_TIMEOUT_S=900" in said
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api" in said
