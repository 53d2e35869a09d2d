"""prefect.yaml is valid for Prefect, and every deployment points at a real flow."""

from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import Flow, load_flow_from_entrypoint

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_prefect_yaml_matches_prefects_schema():
    model = PrefectYamlModel.model_validate(SPEC)
    names = {d.name: d for d in model.deployments}
    assert {"retrain-nightly", "retrain-manual", "monitor-hourly", "rollback-manual"} <= set(names)
    assert names["retrain-nightly"].schedules[0].cron == "0 3 * * *"
    assert names["monitor-hourly"].schedules
    assert not names["retrain-manual"].schedules and not names["rollback-manual"].schedules


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: d["name"])
def test_entrypoint_is_a_flow_and_parameters_fit_its_signature(deployment, monkeypatch):
    monkeypatch.chdir(REPO)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    params = deployment.get("parameters") or {}
    assert flow.validate_parameters(params) == params
    assert deployment.get("concurrency_limit") == 1
