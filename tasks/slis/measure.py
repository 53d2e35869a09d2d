"""What a run measures for the SLIs that the store does not hold: the champion's
pseudo-labels on gold dev, the retrain history (from the Prefect API), and, for a
monitor run, all of it with drift on the champion's embeddings (`measure_monitor`)."""

from __future__ import annotations

import logging
from typing import Any

from configs.data import DataSpec
from configs.tracking import MlflowConfig
from tasks.slis.compute import RunFacts
from tasks.slis.drift_check import check_drift
from tasks.slis.inputs import LabelHealthInputs
from tasks.store import Store

log = logging.getLogger(__name__)


def load_model(uri: str | None, mlflow: MlflowConfig) -> Any | None:
    """The classifier at `uri`; None without one."""
    from tasks.registry.model_format import load_classifier

    if not uri:
        return None
    return load_classifier(uri, mlflow.tracking_uri, trust_pickle=mlflow.trust_pickled_models)


def pseudo_labels_on_gold(
    store: Store, data: DataSpec, tau: float, model: Any
) -> tuple[float, float]:
    """(precision, coverage) of `model`'s pseudo-labels at `tau` (`train.tau`) on gold dev:
    what a monitor reports when no training ran (retrain reports the training's own)."""
    import torch

    from tasks.store import DEV
    from tasks.validation.gold import GoldSpec, predict_gold, select_gold

    spec = GoldSpec.from_data(data)
    gold = select_gold(store, spec, DEV)
    if len(gold) == 0:
        return float("nan"), float("nan")
    (probs,) = predict_gold(store, spec, gold, [model]).probs  # images read in batches
    conf, pred = torch.from_numpy(probs).max(1)
    y = torch.from_numpy(gold.y)
    keep = conf >= tau
    precision = float((pred[keep] == y[keep]).float().mean()) if bool(keep.any()) else float("nan")
    return precision, float(keep.float().mean())


def retrain_outcomes(window: int, exclude: str | None = None) -> tuple[bool, ...]:
    """Whether each of the last `window` finished retrain flow runs completed, newest
    first, from the Prefect API (the server, or the local database behind the temporary
    one); empty when it cannot be read."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final))
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=window + 1,
            )
    except Exception as exc:  # noqa: BLE001 - an SLI must not fail the run
        log.warning("retrain history unavailable from the Prefect API: %s", exc)
        return ()
    outcomes = [r.state.is_completed() for r in runs if str(r.id) != exclude and r.state]
    return tuple(outcomes[:window])


def measure_monitor(inputs: LabelHealthInputs, run_id: str) -> RunFacts:
    """What a monitor run measures for the SLIs: the champion's pseudo-labels on gold
    dev, drift on its embeddings, and the retrain history."""
    from tasks.registry.aliases import RegistryRef, champion_version

    ref = RegistryRef(inputs.mlflow.tracking_uri, inputs.mlflow.model_name)
    version = champion_version(ref)
    model = load_model(ref.version_uri(version) if version else None, inputs.mlflow)
    store = Store(inputs.data.root)
    precision = coverage = None
    if model is not None:
        precision, coverage = pseudo_labels_on_gold(store, inputs.data, inputs.tau, model)
    checks, _ = check_drift(store, inputs.data, inputs.health.drift, inputs.labels, model)
    return RunFacts(
        flow="monitor",
        pseudo_label_precision=precision,
        pseudo_label_coverage=coverage,
        retrain_outcomes=retrain_outcomes(inputs.health.retrain_window, exclude=run_id),
        drift=tuple(checks),
    )
