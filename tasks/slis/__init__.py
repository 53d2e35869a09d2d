"""Label health: the ten label SLIs every retrain and monitor run computes (`compute`),
drift checks (`drift`), and where they go: the store's `slis` dataset (history that
survives without MLflow) and each flow's latest computation (`latest`, what a scrape
serves), MLflow metrics under `sli/`, Prefect artifacts
(`label-health-slis`, and `label-health` listing each breach with its runbook line),
and a Prometheus Pushgateway when `metrics.pushgateway_url` is set.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.schema import Config
from tasks.images.decode import decode_images
from tasks.slis.catalog import METRICS
from tasks.slis.compute import RunFacts, Sli, compute_slis
from tasks.slis.drift import DriftCheck, compare
from tasks.slis.health import LabelHealth, LabelHealthAlert, run_rows
from tasks.slis.latest import write_latest
from tasks.slis.prometheus import push_slis
from tasks.store import EXAMPLES, SCHEMAS, SLIS, GoldSplit, LatestLabels, Store, utcnow
from tasks.tracking import ensure_experiment
from tasks.validation import Check

log = logging.getLogger(__name__)

__all__ = [
    "DriftCheck",
    "LabelHealth",
    "LabelHealthAlert",
    "RunFacts",
    "Sli",
    "check_drift",
    "report_label_health",
]


# -- drift: the data for the checks ---------------------------------------------------------


def _images(store: Store, ids: list[str], size: int, channels: int) -> np.ndarray:
    blobs: dict[str, bytes] = {}
    for rb in store.iter_batches(
        EXAMPLES, ["example_id", "image"], filter=pc.field("example_id").isin(ids)
    ):
        blobs.update(zip(rb.column(0).to_pylist(), rb.column(1).to_pylist(), strict=True))
    ordered = [blobs[i] for i in ids if i in blobs]
    if not ordered:
        return np.zeros((0, channels, size, size), np.uint8)
    return decode_images(ordered, size, channels)


def check_drift(store: Store, cfg: Config, model: Any | None) -> tuple[list[DriftCheck], list[str]]:
    """The drift checks this store allows, and the newest batch's example ids (the slice
    to sample when it drifted). `model`: embeds images (`features`); None: histograms only."""
    d = cfg.health.drift
    rng = np.random.default_rng(cfg.seed)
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    meta: list[tuple[str, str | None, Any]] = []
    for b in store.iter_batches(
        EXAMPLES, ["example_id", "run_id", "ingested_at"], batch_size=65536
    ):
        meta += zip(
            b.column(0).to_pylist(), b.column(1).to_pylist(), b.column(2).to_pylist(), strict=True
        )
    gold = split.is_gold([m[0] for m in meta])
    meta = [m for m, g in zip(meta, gold, strict=True) if not g]
    size, ch = cfg.train.image_size, cfg.train.channels
    embed = None
    if model is not None:
        model = model.eval()

        def embed(images: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model.features(torch.from_numpy(images).float() / 255.0).numpy()

    def sample(ids: list[str]) -> list[str]:
        return [ids[i] for i in rng.permutation(len(ids))[: d.sample_size]]

    checks: list[DriftCheck] = []
    kw = dict(permutations=d.permutations, p_value=d.p_value, js_threshold=d.js_threshold, rng=rng)
    newest_ids: list[str] = []
    runs = {m[1] for m in meta if m[1] is not None}
    if len(runs) >= 2:
        newest_run = max((m for m in meta if m[1] is not None), key=lambda m: m[2])[1]
        newest_ids = [m[0] for m in meta if m[1] == newest_run]
        earlier = sorted((m for m in meta if m[1] != newest_run), key=lambda m: m[2], reverse=True)
        reference = [m[0] for m in earlier[: d.reference_size]]
        if len(newest_ids) >= 10 and len(reference) >= 10:
            checks.append(
                compare(
                    "newest_batch",
                    _images(store, sample(newest_ids), size, ch),
                    _images(store, sample(reference), size, ch),
                    embed,
                    **kw,
                )
            )
    resolved = LatestLabels.read(store).resolve(
        confidence_floor=cfg.labels.confidence_floor,
        max_model_share=cfg.labels.max_model_share,
        leave_out=split,
        classes=cfg.taxonomy.classes,
    )
    labeled = set(resolved.column("example_id").to_pylist())
    lab_ids = [m[0] for m in meta if m[0] in labeled]
    unl_ids = [m[0] for m in meta if m[0] not in labeled]
    if len(lab_ids) >= 10 and len(unl_ids) >= 10:
        checks.append(
            compare(
                "labeled_vs_unlabeled",
                _images(store, sample(lab_ids), size, ch),
                _images(store, sample(unl_ids), size, ch),
                embed,
                **kw,
            )
        )
    return checks, newest_ids


def drift_gate_checks(checks: list[DriftCheck], on_breach: str) -> list[Check]:
    """The drift checks as gate checks, when `health.drift.on_breach` is `block`."""
    if on_breach != "block":
        return []
    return [
        Check(
            f"drift[{c.name}]",
            float(c.breached),
            0.0,
            not c.breached,
            c.why if c.breached else "no drift (health.drift.on_breach: block)",
            higher_is_better=False,
        )
        for c in checks
    ]


# -- where SLIs go -----------------------------------------------------------------------


def record_slis(store: Store, health: LabelHealth) -> None:
    """Append the run's SLIs to the store's `slis` dataset, and make them its flow's
    latest (what `/metrics` serves)."""
    now = utcnow()
    rows = [
        {
            "run_id": health.run_id,
            "flow": health.flow,
            "computed_at": now,
            "metric": s.metric,
            "labels": json.dumps(dict(s.labels), sort_keys=True),
            "value": float(s.value),
            "threshold": s.threshold,
            "breached": s.breached,
        }
        for s in [*health.slis, *run_rows(health)]
    ]
    table = pa.Table.from_pylist(rows, schema=SCHEMAS[SLIS])
    store.write(SLIS, table, when=now)
    write_latest(store, health.flow, table)


def log_slis_to_mlflow(
    health: LabelHealth,
    tracking_uri: str,
    experiment: str,
    run_id: str | None,
    artifact_root: str | None = None,
) -> None:
    """`sli/<metric>[/<label values>]` metrics on `run_id` (a new run of `experiment`
    when None)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    metrics = {
        "sli/" + s.metric + "".join(f"/{v}" for _, v in s.labels): float(s.value)
        for s in health.slis
        if s.value == s.value
    }
    metrics = {k.replace(":", "_").replace("@", "_"): v for k, v in metrics.items()}
    if run_id is not None:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metrics)
    else:
        ensure_experiment(tracking_uri, experiment, artifact_root)
        with mlflow.start_run(
            run_name=f"{health.flow}-label-health", tags={"semilabel.stage": health.flow}
        ):
            mlflow.log_metrics(metrics)


