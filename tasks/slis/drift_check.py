"""The drift checks a store allows (`drift` holds the statistics): the newest ingest
batch against earlier ones, and the labeled examples against the unlabeled ones, gold
left out of both; and the checks as gate checks when drift blocks promotion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

from configs.data import DataSpec
from configs.health import DriftConfig
from configs.train import LabelsConfig
from tasks.images.decode import decode_images
from tasks.slis.drift import DriftCheck, compare
from tasks.slis.inputs import gold_split
from tasks.store import EXAMPLES, GoldSplit, LatestLabels, Store
from tasks.validation import Check

MIN_SIDE = 10  # examples each side of a check needs before it runs

Meta = tuple[str, str | None, datetime]  # example id, ingest run, ingested at


def check_drift(
    store: Store, data: DataSpec, drift: DriftConfig, labels: LabelsConfig, model: Any | None
) -> tuple[list[DriftCheck], list[str]]:
    """The drift checks this store allows, and the newest batch's example ids (the slice
    to sample when it drifted). `model`: embeds images (`features`); None: histograms only."""
    split = gold_split(data)
    meta = _non_gold(store, split)
    draw = _Draw(store, data, drift, np.random.default_rng(data.seed), _embedder(model))
    checks: list[DriftCheck] = []
    newest, reference = _newest_batch(meta, drift.reference_size)
    if len(newest) >= MIN_SIDE and len(reference) >= MIN_SIDE:
        checks.append(draw.compare("newest_batch", newest, reference))
    labeled, unlabeled = _by_label(store, meta, data, labels, split)
    if len(labeled) >= MIN_SIDE and len(unlabeled) >= MIN_SIDE:
        checks.append(draw.compare("labeled_vs_unlabeled", labeled, unlabeled))
    return checks, newest


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


def _non_gold(store: Store, split: GoldSplit) -> list[Meta]:
    """Every stored example outside gold: id, ingest run and time."""
    meta: list[Meta] = []
    cols = ["example_id", "run_id", "ingested_at"]
    for b in store.iter_batches(EXAMPLES, cols, batch_size=65536):
        meta += zip(*(b.column(i).to_pylist() for i in range(3)), strict=True)
    gold = split.is_gold([m[0] for m in meta])
    return [m for m, g in zip(meta, gold, strict=True) if not g]


def _newest_batch(meta: list[Meta], reference_size: int) -> tuple[list[str], list[str]]:
    """The newest ingest run's examples, and the `reference_size` newest of the earlier
    ones; nothing unless two runs ingested."""
    ran = [m for m in meta if m[1] is not None]
    if len({m[1] for m in ran}) < 2:
        return [], []
    newest_run = max(ran, key=lambda m: m[2])[1]
    earlier = sorted((m for m in meta if m[1] != newest_run), key=lambda m: m[2], reverse=True)
    return [m[0] for m in meta if m[1] == newest_run], [m[0] for m in earlier[:reference_size]]


def _by_label(
    store: Store, meta: list[Meta], data: DataSpec, labels: LabelsConfig, split: GoldSplit
) -> tuple[list[str], list[str]]:
    """The examples with a training label, and those without."""
    resolved = LatestLabels.read(store).resolve(
        confidence_floor=labels.confidence_floor,
        max_model_share=labels.max_model_share,
        leave_out=split,
        classes=data.classes,
    )
    labeled = set(resolved.column("example_id").to_pylist())
    return [m[0] for m in meta if m[0] in labeled], [m[0] for m in meta if m[0] not in labeled]


def _embedder(model: Any | None) -> Callable[[np.ndarray], np.ndarray] | None:
    if model is None:
        return None
    model = model.eval()

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.features(torch.from_numpy(images).float() / 255.0).numpy()

    return embed


@dataclass(frozen=True)
class _Draw:
    """Draws each side's sample (one random generator for every draw and test, in
    order) and compares them."""

    store: Store
    data: DataSpec
    drift: DriftConfig
    rng: np.random.Generator
    embed: Callable[[np.ndarray], np.ndarray] | None

    def compare(self, name: str, ids: list[str], other: list[str]) -> DriftCheck:
        d = self.drift
        return compare(
            name,
            self._images(self._sample(ids)),
            self._images(self._sample(other)),
            self.embed,
            permutations=d.permutations,
            p_value=d.p_value,
            js_threshold=d.js_threshold,
            rng=self.rng,
        )

    def _sample(self, ids: list[str]) -> list[str]:
        return [ids[i] for i in self.rng.permutation(len(ids))[: self.drift.sample_size]]

    def _images(self, ids: list[str]) -> np.ndarray:
        size, channels = self.data.image_size, self.data.channels
        blobs: dict[str, bytes] = {}
        flt = pc.field("example_id").isin(ids)
        for rb in self.store.iter_batches(EXAMPLES, ["example_id", "image"], filter=flt):
            blobs.update(zip(rb.column(0).to_pylist(), rb.column(1).to_pylist(), strict=True))
        ordered = [blobs[i] for i in ids if i in blobs]
        if not ordered:
            return np.zeros((0, channels, size, size), np.uint8)
        return decode_images(ordered, size, channels)
