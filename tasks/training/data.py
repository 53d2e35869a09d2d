"""Training tensors from the store, and the guard that keeps the gold holdout out of them.

Gold examples never reach training, not as labeled and not as unlabeled inputs, and
neither does a copy of a gold image stored under another id (the same pixels in another
encoding): such a copy is quarantined as `same_image_as_gold` and left out. The gold dev
part's human labels are the training curves' evaluation set; the gold test part is not
read here at all. `assert_no_gold_in_training` then checks the finished training set by
id and by pixels, independently of how it was built, and stops the run on any hit.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from configs.data import DataSpec
from configs.train import LabelsConfig, TrainConfig
from models import TrainData
from models.pool import ImagePool
from tasks.store import (
    DEV,
    QUARANTINE,
    SCHEMAS,
    GoldSplit,
    LatestLabels,
    Store,
    utcnow,
)
from tasks.store.export import training_labels
from tasks.training.decoded_cache import (
    DecodedCache,
    cache_root,
    decoded_cache,
    digest_array,
    pixel_digest,
)

log = logging.getLogger(__name__)

SAME_IMAGE_AS_GOLD = "same_image_as_gold"


class DataLeakError(RuntimeError):
    """A gold (holdout) example, or a copy of its pixels, reached the training set."""


class NotEnoughDataError(ValueError):
    """The store holds too little to train; the message says what to add."""


@dataclass
class TrainingSet:
    """What training reads. Per-example facts are Arrow arrays (ids) and NumPy arrays
    (digests), so that a million-image pool costs bytes per example, not Python objects."""

    data: TrainData
    train_ids: pa.StringArray  # labeled + unlabeled example ids used for training
    labeled_ids: pa.StringArray
    gold_ids: pa.StringArray  # the gold dev part's labeled examples: training curves only
    label_event_ids: pa.StringArray
    n_human: int
    n_weak: int
    n_model_influenced: int  # labels a model shaped (capped by labels.max_model_share)
    n_unlabeled: int
    n_gold_duplicates: int  # copies of gold images left out of training (quarantined)
    class_counts: dict[str, int]
    gold_digests: np.ndarray  # "S16" pixel digests of every gold example, for the guard


def gold_duplicates(digests: np.ndarray, is_gold: np.ndarray) -> dict[int, int]:
    """{non-gold row: gold row with the same pixels} (by decoded-pixel digest)."""
    gold_rows = np.flatnonzero(is_gold)
    copies = np.flatnonzero(~is_gold & np.isin(digests, digests[gold_rows]))
    if not len(copies):
        return {}
    gold_row = {digests[i].tobytes(): int(i) for i in gold_rows}
    return {int(i): gold_row[digests[i].tobytes()] for i in copies}


def _quarantine_gold_copies(
    store: Store, cache: DecodedCache, dupes: dict[int, int], run_id: str
) -> None:
    """One quarantine row per training-side copy of a gold image (idempotent ids)."""
    rows_in = sorted({*dupes, *dupes.values()})
    ids = dict(zip(rows_in, cache.example_ids.take(pa.array(rows_in)).to_pylist(), strict=True))
    uris = dict(zip(rows_in, cache.source_uris(np.array(rows_in)), strict=True))
    known = store.column_set(QUARANTINE, "quarantine_id")
    now = utcnow()
    rows: dict[str, list] = {n: [] for n in SCHEMAS[QUARANTINE].names}
    for i, g in sorted(dupes.items()):
        qid = hashlib.sha256(f"{SAME_IMAGE_AS_GOLD}|{ids[i]}|{ids[g]}".encode()).hexdigest()[:32]
        if qid in known:
            continue
        log.warning(
            "left out of training: example %s (%s) has the same pixels as gold example %s",
            ids[i],
            uris[i],
            ids[g],
        )
        for k, v in (
            ("quarantine_id", qid),
            ("record_kind", "example"),
            ("reason", SAME_IMAGE_AS_GOLD),
            (
                "detail",
                f"same pixels as gold example {ids[g]} ({uris[g]}); a copy of a holdout "
                "image would let training see the holdout, so it never enters training",
            ),
            ("source", "training"),
            ("source_uri", uris[i]),
            ("example_id", ids[i]),
            ("label", None),
            ("data", None),  # the bytes stay in examples/: nothing is lost
            ("quarantined_at", now),
            ("run_id", run_id),
        ):
            rows[k].append(v)
    store.write(QUARANTINE, pa.table(rows, schema=SCHEMAS[QUARANTINE]), when=now)


def load_training_data(
    store: Store,
    spec: DataSpec,
    train: TrainConfig,
    labels: LabelsConfig,
    *,
    run_id: str = "train",
) -> TrainingSet:
    """Training tensors from the store: resolved labels (human, then confident label-model
    labels, weighted by confidence), every non-gold example as unlabeled input, and the
    gold dev part's human labels as the evaluation set for the training curves. Read as
    the store was at `train.as_of` when it is set (time travel)."""
    split = GoldSplit(spec.gold.fraction, spec.gold.salt, spec.gold.test_share)
    latest = LatestLabels.read(store, train.as_of)  # one pass over the label log
    # every example decoded once into the on-disk cache (reused while the store is unchanged)
    root = cache_root(train.cache_dir, spec.root)
    cache = decoded_cache(store, root, spec.image_size, spec.channels, train.as_of)
    if not len(cache.example_ids):
        raise NotEnoughDataError(
            f"the store {store.uri!r} has no examples"
            + (f" ingested by {train.as_of.isoformat()}" if train.as_of else "")
            + ": run `semilabel ingest` first"
        )
    holdout = _hold_out_gold(store, cache, split, run_id)
    resolved = training_labels(latest, spec, labels)  # what `semilabel labels export` writes
    labeled = _labeled_rows(cache.example_ids, resolved, spec.classes, holdout.excluded)
    if not len(labeled.rows):
        raise NotEnoughDataError(
            "no labeled examples outside the gold holdout: add human "
            "labels (semilabel ingest with a labeled source) or weak labels (semilabel "
            "weak-label)"
        )
    gold_rows, y_gold = _gold_dev(cache.example_ids, holdout.part, latest, spec.classes)
    train_rows = np.flatnonzero(~holdout.excluded)
    training = TrainingSet(
        data=_tensors(cache, labeled, train_rows, gold_rows, y_gold, train, spec.seed),
        train_ids=cache.example_ids.take(pa.array(train_rows)),
        labeled_ids=cache.example_ids.take(pa.array(labeled.rows)),
        gold_ids=cache.example_ids.take(pa.array(gold_rows)),
        label_event_ids=labeled.event_ids,
        n_human=int(labeled.is_human.sum()),
        n_weak=len(labeled.rows) - int(labeled.is_human.sum()),
        n_model_influenced=labeled.n_model_influenced,
        n_unlabeled=len(train_rows) - len(labeled.rows),
        n_gold_duplicates=holdout.n_copies,
        class_counts=labeled.class_counts(spec.classes),
        gold_digests=np.unique(cache.digests[holdout.is_gold]),
    )
    assert_no_gold_in_training(training, split)
    return training


@dataclass(frozen=True)
class _Holdout:
    """Each cached example's gold part, and which are kept out of training: gold, and
    copies of a gold image stored under another id."""

    part: np.ndarray  # per row: "" (not gold), "dev" or "test"
    excluded: np.ndarray  # per row: bool
    n_copies: int

    @property
    def is_gold(self) -> np.ndarray:
        return self.part != ""


def _hold_out_gold(store: Store, cache: DecodedCache, split: GoldSplit, run_id: str) -> _Holdout:
    """The gold rows, and the copies of gold images (quarantined, see the module)."""
    part = split.parts(cache.example_ids)
    is_gold = part != ""
    dupes = gold_duplicates(cache.digests, is_gold)
    if dupes:
        _quarantine_gold_copies(store, cache, dupes, run_id)
    excluded = is_gold.copy()
    excluded[list(dupes)] = True
    return _Holdout(part, excluded, len(dupes))


@dataclass(frozen=True)
class _Labeled:
    """The labeled examples: their cache rows and, row for row, their class, weight,
    whether the label is human, and the label event it came from."""

    rows: np.ndarray  # cache rows
    y: np.ndarray  # class index
    w: np.ndarray  # float32: 1 for human labels, the confidence for weak ones
    is_human: np.ndarray
    model_influenced: np.ndarray
    event_ids: pa.Array

    @property
    def n_model_influenced(self) -> int:
        return int(self.model_influenced.sum())

    def class_counts(self, classes: tuple[str, ...]) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(classes))
        return {classes[c]: int(k) for c, k in enumerate(counts) if k}


def _labeled_rows(
    ids: pa.StringArray, resolved: pa.Table, classes: tuple[str, ...], excluded: np.ndarray
) -> _Labeled:
    """Each example's resolved label, joined by id in Arrow (no per-example Python
    objects); examples without a label in `classes`, or `excluded`, left out."""
    where = pc.index_in(ids, value_set=resolved.column("example_id"))
    where = where.fill_null(-1).to_numpy().astype(np.int64)
    label_class = pc.index_in(resolved.column("label"), value_set=pa.array(classes))
    label_class = label_class.fill_null(-1).to_numpy().astype(np.int64)
    has = where >= 0
    has[has] = label_class[where[has]] >= 0
    rows = np.flatnonzero(has & ~excluded)
    picked = resolved.take(pa.array(where[rows]))
    is_human = _numpy(pc.equal(picked.column("source_kind"), "human"))
    conf = _numpy(picked.column("confidence")).astype(np.float32)
    return _Labeled(
        rows=rows,
        y=label_class[where[rows]],
        w=np.where(is_human, np.float32(1.0), conf),
        is_human=is_human,
        model_influenced=_numpy(picked.column("model_influenced")),
        event_ids=picked.column("event_id").combine_chunks(),
    )


def _gold_dev(
    ids: pa.StringArray, part: np.ndarray, latest: LatestLabels, classes: tuple[str, ...]
) -> tuple[np.ndarray, list[int]]:
    """The gold dev part's examples with a human label (only human labels are gold
    truth), and their classes: the training curves' evaluation set."""
    human = latest.human_table(classes)  # gold truth: latest human label
    dev_rows = np.flatnonzero(part == DEV)
    known = human.column("example_id").combine_chunks()
    at = pc.index_in(ids.take(pa.array(dev_rows)), value_set=known)
    has = at.is_valid().to_numpy(zero_copy_only=False)
    labels = human.column("label").take(at.drop_null())
    y_gold = pc.index_in(labels, value_set=pa.array(classes, pa.string())).to_pylist()
    gold_rows = dev_rows[has]
    return np.asarray(gold_rows, dtype=np.int64), y_gold


