"""The gold holdout for evaluation: the latest human label of every gold example in one
part (`test` for the gate and the monitor, `dev` for choosing), and a snapshot of
exactly which examples and label events they were.

Two passes over the store, neither of which holds more than a batch of images:

- `select_gold` reads the example ids only: which gold examples of the part are stored
  (the first row of each, however many times an older version stored it), their labels,
  how many gold examples have no label yet, and the snapshot.
- `predict_gold` then streams those examples' images batch by batch through one or more
  models (the candidate and the pinned champion in the same pass, so both see the same
  examples in the same order) and keeps only their class probabilities and the slice
  columns. `load_gold_set` keeps the pixels instead, for a caller that needs them.

Per-example state lives in Arrow and NumPy arrays (ids, positions, a taken mask), never in
Python sets or dicts over the whole store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from configs.data import DataSpec
from models import inference_rows, predict_proba
from tasks.images.decode import decode_images
from tasks.store import DEV, EXAMPLES, TEST, GoldSplit, LatestLabels, Store

UNKNOWN = "unknown"  # the slice group of an example without the value
COLUMNS = ["example_id", "image", "source", "ingested_at", "metadata"]
BATCH_ROWS = 4096  # store rows a batch when images are read
ID_BATCH_ROWS = 65536  # store rows a batch when only ids are read
COMPACT_IDS = 65536  # unlabeled gold ids held before they are deduplicated


@dataclass(frozen=True)
class GoldSpec:
    """What loading a gold part needs to know, and nothing more."""

    split: GoldSplit
    classes: tuple[str, ...]
    image_size: int
    channels: int

    @classmethod
    def from_data(cls, data: DataSpec) -> GoldSpec:
        return cls(
            GoldSplit(data.gold.fraction, data.gold.salt, data.gold.test_share),
            tuple(data.classes),
            data.image_size,
            data.channels,
        )


@dataclass
class GoldSet:
    part: str  # "dev" or "test"
    ids: pa.Array  # (N,) example ids, in the store's order
    label_event_ids: pa.Array  # (N,) the label event behind each example's label
    x: torch.Tensor | None  # (N, C, H, W) uint8; None when streamed (pixels never held)
    y: torch.Tensor  # (N,) class indices
    snapshot_id: str
    sizes: dict[str, int]  # human-labeled gold examples per part: {"dev": n, "test": m}
    # slice key -> group of each example: "source", "ingest_date" (YYYY-MM-DD), and each
    # metadata key stored with the gold examples ("unknown" where an example has none)
    slices: dict[str, np.ndarray] = field(default_factory=dict)
    unlabeled_gold: int = 0  # gold examples (either part) with no human label yet
    n_examples: int = 0  # example rows in the store (an example stored twice counts twice)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class GoldSelection:
    """Which stored examples make up a gold part, before any image is read."""

    part: str
    ids: pa.Array  # (N,) string: each example once, in the order the store streams them
    label_event_ids: pa.Array  # (N,) string
    y: np.ndarray  # (N,) int64 class indices
    snapshot_id: str  # "" when the part is empty
    sizes: dict[str, int]
    unlabeled_gold: int
    n_examples: int

    def __len__(self) -> int:
        return len(self.ids)

    def gold_set(self, x: torch.Tensor | None, slices: dict[str, np.ndarray]) -> GoldSet:
        return GoldSet(
            self.part, self.ids, self.label_event_ids, x, torch.from_numpy(self.y),
            self.snapshot_id, self.sizes, slices, self.unlabeled_gold, self.n_examples,
        )  # fmt: skip


@dataclass(frozen=True)
class GoldPredictions:
    """Models' class probabilities on a gold part, read in batches."""

    gold: GoldSet  # without pixels (x is None)
    probs: tuple[np.ndarray, ...]  # per model: (N, K) float32, in `gold`'s order


def select_gold(store: Store, spec: GoldSpec, part: str = TEST) -> GoldSelection:
    """The gold `part`'s stored examples with a latest human label (taxonomy classes
    only), each once, and the snapshot of them; reads the store's example ids only."""
    if part not in (DEV, TEST):
        raise ValueError(f"gold part must be {DEV!r} or {TEST!r}, not {part!r}")
    human = LatestLabels.read(store, kinds=("human",)).human_table(spec.classes)
    labeled, labels, events = (human.column(c).combine_chunks() for c in human.column_names)
    del human
    parts = spec.split.parts(labeled)
    sizes = {DEV: int((parts == DEV).sum()), TEST: int((parts == TEST).sum())}
    in_part = pa.array(parts == part)
    wanted = labeled.filter(in_part)
    found = _first_rows(store, spec.split, labeled, wanted)
    ids = wanted.take(found.order)
    event_ids = events.filter(in_part).take(found.order)
    y = pc.index_in(labels.filter(in_part).take(found.order), value_set=pa.array(spec.classes))
    snapshot_id = (
        store.write_snapshot(ids, event_ids, purpose=f"gold-{part}", run_id=f"gold-{part}")
        if len(ids)
        else ""
    )
    return GoldSelection(
        part, ids, event_ids, y.to_numpy(zero_copy_only=False).astype(np.int64), snapshot_id,
        sizes, found.unlabeled, found.n_rows,
    )  # fmt: skip


