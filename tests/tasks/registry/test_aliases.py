"""The registry against a real MLflow store: compare-and-set alias moves, and errors that
are errors, not "no champion"."""

import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from models import ClassifierConfig, build_classifier
from tasks.registry.aliases import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    TAG_GATE,
    TAG_PROMOTED_AT,
    ChampionMoved,
    RegistryRef,
    RegistryUnavailable,
    RollbackError,
    champion_version,
    promote,
    register_candidate,
    rollback,
)
from tasks.registry.model_format import log_classifier
from tasks.tracking import ensure_experiment

REPO = Path(__file__).resolve().parents[3]


def logged_model(uri: str, seed: int = 0) -> str:
    """A real (untrained) classifier logged to a new MLflow run; returns its model URI."""
    torch.manual_seed(seed)
    model = build_classifier(ClassifierConfig("small_cnn", 3, 1, 28, (0.1,), (0.3,)))
    mlflow.set_tracking_uri(uri)
    ensure_experiment(uri, "registry-test")  # artifacts beside the db, not ./mlruns
    with mlflow.start_run():
        return log_classifier(model, ("0", "1", "2"), torch.zeros(4, 1, 28, 28, dtype=torch.uint8))


def register(ref: RegistryRef, tags: dict[str, str] | None = None) -> str:
    return register_candidate(ref, logged_model(ref.tracking_uri), "run", tags or {})


@pytest.fixture
def ref(tmp_path: Path) -> RegistryRef:
    return RegistryRef(f"sqlite:///{tmp_path / 'mlflow.db'}", "reg-test")


def move_alias_in_another_process(ref: RegistryRef, version: str) -> None:
    code = (
        "import sys; from mlflow import MlflowClient; "
        f"MlflowClient(tracking_uri={ref.tracking_uri!r}, registry_uri={ref.tracking_uri!r})"
        f".set_registered_model_alias({ref.model_name!r}, {CHAMPION!r}, {version!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_promotion_is_compare_and_set(ref: RegistryRef):
    assert champion_version(ref) is None  # no model yet: no champion, not an error
    v1 = register(ref, {TAG_GATE: "passed"})
    assert champion_version(ref) is None  # a model without the alias: no champion
    assert promote(ref, v1, expected_champion=None).previous is None
    v2, v3 = register(ref), register(ref)
    move_alias_in_another_process(ref, v2)  # someone else moved it meanwhile
    with pytest.raises(ChampionMoved, match="champion moved from v1 to v2 during this run"):
        promote(ref, v3, expected_champion=v1)
    assert champion_version(ref) == v2  # untouched
    assert promote(ref, v3, expected_champion=v2).previous == v2
    client = ref.client()
    assert str(client.get_model_version_by_alias(ref.model_name, PREVIOUS_CHAMPION).version) == v2
    assert TAG_PROMOTED_AT in client.get_model_version(ref.model_name, v3).tags


def test_rollback_moves_only_the_version_that_was_measured(ref: RegistryRef):
    passed = {TAG_GATE: "passed"}
    v1 = register(ref, passed)
    promote(ref, v1, expected_champion=None)
    v2 = register(ref, passed)
    promote(ref, v2, expected_champion=v1)
    v3 = register(ref, passed)
    move_alias_in_another_process(ref, v3)
    with pytest.raises(ChampionMoved, match="v2 was measured, so v3 is not rolled back"):
        rollback(ref, "monitor: accuracy dropped", expected_champion=v2)
    assert champion_version(ref) == v3
    move_alias_in_another_process(ref, v2)
    result = rollback(ref, "monitor: accuracy dropped", expected_champion=v2)
    assert (result.from_version, result.to_version) == (v2, v1)
    assert (
        ref.client().get_model_version(ref.model_name, v2).tags["semilabel.rolled_back"] == "true"
    )
    with pytest.raises(RollbackError, match="no earlier passing version"):
        rollback(ref, "again")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_registry_is_an_error_never_no_champion(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = RegistryRef(f"http://127.0.0.1:{_closed_port()}", "reg-test")
    # A floors-only gate must never come from a network error.
    with pytest.raises(RegistryUnavailable, match="failed while reading the champion"):
        champion_version(down)
    with pytest.raises(RegistryUnavailable, match="reading the registered model"):
        register_candidate(down, "models:/m-doesnotmatter", "run", {})