def _tensors(
    cache: DecodedCache,
    labeled: _Labeled,
    train_rows: np.ndarray,
    gold_rows: np.ndarray,
    y_gold: list[int],
    train: TrainConfig,
    seed: int,
) -> TrainData:
    """What the loop trains on. Labeled images stay in memory when they fit in
    `train.pool_memory_mb`, the unlabeled pool when it fits in what is left; otherwise
    each is read batch by batch from the cache file, so memory stays flat as the pool
    grows."""
    budget = train.pool_memory_mb * 2**20
    x_lb = _images(cache, labeled.rows, budget, "labeled")
    if isinstance(x_lb, torch.Tensor):
        budget -= len(labeled.rows) * int(np.prod(cache.shape))
    x_ulb = _images(cache, train_rows, budget, "unlabeled")
    y_lb = torch.from_numpy(labeled.y)
    if train.shuffle_labels:
        log.warning("train.shuffle_labels is on: training labels are shuffled (testing only)")
        g = torch.Generator().manual_seed(seed)
        y_lb = y_lb[torch.randperm(len(y_lb), generator=g)]
    pool = ImagePool(cache.images_path, cache.shape, gold_rows)
    return TrainData(
        x_lb=x_lb,
        y_lb=y_lb,
        w_lb=torch.from_numpy(labeled.w),
        x_ulb=x_ulb,
        x_eval=pool.take(np.arange(len(gold_rows))) if len(gold_rows) else None,
        y_eval=torch.tensor(y_gold, dtype=torch.long) if len(gold_rows) else None,
        human_lb=torch.from_numpy(labeled.is_human),
    )


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    return column.combine_chunks().to_numpy(zero_copy_only=False)