def predict_gold(
    store: Store,
    spec: GoldSpec,
    selection: GoldSelection,
    models: Sequence[torch.nn.Module],
    batch_size: int | None = None,
) -> GoldPredictions:
    """Each model's class probabilities (N, K) on the `selection`'s examples, in its
    order: images decoded and predicted batch by batch, in batches of `batch_size`
    (default: `predict_proba`'s for the image shape), so the probabilities equal one
    `predict_proba` over all the pixels at once."""
    k = len(spec.classes)
    if len(selection) == 0:
        probs = tuple(np.zeros((0, k)) for _ in models)
        return GoldPredictions(selection.gold_set(None, _empty_slices()), probs)
    batch_size = batch_size or _inference_rows(spec)
    predicted = _Predicted(models, batch_size)
    order, slices = _stream_images(store, spec, selection, predicted.add, batch_size)
    probs = tuple(_in_selection_order(p, order) for p in predicted.finish())
    return GoldPredictions(selection.gold_set(None, slices), probs)


def load_gold_set(store: Store, spec: GoldSpec, part: str = TEST) -> GoldSet:
    """The gold `part`'s latest human labels (taxonomy classes only) and decoded images,
    each example once, streamed from the store; holds the part's pixels, for a caller
    that needs them (bounded by the gold labels, not by the store; the gate, the monitor
    and the SLIs use `predict_gold` instead)."""
    selection = select_gold(store, spec, part)
    chunks: list[np.ndarray] = []
    if len(selection) == 0:
        x = torch.zeros(0, spec.channels, spec.image_size, spec.image_size, dtype=torch.uint8)
        return selection.gold_set(x, _empty_slices())
    order, slices = _stream_images(store, spec, selection, chunks.append, _inference_rows(spec))
    x = torch.from_numpy(_in_selection_order(np.concatenate(chunks), order))
    return selection.gold_set(x, slices)


def _inference_rows(spec: GoldSpec) -> int:
    """Images a model sees at once: `predict_proba`'s default for the gold images."""
    return inference_rows((spec.channels, spec.image_size, spec.image_size))


# -- pass 1: the example ids ----------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    order: pa.Array  # positions in `wanted` of the stored ones, in the store's order
    unlabeled: int  # gold examples (either part) stored without a human label
    n_rows: int  # example rows in the store


def _first_rows(store: Store, split: GoldSplit, labeled: pa.Array, wanted: pa.Array) -> _Found:
    """One pass over the stored example ids: where each `wanted` example first appears,
    and how many distinct gold examples have no label in `labeled`."""
    taken = np.zeros(len(wanted), bool)
    order: list[np.ndarray] = []  # one array a batch
    unlabeled = _DistinctIds()
    n_rows = 0
    for batch in store.iter_batches(EXAMPLES, ["example_id"], batch_size=ID_BATCH_ROWS):
        ids = batch.column(0)
        n_rows += len(ids)
        is_gold = split.is_gold(ids)
        no_label = ~pc.is_in(ids, value_set=labeled).to_numpy(zero_copy_only=False)
        unlabeled.add(ids.filter(pa.array(is_gold & no_label)))
        pos = _positions(ids, wanted)
        order.append(pos[_first_of_each(pos, taken)])
    first = np.concatenate(order) if order else np.zeros(0, np.int64)
    return _Found(pa.array(first), len(unlabeled), n_rows)


class _DistinctIds:
    """The distinct ids added, held as Arrow strings and deduplicated whenever they have
    doubled since the last time (at least `COMPACT_IDS`)."""

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = []
        self._held = 0
        self._due = COMPACT_IDS

    def add(self, ids: pa.Array) -> None:
        if not len(ids):
            return
        self._chunks.append(ids)
        self._held += len(ids)
        if self._held > self._due:
            self._chunks = [pc.unique(pa.concat_arrays(self._chunks))]
            self._held = len(self._chunks[0])
            self._due = max(COMPACT_IDS, 2 * self._held)

    def __len__(self) -> int:
        return len(pc.unique(pa.concat_arrays(self._chunks))) if self._chunks else 0


def _positions(ids: pa.Array, values: pa.Array) -> np.ndarray:
    """Each id's position in `values` (unique), -1 where it is not there."""
    return pc.index_in(ids, value_set=values).fill_null(-1).to_numpy().astype(np.int64)


