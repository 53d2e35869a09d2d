"""The sampling stage's runs: `sample_for_annotation` (the three streams, each within
its budget) and `sample_slice` (one slice, e.g. a drifted ingest batch), each recording
its choice as annotation requests; and their Prefect tasks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.data import DataSpec
from configs.sampling import SamplingConfig
from tasks.sampling.inputs import SamplingInputs
from tasks.sampling.pool import Pools, find_pools, store_ids
from tasks.sampling.requests import STREAMS, Backlog, Request, RequestLog, write_requests
from tasks.sampling.scoring import NO_SCORER, Scorer, scoring_model
from tasks.sampling.streams import choose_gold, choose_review, choose_train, gold_shortfall
from tasks.store import GoldSplit, LatestLabels, Store, utcnow
from tasks.training.decoded_cache import cache_root, decoded_cache


@dataclass(frozen=True)
class SamplingResult:
    batch_id: str
    strategy: str
    model_version: str
    requests: list[dict]  # the rows written to annotation_requests
    candidates: dict[str, int]  # pool size per stream
    backlog: Backlog
    shortfalls: tuple[str, ...] = ()  # why a stream got less than its budget

    def requested(self) -> dict[str, int]:
        return {s: sum(r["stream"] == s for r in self.requests) for s in STREAMS}

    def rows(self) -> list[dict[str, object]]:
        n = self.requested()
        rows: list[dict[str, object]] = [
            {"metric": "batch", "value": self.batch_id},
            {"metric": "scored by", "value": self.model_version},
            {"metric": "train strategy", "value": self.strategy},
        ]
        rows += [
            {"metric": f"requested: {s}", "value": f"{n[s]} of {self.candidates.get(s, 0)}"}
            for s in STREAMS
        ]
        rows += [{"metric": "fewer than asked", "value": why} for why in self.shortfalls]
        return rows + self.backlog.rows()


def batch_rng(seed: int, batch_id: str) -> np.random.Generator:
    """The batch's random draws: the same seed and batch id draw the same examples."""
    digest = hashlib.blake2b(f"{seed}:{batch_id}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest))


def sample_for_annotation(
    store: Store, inputs: SamplingInputs, run_id: str, *, now: datetime | None = None
) -> SamplingResult:
    """Choose examples for each stream within its budget and record the requests."""
    plan, data = inputs.sampling, inputs.data
    batch_id = f"{(now or utcnow()):%Y%m%dT%H%M%S}-{run_id[:8]}"
    rng = batch_rng(data.seed, batch_id)
    known = _Known.read(store, inputs)
    scorer = scoring_model(store, inputs) if _needs_model(plan) else NO_SCORER
    strategy = plan.strategy if scorer.model is not None else "random"
    pools = _read_pools(store, inputs, known, scorer, strategy)
    chosen = [
        *choose_train(pools, strategy, scorer, plan, data.classes, rng),
        *choose_gold(pools, plan.budget.gold, rng),
        *choose_review(pools, scorer, plan, data.classes, rng, seed=data.seed),
    ]
    rows = write_requests(store, chosen, run_id=run_id, batch_id=batch_id)
    return SamplingResult(
        batch_id=batch_id,
        strategy=strategy,
        model_version=scorer.version,
        requests=rows,
        candidates={
            "train": len(pools.train),
            "gold": len(pools.gold),
            "review": len(pools.review),
        },
        backlog=RequestLog.read(store).backlog(),
        shortfalls=_shortfalls(chosen, pools, plan, data),
    )


@dataclass(frozen=True)
class _Known:
    """What the store already knows before this batch: the requests made and answered,
    and each example's resolved training label (gold left out), as Arrow columns."""

    requests: RequestLog
    labels: pa.Table  # example_id, label

    @classmethod
    def read(cls, store: Store, inputs: SamplingInputs) -> _Known:
        data, labels = inputs.data, inputs.labels
        resolved = LatestLabels.read(store).resolve(
            confidence_floor=labels.confidence_floor,
            max_model_share=labels.max_model_share,
            leave_out=_split(data),
            classes=data.classes,
        )
        return cls(RequestLog.read(store), resolved.select(["example_id", "label"]))


def _split(data: DataSpec) -> GoldSplit:
    return GoldSplit(data.gold.fraction, data.gold.salt, data.gold.test_share)


def _needs_model(plan: SamplingConfig) -> bool:
    """Whether any stream needs a scoring model: review always, train unless random."""
    return plan.budget.review > 0 or (plan.budget.train > 0 and plan.strategy != "random")


def _read_pools(
    store: Store, inputs: SamplingInputs, known: _Known, scorer: Scorer, strategy: str
) -> Pools:
    """Each stream's candidates (see `tasks.sampling.pool`): rows of the decoded cache
    when a model scores them, else the store's ids alone (nothing is decoded)."""
    data, plan = inputs.data, inputs.sampling
    cache = None
    if scorer.model is not None and (plan.budget.train or plan.budget.review):
        root = cache_root(inputs.train.cache_dir, data.root)
        cache = decoded_cache(store, root, data.image_size, data.channels)
    return find_pools(
        cache.example_ids if cache is not None else store_ids(store),
        cache,
        split=_split(data),
        human=_ids(known.requests.human_labeled),
        labels=known.labels,
        blocked={s: _ids(known.requests.blocked(s)) for s in STREAMS},
        want_anchors=strategy == "kcenter",
        want_review=plan.budget.review > 0 and scorer.model is not None,
    )


def _ids(ids: Iterable[str]) -> pa.Array:
    """A label- or request-sized set of ids, as an Arrow array for `pc.is_in`."""
    return pa.array(sorted(ids), pa.string())


def _shortfalls(
    chosen: list[Request], pools: Pools, plan: SamplingConfig, data: DataSpec
) -> tuple[str, ...]:
    """Why a stream got fewer than its budget (the gold stream says why)."""
    n_gold = sum(r.stream == "gold" for r in chosen)
    if n_gold >= plan.budget.gold:
        return ()
    return (gold_shortfall(plan.budget.gold, n_gold, pools, data.gold.fraction),)


def sample_slice(
    store: Store,
    data: DataSpec,
    sampling: SamplingConfig,
    run_id: str,
    example_ids: list[str],
    reason: str,
) -> SamplingResult:
    """Request labels for examples of one slice (e.g. a drifted ingest batch), at random
    within `sampling.budget.train`, skipping those labeled or already requested."""
    batch_id = f"{utcnow():%Y%m%dT%H%M%S}-{reason}-{run_id[:8]}"
    blocked = RequestLog.read(store).blocked("train")
    open_ids = [e for e in example_ids if e not in blocked]
    rng = batch_rng(data.seed, batch_id)
    picks = [open_ids[i] for i in rng.permutation(len(open_ids))[: sampling.budget.train]]
    rows = write_requests(
        store,
        [Request(e, "train", reason, 1.0, "none") for e in picks],
        run_id=run_id,
        batch_id=batch_id,
    )
    return SamplingResult(
        batch_id, reason, "none", rows, {"train": len(open_ids)}, RequestLog.read(store).backlog()
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="sample-for-annotation", cache_policy=NO_CACHE)
def sample_examples(inputs: SamplingInputs, run_id: str) -> SamplingResult:
    """Choose what to label next and record the requests; publish them and the backlog."""
    result = sample_for_annotation(Store(inputs.data.root), inputs, run_id)
    n = result.requested()
    get_run_logger().info(
        "requested %s (batch %s, scored by %s)",
        ", ".join(f"{v} {s}" for s, v in n.items()),
        result.batch_id,
        result.model_version,
    )
    for why in result.shortfalls:
        get_run_logger().warning(why)
    create_table_artifact(
        table=result.rows(), key="annotation-requests", description=f"Batch {result.batch_id}"
    )
    create_table_artifact(
        table=result.backlog.rows(),
        key="annotation-backlog",
        description="Open requests and time to answer",
    )
    return result


@task(name="sample-drifted-slice", cache_policy=NO_CACHE)
def sample_drifted(
    data: DataSpec, sampling: SamplingConfig, run_id: str, example_ids: list[str]
) -> SamplingResult:
    """Request labels on the newest ingest batch, which drifted."""
    result = sample_slice(Store(data.root), data, sampling, run_id, example_ids, "drift")
    get_run_logger().warning(
        "the newest ingest batch drifted: %d of its examples requested for annotation",
        len(result.requests),
    )
    return result