def _images(
    cache: DecodedCache, rows: np.ndarray, budget: int, name: str
) -> torch.Tensor | ImagePool:
    """The cache's images at `rows`: in memory when they fit in `budget` bytes, else a
    pool read batch by batch from the cache file."""
    pool = ImagePool(cache.images_path, cache.shape, rows)
    size = len(rows) * pool.row_bytes
    if size <= budget:  # in memory (on the GPU if there is one)
        return torch.cat(list(pool.chunks())) if len(rows) else pool.take(np.arange(0))
    log.info(
        "the %s images (%d, %.0f MB decoded) do not fit in train.pool_memory_mb: training "
        "reads their batches from %s",
        name,
        len(rows),
        size / 2**20,
        cache.images_path,
    )
    return pool


def assert_no_gold_in_training(training: TrainingSet, split: GoldSplit) -> None:
    """Fail closed if a training example is gold by id, or shows a gold image's pixels.
    Checks the finished tensors, independently of how they were selected."""
    for name, id_list in (("labeled", training.labeled_ids), ("unlabeled", training.train_ids)):
        leaked = np.flatnonzero(split.is_gold(id_list))
        if len(leaked):
            raise DataLeakError(
                f"{len(leaked)} gold example(s) in the {name} training set, "
                f"e.g. {id_list[int(leaked[0])]}; refusing to train"
            )
    for name, x in (("labeled", training.data.x_lb), ("unlabeled", training.data.x_ulb)):
        chunks = x.chunks() if isinstance(x, ImagePool) else [x]
        hits, offset = [], 0
        for chunk in chunks:  # a file-backed pool is checked chunk by chunk
            seen = digest_array([pixel_digest(img) for img in chunk.numpy()])
            hits += (offset + np.flatnonzero(np.isin(seen, training.gold_digests))).tolist()
            offset += len(chunk)
        if hits:
            ids = training.labeled_ids if name == "labeled" else training.train_ids
            raise DataLeakError(
                f"{len(hits)} image(s) in the {name} training set have the pixels of a gold "
                f"example, e.g. example {ids[hits[0]]}; refusing to train"
            )
