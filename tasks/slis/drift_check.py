"""The drift checks a store allows (`drift` holds the statistics): the newest ingest
batch against earlier ones, and the labeled examples against the unlabeled ones, gold
left out of both; and the checks as gate checks when drift blocks promotion.

Each side is a fixed-size sample, whatever the store's size: the examples' ids, ingest
runs and times are streamed as Arrow batches (never a Python object per example), each
side keeps a seeded `Reservoir` of `drift.sample_size` ids (the reference window a
`NewestRows` of `drift.reference_size`), and only those ids' images are read (in one
pass) and the drawn ones decoded. Where a side's population fits its sample, the
sample is that population in storage order, so small stores get the same checks as a
full read would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from configs.data import DataSpec
from configs.health import DriftConfig
from configs.train import LabelsConfig
from models import inference_input
from tasks.images.decode import decode_images
from tasks.slis.drift import DriftCheck, compare
from tasks.slis.inputs import gold_split
from tasks.store import EXAMPLES, GoldSplit, LatestLabels, Store
from tasks.validation import Check

MIN_SIDE = 10  # examples each side of a check needs before it runs
META_COLUMNS = ["example_id", "run_id", "ingested_at"]
META_BATCH = 65536  # rows of id, run and time per streamed batch (a few MB)
_TS = pa.timestamp("us", tz="UTC")


def check_drift(
    store: Store, data: DataSpec, drift: DriftConfig, labels: LabelsConfig, model: Any | None
) -> tuple[list[DriftCheck], list[str]]:
    """The drift checks this store allows, and the newest batch's example ids when it
    drifted (the slice to sample; none when it did not). `model`: embeds images
    (`features`); None: histograms only. Reads the ids, runs and times in batches, and the
    images of the samples only."""
    split = gold_split(data)
    sides = _Sides.stream(store, split, _resolved_ids(store, data, labels, split), drift, data.seed)
    pairs: list[tuple[str, list[str], list[str]]] = []
    if sides.newest.seen >= MIN_SIDE and sides.reference.seen >= MIN_SIDE:
        pairs.append(("newest_batch", sides.newest.ids, sides.reference.ids))
    if sides.labeled.seen >= MIN_SIDE and sides.unlabeled.seen >= MIN_SIDE:
        pairs.append(("labeled_vs_unlabeled", sides.labeled.ids, sides.unlabeled.ids))
    blobs = _blobs(store, {i for _, a, b in pairs for i in (*a, *b)})
    draw = _Draw(data, drift, np.random.default_rng(data.seed), _embedder(model), blobs)
    checks = [draw.compare(*pair) for pair in pairs]
    drifted = any(c.breached and c.name == "newest_batch" for c in checks)
    return checks, _run_examples(store, split, sides.newest_run) if drifted else []


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


class Reservoir:
    """A uniform random sample of at most `size` of the ids streamed through `add`, kept
    in stream order; `seen` counts them all. Each id draws a random key from the seeded
    generator and the `size` smallest keys stay (bottom-k reservoir sampling), so the same
    stream and seed give the same sample however the stream is cut into batches, and a
    stream of at most `size` ids is kept whole."""

    def __init__(self, size: int, seed: int | np.random.SeedSequence):
        if size < 1:
            raise ValueError(f"a reservoir holds at least one id, not {size}")
        self.size = size
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0, np.float64)
        self._ids = pa.array([], pa.string())

    def add(self, ids: pa.Array | pa.ChunkedArray) -> None:
        """Offer the next ids of the stream."""
        ids = _one_array(ids)
        keys = self._rng.random(len(ids))  # one draw per id, whatever the batch
        self.seen += len(ids)
        if len(self._keys) == self.size:  # full: only keys below the largest kept enter
            enter = keys < self._keys.max()
            keys, ids = keys[enter], ids.filter(pa.array(enter))
        if not len(ids):
            return
        keys = np.concatenate([self._keys, keys])
        ids = pa.concat_arrays([self._ids, ids])
        if len(keys) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[: self.size])  # stream order
            keys, ids = keys[keep], ids.take(pa.array(keep))
        self._keys, self._ids = keys, ids

    @property
    def ids(self) -> list[str]:
        """The sample, in stream order."""
        return self._ids.to_pylist()


class NewestRows:
    """The `size` ids with the latest times of those streamed through `add` (equal times:
    the earlier in the stream first), newest first; `seen` counts them all."""

    def __init__(self, size: int):
        self.size = size
        self.seen = 0
        self._us = np.empty(0, np.int64)  # microseconds since the epoch
        self._at = np.empty(0, np.int64)  # position in the stream
        self._ids = pa.array([], pa.string())

    def add(self, ids: pa.Array | pa.ChunkedArray, times: pa.Array | pa.ChunkedArray) -> None:
        ids = _one_array(ids)
        us = _micros(times)
        at = np.arange(self.seen, self.seen + len(ids), dtype=np.int64)
        self.seen += len(ids)
        if len(self._us) == self.size:  # full: only later times enter (equal: kept is earlier)
            enter = us > self._us.min()
            us, at, ids = us[enter], at[enter], ids.filter(pa.array(enter))
        if not len(ids):
            return
        us = np.concatenate([self._us, us])
        at = np.concatenate([self._at, at])
        ids = pa.concat_arrays([self._ids, ids])
        keep = np.lexsort((at, -us))[: self.size]  # newest first, then stream order
        self._us, self._at, self._ids = us[keep], at[keep], ids.take(pa.array(keep))

    @property
    def ids(self) -> list[str]:
        return self._ids.to_pylist()


@dataclass
class _Sides:
    """Each check's two sides, sampled from the examples outside gold."""

    newest: Reservoir  # the newest ingest run's examples
    reference: NewestRows  # the newest examples of the earlier runs (or of no run)
    labeled: Reservoir  # examples with a training label
    unlabeled: Reservoir
    newest_run: str | None  # None unless two runs ingested

    @classmethod
    def stream(
        cls, store: Store, split: GoldSplit, labeled: pa.Array, drift: DriftConfig, seed: int
    ) -> _Sides:
        """Two passes over the examples' ids, runs and times: the runs and the labeled and
        unlabeled samples; then, when two runs ingested, the newest run's sample and the
        reference window."""
        newest_seed, labeled_seed, unlabeled_seed = np.random.SeedSequence(seed).spawn(3)
        sides = cls(
            Reservoir(drift.sample_size, newest_seed),
            NewestRows(drift.reference_size),
            Reservoir(drift.sample_size, labeled_seed),
            Reservoir(drift.sample_size, unlabeled_seed),
            None,
        )
        runs: set[str] = set()  # one entry per ingest run, not per example
        newest_run, newest_us = None, np.iinfo(np.int64).min
        for b in _non_gold(store, split):
            is_labeled = pc.is_in(b.column("example_id"), value_set=labeled)
            sides.labeled.add(b.column("example_id").filter(is_labeled))
            sides.unlabeled.add(b.column("example_id").filter(pc.invert(is_labeled)))
            ran = b.filter(pc.is_valid(b.column("run_id")))
            if ran.num_rows:
                runs.update(pc.unique(ran.column("run_id")).to_pylist())
                us = _micros(ran.column("ingested_at"))
                i = int(np.argmax(us))  # the first of the batch's latest
                if us[i] > newest_us:  # strictly: the first stored of equally late runs wins
                    newest_run, newest_us = ran.column("run_id")[i].as_py(), us[i]
        if len(runs) < 2:
            return sides
        sides.newest_run = newest_run
        for b in _non_gold(store, split):
            is_newest = _of_run(b, newest_run)
            sides.newest.add(b.column("example_id").filter(is_newest))
            earlier = b.filter(pc.invert(is_newest))
            sides.reference.add(earlier.column("example_id"), earlier.column("ingested_at"))
        return sides


