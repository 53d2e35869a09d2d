"""The sampling stage: choose what people should label next, in three streams with their
own budgets, and record each choice as an annotation request in the store.

- `train`: the unlabeled, non-gold pool, chosen by `sampling.strategy` (see
  `tasks.sampling.strategies`) from the champion's predictions and embeddings, or a
  teacher's trained on the current labels when there is no champion yet;
- `gold`: gold-holdout examples without a human label, uniformly at random, so the gold
  set grows without bias;
- `review`: existing labels most likely wrong, by confident learning
  (`tasks.sampling.review`), to be checked again.

`strategies`, `pool`, `review` and `requests` hold the pieces; this module runs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.schema import Config
from models import Classifier, fit
from tasks.registry.aliases import RegistryRef, champion_version
from tasks.registry.model_format import load_classifier
from tasks.sampling.pool import Pools, read_pools
from tasks.sampling.requests import STREAMS, Backlog, Request, RequestLog, write_requests
from tasks.sampling.review import find_label_issues
from tasks.sampling.strategies import STRATEGIES, Selection, select
from tasks.store import GoldSplit, LatestLabels, Store, utcnow
from tasks.training import NotEnoughDataError, load_training_data

log = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "STREAMS", "SamplingResult", "sample_examples", "sample_for_annotation"]


@dataclass(frozen=True)
class Scorer:
    model: Classifier | None
    version: str  # "<model>@v3", "teacher@<data>", or "none"


def scoring_model(store: Store, cfg: Config) -> Scorer:
    """The champion (pinned), or on a cold start a supervised teacher trained on the
    current labels; without any label, nothing (only `random` can choose then)."""
    ref = RegistryRef(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
    version = champion_version(ref)
    if version is not None:
        model = load_classifier(
            ref.version_uri(version), ref.tracking_uri, trust_pickle=cfg.mlflow.trust_pickled_models
        )
        return Scorer(model, f"{ref.model_name}@v{version}")
    try:
        training = load_training_data(store, cfg)
    except NotEnoughDataError as exc:
        log.warning("no model to score with (%s): sampling falls back to random", exc)
        return Scorer(None, "none")
    settings = dataclasses.replace(
        cfg.train_settings(),
        teacher_steps=cfg.sampling.cold_start_steps,
        student_steps=0,
        checkpoint_every=0,
    )
    log.info(
        "no champion yet: a teacher trained on %d labels scores the pool",
        training.n_human + training.n_weak,
    )
    result = fit(dataclasses.replace(training.data, x_eval=None, y_eval=None), settings)
    return Scorer(result.teacher, f"teacher@{training.data.fingerprint()}")


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


def _rng(seed: int, batch_id: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}:{batch_id}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest))


def sample_for_annotation(
    store: Store, cfg: Config, run_id: str, *, now: datetime | None = None
) -> SamplingResult:
    """Choose examples for each stream within its budget and record the requests."""
    plan = cfg.sampling
    batch_id = f"{(now or utcnow()):%Y%m%dT%H%M%S}-{run_id[:8]}"
    rng = _rng(cfg.seed, batch_id)
    classes = tuple(cfg.taxonomy.classes)
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    requests_log = RequestLog.read(store)
    blocked = {s: requests_log.blocked(s) for s in STREAMS}
    resolved = LatestLabels.read(store).resolve(
        confidence_floor=cfg.labels.confidence_floor,
        max_model_share=cfg.labels.max_model_share,
        leave_out=split,
        classes=classes,
    )
    label_of = dict(
        zip(
            resolved.column("example_id").to_pylist(),
            resolved.column("label").to_pylist(),
            strict=True,
        )
    )
    needs_model = plan.budget.review > 0 or (plan.budget.train > 0 and plan.strategy != "random")
    scorer = scoring_model(store, cfg) if needs_model else Scorer(None, "none")
    strategy = plan.strategy if scorer.model is not None else "random"
    pools: Pools = read_pools(
        store,
        scorer.model,
        split=split,
        classes=classes,
        image_size=cfg.train.image_size,
        channels=cfg.train.channels,
        human=set(requests_log.human_labeled),
        labeled=set(label_of),
        blocked=blocked,
        want_anchors=strategy == "kcenter",
        want_review=plan.budget.review > 0 and scorer.model is not None,
    )
    k = len(classes)
    chosen: list[Request] = []

    probs, emb = pools.train.arrays(k)
    if plan.budget.train and len(probs):
        anchors = pools.anchors.arrays(k)[1] if pools.anchors.ids else None
        sel: Selection = select(strategy, probs, emb, plan.budget.train, rng, anchors)
        for row, score in zip(sel.rows, sel.scores, strict=True):
            suggestion = (
                (classes[int(probs[row].argmax())], float(probs[row].max()))
                if scorer.model is not None
                else (None, None)
            )
            chosen.append(
                Request(
                    pools.train.ids[row],
                    "train",
                    strategy,
                    float(score),
                    scorer.version,
                    *suggestion,
                )
            )

    if plan.budget.gold and pools.gold:
        picks = rng.permutation(len(pools.gold))[: plan.budget.gold]
        chosen += [Request(pools.gold[i], "gold", "uniform", 0.0, "none") for i in picks]

    if plan.budget.review and pools.review.ids:
        r_probs, r_emb = pools.review.arrays(k)
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[label_of[e]] for e in pools.review.ids])
        issues = find_label_issues(r_emb, labels, k, plan.review_folds, cfg.seed)
        for row, score in list(zip(issues.rows, issues.scores, strict=True))[: plan.budget.review]:
            ex = pools.review.ids[row]
            chosen.append(
                Request(
                    ex, "review", "confident_learning", float(score), scorer.version, label_of[ex]
                )
            )

    rows = write_requests(store, chosen, run_id=run_id, batch_id=batch_id)
    shortfalls = []
    n_gold = sum(r.stream == "gold" for r in chosen)
    if n_gold < plan.budget.gold:
        shortfalls.append(_gold_shortfall(plan.budget.gold, n_gold, pools, split.fraction))
    return SamplingResult(
        batch_id=batch_id,
        strategy=strategy,
        model_version=scorer.version,
        requests=rows,
        candidates={
            "train": len(pools.train.ids),
            "gold": len(pools.gold),
            "review": len(pools.review.ids),
        },
        backlog=RequestLog.read(store).backlog(),
        shortfalls=tuple(shortfalls),
    )


def _gold_shortfall(budget: int, got: int, pools: Pools, fraction: float) -> str:
    """Why the gold stream asked for fewer than sampling.budget.gold, and what to do."""
    labeled, requested = pools.gold_skipped["labeled"], pools.gold_skipped["requested"]
    head = f"gold: {got} of the {budget} asked for; of the {pools.gold_total} gold examples"
    if pools.gold_total == 0:
        return (
            f"gold: none of the {budget} asked for: the store has no gold examples (gold is "
            f"{fraction:g} of the ingested images, by id hash); ingest images first"
        )
    if labeled == pools.gold_total:
        return (
            f"{head}, every one already has a human label: to grow gold, ingest more images "
            f"(a share of {fraction:g} of new ones joins gold)"
        )
    return (
        f"{head}, {labeled} already have a human label and {requested} have a request "
        "still open (answer or import those first: `semilabel annotate import --file ...`)"
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="sample-for-annotation", cache_policy=NO_CACHE)
def sample_examples(cfg: Config, run_id: str) -> SamplingResult:
    """Choose what to label next and record the requests; publish them and the backlog."""
    result = sample_for_annotation(Store(cfg.store.root), cfg, run_id)
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


def sample_slice(
    store: Store, cfg: Config, run_id: str, example_ids: list[str], reason: str
) -> SamplingResult:
    """Request labels for examples of one slice (e.g. a drifted ingest batch), at random
    within `sampling.budget.train`, skipping those labeled or already requested."""
    batch_id = f"{utcnow():%Y%m%dT%H%M%S}-{reason}-{run_id[:8]}"
    log_ = RequestLog.read(store)
    blocked = log_.blocked("train")
    open_ids = [e for e in example_ids if e not in blocked]
    rng = _rng(cfg.seed, batch_id)
    picks = [open_ids[i] for i in rng.permutation(len(open_ids))[: cfg.sampling.budget.train]]
    rows = write_requests(
        store,
        [Request(e, "train", reason, 1.0, "none") for e in picks],
        run_id=run_id,
        batch_id=batch_id,
    )
    return SamplingResult(
        batch_id, reason, "none", rows, {"train": len(open_ids)}, RequestLog.read(store).backlog()
    )


@task(name="sample-drifted-slice", cache_policy=NO_CACHE)
def sample_drifted(cfg: Config, run_id: str, example_ids: list[str]) -> SamplingResult:
    result = sample_slice(Store(cfg.store.root), cfg, run_id, example_ids, "drift")
    get_run_logger().warning(
        "the newest ingest batch drifted: %d of its examples requested for annotation",
        len(result.requests),
    )
    return result
