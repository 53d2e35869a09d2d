"""The rollback flow as Prefect runs it: under the registry lock, the champion goes back
to the previous passing version with the reason recorded, and a registry with nothing to
go back to is refused with the next step."""

from pathlib import Path

import pytest

from flows.rollback import rollback
from tasks.registry.aliases import (
    TAG_GATE,
    TAG_ROLLBACK_REASON,
    RegistryRef,
    RollbackError,
    champion_version,
    promote,
)
from tests.tasks.registry.test_aliases import register


def _overrides(tmp_path: Path, ref: RegistryRef) -> dict:
    return {
        "store.root": str(tmp_path / "store"),
        "mlflow.tracking_uri": ref.tracking_uri,
        "mlflow.model_name": ref.model_name,
    }


def test_rollback_restores_the_previous_passing_version_and_records_why(prefect_api, tmp_path):
    ref = RegistryRef(f"sqlite:///{tmp_path / 'mlflow.db'}", "flow-rollback")
    v1 = register(ref, {TAG_GATE: "passed"})
    promote(ref, v1, expected_champion=None)
    v2 = register(ref, {TAG_GATE: "passed"})
    promote(ref, v2, expected_champion=v1)

    result = rollback(overrides=_overrides(tmp_path, ref), reason="labels were wrong")

    assert (result.from_version, result.to_version) == (v2, v1)
    assert champion_version(ref) == v1
    tags = ref.client().get_model_version(ref.model_name, v2).tags
    assert tags[TAG_ROLLBACK_REASON] == "labels were wrong"


def test_rollback_without_a_champion_says_what_to_run(prefect_api, tmp_path):
    ref = RegistryRef(f"sqlite:///{tmp_path / 'mlflow.db'}", "flow-rollback-empty")
    register(ref, {TAG_GATE: "passed"})
    with pytest.raises(RollbackError, match=r"has no champion: nothing to roll back\. Run"):
        rollback(overrides=_overrides(tmp_path, ref))
    assert champion_version(ref) is None