def _of_run(batch: pa.RecordBatch, run: str | None) -> pa.Array:
    return pc.fill_null(pc.equal(batch.column("run_id"), run), False)


def _run_examples(store: Store, split: GoldSplit, run: str | None) -> list[str]:
    """The examples outside gold that `run` ingested, in storage order."""
    ids: list[str] = []
    for b in _non_gold(store, split):
        ids += b.column("example_id").filter(_of_run(b, run)).to_pylist()
    return ids


def _non_gold(store: Store, split: GoldSplit) -> Iterator[pa.RecordBatch]:
    """The stored examples outside gold, batch by batch: id, ingest run and time."""
    for b in store.iter_batches(EXAMPLES, META_COLUMNS, batch_size=META_BATCH, lean=True):
        yield b.filter(pa.array(~split.is_gold(b.column("example_id"))))


def _resolved_ids(store: Store, data: DataSpec, labels: LabelsConfig, split: GoldSplit) -> pa.Array:
    """The examples with a training label."""
    resolved = LatestLabels.read(store).resolve(
        confidence_floor=labels.confidence_floor,
        max_model_share=labels.max_model_share,
        leave_out=split,
        classes=data.classes,
    )
    return _one_array(resolved.column("example_id"))


def _one_array(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        return pa.concat_arrays(ids.chunks) if ids.num_chunks else pa.array([], ids.type)
    return ids


def _micros(times: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(times, _TS).cast(pa.int64()), dtype=np.int64)


def _embedder(model: Any | None) -> Callable[[np.ndarray], np.ndarray] | None:
    if model is None:
        return None
    model = model.eval()

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.features(inference_input(torch.from_numpy(images))).numpy()

    return embed


def _blobs(store: Store, ids: set[str]) -> dict[str, bytes]:
    """The encoded images of `ids` (the samples and the reference window): one pass over
    the store, a batch at a time."""
    blobs: dict[str, bytes] = {}
    if not ids:
        return blobs
    flt = pc.field("example_id").isin(pa.array(sorted(ids), pa.string()))
    for rb in store.iter_batches(EXAMPLES, ["example_id", "image"], filter=flt, lean=True):
        blobs.update(zip(rb.column(0).to_pylist(), rb.column(1).to_pylist(), strict=True))
    return blobs


@dataclass(frozen=True)
class _Draw:
    """Draws each side's sample (one random generator for every draw and test, in
    order), decodes its images and compares them."""

    data: DataSpec
    drift: DriftConfig
    rng: np.random.Generator
    embed: Callable[[np.ndarray], np.ndarray] | None
    blobs: dict[str, bytes]  # every image a draw can choose, encoded

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
        ordered = [self.blobs[i] for i in ids if i in self.blobs]
        if not ordered:
            return np.zeros((0, channels, size, size), np.uint8)
        return decode_images(ordered, size, channels)
