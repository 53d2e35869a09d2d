"""Each stream's choice from its pool, within its budget, as annotation requests:

- `train`: by the strategy (`tasks.sampling.strategies`) on the scoring model's
  probabilities and embeddings, with the model's class as the suggestion;
- `gold`: uniformly at random, with no suggestion (the holdout stays unbiased);
- `review`: the labels confident learning (`tasks.sampling.review`) finds most likely
  wrong, with the current label as the suggestion; it considers at most
  `sampling.review_pool_max` labeled examples, a uniform sample drawn with the batch's
  generator (with weak labeling on, the labeled pool approaches the whole store).
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from configs.sampling import SamplingConfig
from tasks.sampling.candidates import KeepPlan, Picked, finish, sampled, uniform_sample
from tasks.sampling.pool import Pools, score_rows
from tasks.sampling.requests import Request
from tasks.sampling.review import find_label_issues
from tasks.sampling.scoring import Scorer
from tasks.sampling.shards import score_pool
from tasks.sampling.strategies import Selection, select_random

log = logging.getLogger(__name__)


def choose_train(
    pools: Pools,
    strategy: str,
    scorer: Scorer,
    plan: SamplingConfig,
    classes: tuple[str, ...],
    rng: np.random.Generator,
) -> list[Request]:
    """Up to `plan.budget.train` requests from the train pool, chosen by `strategy`
    (k-center starts from the human-labeled anchors). The pool is scored shard by shard
    (`tasks.sampling.shards`), keeping only what the strategy needs; k-center on a pool
    larger than its sample scores the sample alone."""
    budget, k, n = plan.budget.train, len(classes), len(pools.train)
    if not budget or not n:
        return []
    if strategy == "random" or scorer.model is None:
        sel = select_random(np.empty((n, 0)), budget, rng)
        probs = (
            score_rows(pools.cache, pools.train[sel.rows], scorer.model, k, plan.batch_rows)[0]
            if scorer.model is not None
            else None
        )
        picked = Picked(sel, probs)
    else:
        keep = KeepPlan(strategy, budget, k, n, plan.candidates_per_pick)
        if strategy == "kcenter" and keep.draws:  # a uniform sample: score its rows alone
            pos, jitter = uniform_sample(keep, rng)
            probs, emb = score_rows(pools.cache, pools.train[pos], scorer.model, k, plan.batch_rows)
            kept = sampled(keep, pos, jitter, probs, emb)
        else:
            kept = score_pool(pools.cache, pools.train, scorer.model, keep, rng, plan)
        anchors = None
        if strategy == "kcenter" and len(pools.anchors):
            anchors = score_rows(pools.cache, pools.anchors, scorer.model, k, plan.batch_rows)[1]
        picked = finish(keep, kept, rng, anchors)
    return _train_requests(pools, picked, strategy, scorer, classes)


def _train_requests(
    pools: Pools, picked: Picked, strategy: str, scorer: Scorer, classes: tuple[str, ...]
) -> list[Request]:
    sel: Selection = picked.selection
    ids = pools.example_ids(pools.train[sel.rows])
    chosen = []
    for i, (ex, score) in enumerate(zip(ids, sel.scores, strict=True)):
        suggestion = (
            (classes[int(picked.probs[i].argmax())], float(picked.probs[i].max()))
            if picked.probs is not None
            else (None, None)
        )
        chosen.append(Request(ex, "train", strategy, float(score), scorer.version, *suggestion))
    return chosen


def choose_gold(pools: Pools, budget: int, rng: np.random.Generator) -> list[Request]:
    """Up to `budget` gold examples without a human label, uniformly at random."""
    if not budget or not len(pools.gold):
        return []
    picks = rng.permutation(len(pools.gold))[:budget]
    ids = pools.gold.take(pa.array(picks)).to_pylist()
    return [Request(ex, "gold", "uniform", 0.0, "none") for ex in ids]


def choose_review(
    pools: Pools,
    scorer: Scorer,
    plan: SamplingConfig,
    classes: tuple[str, ...],
    rng: np.random.Generator,
    *,
    seed: int,
) -> list[Request]:
    """Up to `plan.budget.review` labeled examples whose label is most likely wrong,
    most likely first, found by confident learning over at most `plan.review_pool_max`
    of them (`review_rows`); their embeddings are scored batch by batch and the
    out-of-fold regression is seeded by `seed`."""
    budget = plan.budget.review
    if not budget or not len(pools.review) or scorer.model is None:
        return []
    k = len(classes)
    at = review_rows(len(pools.review), plan.review_pool_max, rng)
    if len(at) < len(pools.review):
        log.info(
            "review: confident learning over %d of the %d labeled examples, drawn at random "
            "(sampling.review_pool_max)",
            len(at),
            len(pools.review),
        )
    rows, given = pools.review[at], pools.review_labels.take(pa.array(at))
    _, emb = score_rows(pools.cache, rows, scorer.model, k, plan.batch_rows)
    labels = pc.index_in(given, value_set=pa.array(classes)).to_numpy()
    issues = find_label_issues(emb, labels, k, plan.review_folds, seed)
    top = issues.rows[:budget]
    ids = pools.example_ids(rows[top])
    said = given.take(pa.array(top, pa.int64())).to_pylist()
    return [
        Request(ex, "review", "confident_learning", float(score), scorer.version, label)
        for ex, score, label in zip(ids, issues.scores[:budget], said, strict=True)
    ]


def review_rows(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Positions in a review pool of `n` that confident learning considers, ascending:
    all of them when `n <= cap` (and nothing is drawn from `rng`), else a uniform sample
    of `cap` without replacement. Uniform over human and weak labels alike: the sample
    is a miniature of the labels training uses, so the per-class thresholds and the
    noise confident learning estimates from it are those of the whole pool; the batch's
    generator gives each batch its own sample, the same again for the same seed and
    batch."""
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def gold_shortfall(budget: int, got: int, pools: Pools, fraction: float) -> str:
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