def label_health(store: Store, cfg: Config, facts: RunFacts, run_id: str) -> LabelHealth:
    health = LabelHealth(facts.flow, run_id, compute_slis(store, cfg, facts))
    record_slis(store, health)
    if cfg.metrics.pushgateway_url:
        error = push_slis(cfg.metrics.pushgateway_url, cfg.metrics.job, health)
        health = dataclasses.replace(health, push_error=error)
    return health


@task(name="report-label-health", cache_policy=NO_CACHE)
def report_label_health(
    cfg: Config, facts: RunFacts, run_id: str, mlflow_run_id: str | None = None
) -> LabelHealth:
    """Compute the SLIs, keep them (store, MLflow, Pushgateway) and publish them."""
    health = label_health(Store(cfg.store.root), cfg, facts, run_id)
    log_slis_to_mlflow(
        health,
        cfg.mlflow.tracking_uri,
        cfg.mlflow.experiment,
        mlflow_run_id,
        cfg.mlflow.artifact_root,
    )
    create_table_artifact(
        table=health.rows(), key="label-health-slis", description=f"{len(health.slis)} SLIs"
    )
    create_markdown_artifact(
        health.markdown(), key="label-health", description=f"{len(health.breaches)} breach(es)"
    )
    logger = get_run_logger()
    for s in health.breaches:
        logger.warning(
            "label health: %s %s = %.4f (threshold %s): %s",
            s.metric,
            dict(s.labels),
            s.value,
            s.threshold,
            METRICS[s.metric].runbook,
        )
    return health


@task(name="check-drift", cache_policy=NO_CACHE)
def drift_task(cfg: Config, model_uri: str | None) -> tuple[list[DriftCheck], list[str]]:
    """The drift checks, on the embeddings of the model at `model_uri` (None: the
    intensity histograms only)."""
    from tasks.registry.model_format import load_classifier

    model = (
        load_classifier(
            model_uri, cfg.mlflow.tracking_uri, trust_pickle=cfg.mlflow.trust_pickled_models
        )
        if model_uri
        else None
    )
    checks, newest = check_drift(Store(cfg.store.root), cfg, model)
    for c in checks:
        (get_run_logger().warning if c.breached else get_run_logger().info)(
            "drift %s%s", c.describe(), f": {c.why}" if c.breached else ""
        )
    return checks, newest


def pseudo_labels_on_gold(store: Store, cfg: Config, model: Any) -> tuple[float, float]:
    """(precision, coverage) of `model`'s pseudo-labels at `train.tau` on gold dev: what
    a monitor reports when no training ran (retrain reports the training's own)."""
    from models import predict_proba
    from tasks.gold import GoldSpec, load_gold_set
    from tasks.store import DEV

    gold = load_gold_set(store, GoldSpec.from_config(cfg), DEV)
    if len(gold) == 0:
        return float("nan"), float("nan")
    conf, pred = predict_proba(model, gold.x).max(1)
    keep = conf >= cfg.train.tau
    precision = (
        float((pred[keep] == gold.y[keep]).float().mean()) if bool(keep.any()) else float("nan")
    )
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


@task(name="measure-label-health", cache_policy=NO_CACHE)
def monitor_facts(cfg: Config, run_id: str) -> RunFacts:
    """What a monitor run measures for the SLIs: the champion's pseudo-labels on gold
    dev, drift on its embeddings, and the retrain history."""
    from tasks.registry.aliases import RegistryRef, champion_version
    from tasks.registry.model_format import load_classifier

    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    version = champion_version(ref)
    model = (
        load_classifier(
            ref.version_uri(version), ref.tracking_uri, trust_pickle=cfg.mlflow.trust_pickled_models
        )
        if version
        else None
    )
    store = Store(cfg.store.root)
    precision = coverage = None
    if model is not None:
        precision, coverage = pseudo_labels_on_gold(store, cfg, model)
    checks, _ = check_drift(store, cfg, model)
    return RunFacts(
        flow="monitor",
        pseudo_label_precision=precision,
        pseudo_label_coverage=coverage,
        retrain_outcomes=retrain_outcomes(cfg.health.retrain_window, exclude=run_id),
        drift=tuple(checks),
    )
