"""The pools sampling chooses from, as rows of the decoded image cache
(`tasks.training.decoded_cache`: every example once, in store order), found with Arrow
compute on the cache's index of example ids; and the scoring of rows, batch by batch.

- train: non-gold examples without a human label or an open request;
- anchors: non-gold examples with a human label (k-center starts from them);
- review: non-gold examples with a resolved training label (human or label model) and
  no open review request (of which the review stream scores at most
  `sampling.review_pool_max`);
- gold: gold examples without a human label or an open request (not scored: the gold
  stream draws uniformly, so evaluation stays unbiased).

A pool is a NumPy array of cache rows (8 bytes an example), never a Python collection
of ids; the membership tests are `pc.is_in` over the index against the (label- and
request-sized) sets of ids the store knows. When nothing needs scoring (no model), the
store's ids are read alone and no image is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from models import Classifier, inference_input, inference_rows
from models.pool import ImagePool
from tasks.store import EXAMPLES, GoldSplit, Store
from tasks.training.decoded_cache import DecodedCache

BATCH = 1024  # images scored per forward pass


@dataclass(frozen=True)
class Pools:
    ids: pa.StringArray  # every example once, in store order (the cache's index)
    cache: DecodedCache | None  # where the images are; None when nothing is scored
    train: np.ndarray  # int64 rows of `ids`
    anchors: np.ndarray
    review: np.ndarray
    review_labels: pa.Array  # the resolved label of each review row
    gold: pa.StringArray  # gold ids without a human label or an open request
    # gold examples left out of `gold`, by why: a human label already, or a request open
    gold_skipped: dict[str, int] = field(default_factory=lambda: {"labeled": 0, "requested": 0})
    gold_total: int = 0

    def example_ids(self, rows: np.ndarray) -> list[str]:
        """The ids of `rows` (a budget's worth: Python strings only for those)."""
        return self.ids.take(pa.array(np.asarray(rows, np.int64))).to_pylist()


def store_ids(store: Store) -> pa.StringArray:
    """The store's example ids, each once, in order of first occurrence (the order of
    the decoded cache's index), read without the images."""
    chunks = [b.column(0) for b in store.iter_batches(EXAMPLES, ["example_id"], batch_size=65536)]
    return pc.unique(pa.chunked_array(chunks, pa.string()).combine_chunks())


def _in(ids: pa.Array, values: pa.Array) -> np.ndarray:
    if not len(values):
        return np.zeros(len(ids), bool)
    return pc.is_in(ids, value_set=values).to_numpy(zero_copy_only=False)


def find_pools(
    ids: pa.StringArray,
    cache: DecodedCache | None,
    *,
    split: GoldSplit,
    human: pa.Array,
    labels: pa.Table,
    blocked: dict[str, pa.Array],
    want_anchors: bool,
    want_review: bool,
) -> Pools:
    """Each stream's candidates among `ids` (see the module): `human` the examples with a
    human label, `labels` the resolved labels (example_id, label), `blocked` per stream
    the examples it must skip."""
    gold = split.is_gold(ids)
    is_human = _in(ids, human)
    train = ~gold & ~_in(ids, blocked["train"])
    anchors = ~gold & is_human if want_anchors else np.zeros(len(ids), bool)
    review_rows = np.zeros(0, np.int64)
    review_labels = pa.array([], pa.string())
    if want_review:
        labeled = labels.column("example_id").combine_chunks().cast(pa.string())
        review_rows = np.flatnonzero(~gold & _in(ids, labeled) & ~_in(ids, blocked["review"]))
        at = pc.index_in(ids.take(pa.array(review_rows)), value_set=labeled)
        review_labels = labels.column("label").combine_chunks().cast(pa.string()).take(at)
    gold_requested = gold & ~is_human & _in(ids, blocked["gold"])
    open_gold = gold & ~is_human & ~gold_requested
    return Pools(
        ids=ids,
        cache=cache,
        train=np.flatnonzero(train),
        anchors=np.flatnonzero(anchors),
        review=review_rows,
        review_labels=review_labels,
        gold=ids.filter(pa.array(open_gold)),
        gold_skipped={
            "labeled": int((gold & is_human).sum()),
            "requested": int(gold_requested.sum()),
        },
        gold_total=int(gold.sum()),
    )


@torch.no_grad()
def score_images(
    model: Classifier | None, images: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (B, K), embeddings (B, D)) of uint8 images (B, C, H, W); without a
    model: uniform probabilities and the pixels themselves as embeddings."""
    if model is None:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return np.full((len(images), k), 1.0 / k, np.float32), flat
    device = next(model.parameters()).device
    step = inference_rows(images.shape[1:])  # activations, not the batch read, bound memory
    probs, emb = [], []
    for start in range(0, len(images), step):
        x = inference_input(torch.from_numpy(images[start : start + step]), device)
        z, logits = model.features_and_logits(x)
        probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
        emb.append(z.float().cpu().numpy())
    if not probs:
        return np.zeros((0, k), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(probs), np.concatenate(emb)


def scored_batches(
    images: ImagePool, model: Classifier | None, k: int, batch: int = BATCH
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions in `images`, probabilities, embeddings), `batch` images at a time."""
    if model is not None:
        model.eval()
    for start in range(0, len(images), batch):
        at = np.arange(start, min(start + batch, len(images)))
        probs, emb = score_images(model, images.take(at).numpy(), k)
        yield at, probs, emb


def score_rows(
    cache: DecodedCache, rows: np.ndarray, model: Classifier | None, k: int, batch: int = BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, K), embeddings (N, D)) of a bounded set of cache rows (anchors,
    the review pool, a random pick), gathered batch by batch."""
    probs = np.zeros((len(rows), k), np.float32)
    emb: np.ndarray | None = None
    images = ImagePool(cache.images_path, cache.shape, rows)
    for at, p, z in scored_batches(images, model, k, batch):
        if emb is None:
            emb = np.zeros((len(rows), z.shape[1]), np.float32)
        probs[at], emb[at] = p, z
    return probs, emb if emb is not None else np.zeros((0, 1), np.float32)
