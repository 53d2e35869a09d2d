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
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from configs.schema import Config
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
from tasks.training.decoded_cache import cache_root, decoded_cache, pixel_digest

log = logging.getLogger(__name__)

SAME_IMAGE_AS_GOLD = "same_image_as_gold"


class DataLeakError(RuntimeError):
    """A gold (holdout) example, or a copy of its pixels, reached the training set."""


class NotEnoughDataError(ValueError):
    """The store holds too little to train; the message says what to add."""


@dataclass
class TrainingSet:
    data: TrainData
    train_ids: list[str]  # labeled + unlabeled example ids used for training
    labeled_ids: list[str]
    gold_ids: list[str]  # the gold dev part's labeled examples: training curves only
    label_event_ids: list[str]
    n_human: int
    n_weak: int
    n_model_influenced: int  # labels a model shaped (capped by labels.max_model_share)
    n_unlabeled: int
    n_gold_duplicates: int  # copies of gold images left out of training (quarantined)
    class_counts: dict[str, int]
    gold_digests: frozenset[bytes]  # pixel digests of every gold example, for the guard


def gold_duplicates(ids: list[str], digests: list[bytes], is_gold: np.ndarray) -> dict[int, int]:
    """{non-gold row: gold row with the same pixels} (by decoded-pixel digest)."""
    gold_row = {d: i for i, d in enumerate(digests) if is_gold[i]}
    return {i: gold_row[d] for i, d in enumerate(digests) if not is_gold[i] and d in gold_row}


