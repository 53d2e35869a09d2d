"""The candidate and the pinned champion evaluated on the same gold test snapshot."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models import predict_proba
from tasks.registry.aliases import (
    RegistryRef,
    champion_version,
)
from tasks.registry.model_format import load_classifier
from tasks.store import TEST, Store
from tasks.validation import (
    GoldEvidence,
    GoldMetrics,
    gold_metrics,
)
from tasks.validation.gold import GoldSet, GoldSpec, predict_gold, select_gold
from tasks.validation.next_step import GoldPool

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    gold: GoldSet
    candidate: GoldMetrics
    candidate_probs: np.ndarray
    champion: GoldMetrics | None
    champion_version: str | None  # the pinned version evaluated; None: no champion
    champion_probs: np.ndarray | None = None  # on the same gold examples, same order
    pool: GoldPool | None = None  # the gold pool behind the next step
    classes: tuple[str, ...] = ()

    def evidence(self) -> GoldEvidence:
        return GoldEvidence(
            self.classes,
            self.gold.y.numpy(),
            self.candidate_probs,
            self.champion_probs,
            self.gold.slices,
        )


def evaluate_candidate_and_champion(
    store: Store, spec: GoldSpec, ref: RegistryRef, candidate_uri: str, *, trust_pickle: bool
) -> Evaluation:
    """Both models on the same gold test snapshot, in the same run and the same pass over
    the gold images (read in batches, never all at once); the champion pinned to the
    version that held the alias when this started."""
    selection = select_gold(store, spec, TEST)
    models = [load_classifier(candidate_uri, ref.tracking_uri)]
    version = champion_version(ref)
    if version is not None:
        models.append(
            load_classifier(ref.version_uri(version), ref.tracking_uri, trust_pickle=trust_pickle)
        )
    predicted = predict_gold(store, spec, selection, models)
    gold, y = predicted.gold, selection.y
    probs = predicted.probs[0]
    candidate = gold_metrics(probs, y, spec.classes)
    champion = champ_probs = None
    if version is not None:
        champ_probs = predicted.probs[1]
        champion = gold_metrics(champ_probs, y, spec.classes)
    pool = GoldPool(
        spec.split.fraction, spec.split.test_share, gold.unlabeled_gold, gold.n_examples
    )
    return Evaluation(gold, candidate, probs, champion, version, champ_probs, pool, spec.classes)


def gold_probabilities(model: torch.nn.Module, gold: GoldSet, spec: GoldSpec) -> np.ndarray:
    """Class probabilities (N, K) of `model` on a gold set loaded with its pixels
    (`load_gold_set`; empty gold: (0, K)). A streamed one has none: see `predict_gold`."""
    if len(gold) == 0:
        return np.zeros((0, len(spec.classes)))
    if gold.x is None:
        raise ValueError("this gold set was streamed and holds no pixels: use predict_gold")
    return predict_proba(model, gold.x).numpy()


@task(name="evaluate-on-gold", cache_policy=NO_CACHE)
def evaluate_on_gold(
    store_root: str, spec: GoldSpec, ref: RegistryRef, candidate_uri: str, trust_pickle: bool
) -> Evaluation:
    """Evaluate the candidate and the pinned champion on the same gold test snapshot."""
    ev = evaluate_candidate_and_champion(
        Store(store_root), spec, ref, candidate_uri, trust_pickle=trust_pickle
    )
    get_run_logger().info(
        "gold test (%d labels; dev %d): candidate accuracy %.4f%s",
        ev.candidate.n,
        ev.gold.sizes.get("dev", 0),
        ev.candidate.accuracy,
        f", champion v{ev.champion_version} {ev.champion.accuracy:.4f}" if ev.champion else "",
    )
    return ev