def _first_of_each(pos: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """The rows of a batch holding the first appearance of a position not yet `taken`
    (marked taken here), in row order."""
    rows = np.flatnonzero(pos >= 0)
    if not len(rows):
        return rows
    _, first = np.unique(pos[rows], return_index=True)
    rows = np.sort(rows[first])
    rows = rows[~taken[pos[rows]]]
    taken[pos[rows]] = True
    return rows


# -- pass 2: the images -----------------------------------------------------------------------


def _stream_images(
    store: Store,
    spec: GoldSpec,
    selection: GoldSelection,
    sink: Callable[[np.ndarray], None],
    chunk_rows: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The selection's images, decoded `chunk_rows` at a time and handed to `sink` in the
    order the store streams them; returns that order (positions in the selection) and
    the slices, in the selection's order."""
    flt = pc.field("example_id").isin(selection.ids)
    taken = np.zeros(len(selection), bool)
    order: list[np.ndarray] = []
    columns: dict[str, list[pa.Array]] = {"source": [], "ingested_at": [], "metadata": []}
    batches = store.iter_batches(EXAMPLES, COLUMNS, filter=flt, batch_size=BATCH_ROWS, lean=True)
    for batch in batches:
        pos = _positions(batch.column(0), selection.ids)
        rows = pa.array(_first_of_each(pos, taken), pa.int64())
        if not len(rows):
            continue
        order.append(pos[rows.to_numpy()])
        for start in range(0, len(rows), chunk_rows):
            blobs = batch.column(1).take(rows.slice(start, chunk_rows)).to_pylist()
            sink(decode_images(blobs, spec.image_size, spec.channels))
        for name, chunks in columns.items():
            chunks.append(batch.column(name).take(rows))
    seen = np.concatenate(order) if order else np.zeros(0, np.int64)
    if len(seen) != len(selection):
        raise RuntimeError(
            f"{len(selection) - len(seen)} gold {selection.part} examples left the store "
            f"{store.uri!r} while it was read"
        )
    back = pa.array(np.argsort(seen))  # stream order -> selection order
    kept = {n: pa.concat_arrays(c).take(back) for n, c in columns.items()}
    return seen, _slices(kept)


def _in_selection_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """`values` in stream order, put in the selection's order (`order`: the selection
    position of each)."""
    if np.array_equal(order, np.arange(len(order))):
        return values
    out = np.empty_like(values)
    out[order] = values
    return out


class _Predicted:
    """Each model's probabilities on images handed in as they stream by, predicted in
    batches of exactly `batch_size` (as `predict_proba` batches them), in order."""

    def __init__(self, models: Sequence[torch.nn.Module], batch_size: int) -> None:
        self.models = list(models)
        self.batch_size = batch_size
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.out: list[list[np.ndarray]] = [[] for _ in self.models]

    def add(self, pixels: np.ndarray) -> None:
        self.pending.append(pixels)
        self.n_pending += len(pixels)
        while self.n_pending >= self.batch_size:
            self._predict(self.batch_size)

    def finish(self) -> list[np.ndarray]:
        if self.n_pending:
            self._predict(self.n_pending)
        return [np.concatenate(out) for out in self.out]

    def _predict(self, n: int) -> None:
        pixels = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        rest = pixels[n:]
        self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)
        x = torch.from_numpy(np.ascontiguousarray(pixels[:n]))  # (n, C, H, W) uint8
        for model, out in zip(self.models, self.out, strict=True):
            out.append(predict_proba(model, x, batch_size=self.batch_size).numpy())


# -- slices ---------------------------------------------------------------------------------


def _empty_slices() -> dict[str, np.ndarray]:
    return {"source": np.array([], dtype=object), "ingest_date": np.array([], dtype=object)}


def _slices(columns: dict[str, pa.Array]) -> dict[str, np.ndarray]:
    """Slice key -> each example's group: source, ingest date, then every metadata key
    any example has (UNKNOWN where one lacks it or it is empty)."""
    dates = pc.strftime(columns["ingested_at"], format="%Y-%m-%d")
    slices = {"source": _groups(columns["source"]), "ingest_date": _groups(dates)}
    meta = columns["metadata"]
    keys = set(pc.unique(meta.keys).to_pylist()) if len(meta.keys) else set()
    for key in sorted(keys - slices.keys()):
        slices[key] = _groups(pc.map_lookup(meta, pa.scalar(key), "last"))
    return slices


def _groups(values: pa.Array) -> np.ndarray:
    """(N,) object array of group names: UNKNOWN for a missing or empty value."""
    filled = pc.fill_null(values, "")
    named = pc.if_else(pc.equal(filled, ""), UNKNOWN, filled)
    return np.array(named.to_numpy(zero_copy_only=False), dtype=object)