def _quarantine_gold_copies(
    store: Store, ids: list[str], uris: list[str], dupes: dict[int, int], run_id: str
) -> None:
    """One quarantine row per training-side copy of a gold image (idempotent ids)."""
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
    store: Store, cfg: Config, *, seed: int | None = None, run_id: str = "train"
) -> TrainingSet:
    """Training tensors from the store: resolved labels (human, then confident label-model
    labels, weighted by confidence), every non-gold example as unlabeled input, and the
    gold dev part's human labels as the evaluation set for the training curves."""
    classes = {c: i for i, c in enumerate(cfg.taxonomy.classes)}
    split = GoldSplit(cfg.gold.fraction, cfg.gold.salt, cfg.gold.test_share)
    as_of = cfg.train.as_of  # time travel: the store as it was then
    latest = LatestLabels.read(store, as_of)  # one pass over the label log
    resolved = latest.resolve(
        confidence_floor=cfg.labels.confidence_floor,
        max_model_share=cfg.labels.max_model_share,
        leave_out=split,
        classes=cfg.taxonomy.classes,
    )
    dev_labels = latest.human(cfg.taxonomy.classes)  # gold truth: latest human label
    label_of = dict(
        zip(
            resolved.column("example_id").to_pylist(),
            zip(
                resolved.column("label").to_pylist(),
                resolved.column("confidence").to_pylist(),
                resolved.column("source_kind").to_pylist(),
                resolved.column("event_id").to_pylist(),
                resolved.column("model_influenced").to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )
    size, channels = cfg.train.image_size, cfg.train.channels
    # every example decoded once into the on-disk cache (reused while the store is unchanged)
    root = cache_root(cfg.train.cache_dir, cfg.store.root)
    cache = decoded_cache(store, root, size, channels, as_of)
    ids, uris, digests = cache.example_ids, cache.source_uris, cache.digests
    if not ids:
        raise NotEnoughDataError(
            f"the store {store.uri!r} has no examples"
            + (f" ingested by {as_of.isoformat()}" if as_of else "")
            + ": run `semilabel ingest` first"
        )
    images = ImagePool(cache.images_path, cache.shape, np.arange(len(ids)))
    part = split.parts(ids)
    is_gold = part != ""
    dupes = gold_duplicates(ids, digests, is_gold)
    if dupes:
        _quarantine_gold_copies(store, ids, uris, dupes, run_id)
    excluded = is_gold.copy()
    excluded[list(dupes)] = True

    lb_idx, y_lb, w_lb, events, is_human = [], [], [], [], []
    gold_idx, y_gold = [], []
    n_human = n_weak = n_influenced = 0
    for i, ex in enumerate(ids):
        if is_gold[i]:
            if part[i] == DEV and ex in dev_labels:  # only human labels are gold truth
                gold_idx.append(i)
                y_gold.append(classes[dev_labels[ex][0]])
            continue
        hit = label_of.get(ex)
        if hit is None or hit[0] not in classes or excluded[i]:
            continue
        label, conf, kind, event_id, influenced = hit
        lb_idx.append(i)
        y_lb.append(classes[label])
        w_lb.append(1.0 if kind == "human" else float(conf))
        events.append(event_id)
        is_human.append(kind == "human")
        n_human += kind == "human"
        n_weak += kind != "human"
        n_influenced += bool(influenced)
    train_idx = np.flatnonzero(~excluded)
    if not lb_idx:
        raise NotEnoughDataError(
            "no labeled examples outside the gold holdout: add human "
            "labels (semilabel ingest with a labeled source) or weak labels (semilabel "
            "weak-label)"
        )
    ulb_bytes = len(train_idx) * int(np.prod(cache.shape))
    if ulb_bytes <= cfg.train.pool_memory_mb * 2**20:  # in memory (on the GPU if there is one)
        x_ulb: torch.Tensor | ImagePool = torch.cat(
            list(ImagePool(cache.images_path, cache.shape, train_idx).chunks())
        )
    else:  # read batch by batch from the cache file: memory stays flat as the pool grows
        x_ulb = ImagePool(cache.images_path, cache.shape, train_idx)
        log.info(
            "the unlabeled pool (%d images, %.0f MB decoded) is above train.pool_memory_mb: "
            "training reads its batches from %s",
            len(train_idx),
            ulb_bytes / 2**20,
            cache.images_path,
        )
    y_lb_t = torch.tensor(y_lb, dtype=torch.long)
    if cfg.train.shuffle_labels:
        log.warning("train.shuffle_labels is on: training labels are shuffled (testing only)")
        g = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        y_lb_t = y_lb_t[torch.randperm(len(y_lb_t), generator=g)]
    data = TrainData(
        x_lb=images.take(np.asarray(lb_idx, dtype=np.int64)),
        y_lb=y_lb_t,
        w_lb=torch.tensor(w_lb, dtype=torch.float32),
        x_ulb=x_ulb,
        x_eval=images.take(np.asarray(gold_idx, dtype=np.int64)) if gold_idx else None,
        y_eval=torch.tensor(y_gold, dtype=torch.long) if gold_idx else None,
        human_lb=torch.tensor(is_human, dtype=torch.bool),
    )
    training = TrainingSet(
        data=data,
        train_ids=[ids[i] for i in train_idx],
        labeled_ids=[ids[i] for i in lb_idx],
        gold_ids=[ids[i] for i in gold_idx],
        label_event_ids=events,
        n_human=n_human,
        n_weak=n_weak,
        n_model_influenced=n_influenced,
        n_unlabeled=len(train_idx) - len(lb_idx),
        n_gold_duplicates=len(dupes),
        class_counts=dict(Counter(cfg.taxonomy.classes[c] for c in y_lb)),
        gold_digests=frozenset(d for d, g in zip(digests, is_gold, strict=True) if g),
    )
    assert_no_gold_in_training(training, split)
    return training


def assert_no_gold_in_training(training: TrainingSet, split: GoldSplit) -> None:
    """Fail closed if a training example is gold by id, or shows a gold image's pixels.
    Checks the finished tensors, independently of how they were selected."""
    for name, id_list in (("labeled", training.labeled_ids), ("unlabeled", training.train_ids)):
        leaked = [i for i, g in zip(id_list, split.is_gold(id_list), strict=True) if g]
        if leaked:
            raise DataLeakError(
                f"{len(leaked)} gold example(s) in the {name} training set, "
                f"e.g. {leaked[0]}; refusing to train"
            )
    for name, x in (("labeled", training.data.x_lb), ("unlabeled", training.data.x_ulb)):
        chunks = x.chunks() if isinstance(x, ImagePool) else [x]
        hits, offset = [], 0
        for chunk in chunks:  # a file-backed pool is checked chunk by chunk
            hits += [
                offset + i
                for i, img in enumerate(chunk.numpy())
                if pixel_digest(img) in training.gold_digests
            ]
            offset += len(chunk)
        if hits:
            ids = training.labeled_ids if name == "labeled" else training.train_ids
            raise DataLeakError(
                f"{len(hits)} image(s) in the {name} training set have the pixels of a gold "
                f"example, e.g. example {ids[hits[0]]}; refusing to train"
            )
