"""Each stream's choice from its pool, within its budget, as annotation requests:

- `train`: by the strategy (`tasks.sampling.strategies`) on the scoring model's
  probabilities and embeddings, with the model's class as the suggestion;
- `gold`: uniformly at random, with no suggestion (the holdout stays unbiased);
- `review`: the labels confident learning (`tasks.sampling.review`) finds most likely
  wrong, with the current label as the suggestion.
"""

from __future__ import annotations

import numpy as np

from tasks.sampling.pool import Pools
from tasks.sampling.requests import Request
from tasks.sampling.review import find_label_issues
from tasks.sampling.scoring import Scorer
from tasks.sampling.strategies import select


def choose_train(
    pools: Pools,
    strategy: str,
    scorer: Scorer,
    budget: int,
    classes: tuple[str, ...],
    rng: np.random.Generator,
) -> list[Request]:
    """Up to `budget` requests from the train pool, chosen by `strategy` (k-center
    starts from the human-labeled anchors)."""
    k = len(classes)
    probs, emb = pools.train.arrays(k)
    if not budget or not len(probs):
        return []
    anchors = pools.anchors.arrays(k)[1] if pools.anchors.ids else None
    sel = select(strategy, probs, emb, budget, rng, anchors)
    chosen = []
    for row, score in zip(sel.rows, sel.scores, strict=True):
        suggestion = (
            (classes[int(probs[row].argmax())], float(probs[row].max()))
            if scorer.model is not None
            else (None, None)
        )
        chosen.append(
            Request(
                pools.train.ids[row], "train", strategy, float(score), scorer.version, *suggestion
            )
        )
    return chosen


def choose_gold(pools: Pools, budget: int, rng: np.random.Generator) -> list[Request]:
    """Up to `budget` gold examples without a human label, uniformly at random."""
    if not budget or not pools.gold:
        return []
    picks = rng.permutation(len(pools.gold))[:budget]
    return [Request(pools.gold[i], "gold", "uniform", 0.0, "none") for i in picks]


def choose_review(
    pools: Pools,
    label_of: dict[str, str],
    scorer: Scorer,
    budget: int,
    classes: tuple[str, ...],
    *,
    folds: int,
    seed: int,
) -> list[Request]:
    """Up to `budget` labeled examples whose label (`label_of`) is most likely wrong,
    most likely first."""
    if not budget or not pools.review.ids:
        return []
    k = len(classes)
    _, emb = pools.review.arrays(k)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[label_of[e]] for e in pools.review.ids])
    issues = find_label_issues(emb, labels, k, folds, seed)
    chosen = []
    for row, score in list(zip(issues.rows, issues.scores, strict=True))[:budget]:
        ex = pools.review.ids[row]
        chosen.append(
            Request(ex, "review", "confident_learning", float(score), scorer.version, label_of[ex])
        )
    return chosen


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
