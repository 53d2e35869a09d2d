"""The pools sampling chooses from, read from the store in one streaming pass and scored
by one model: its class probabilities and its penultimate-layer embeddings.

- train: non-gold examples without a human label or an open request;
- anchors: non-gold examples with a human label (k-center starts from them);
- review: non-gold examples with a training label (human or label model);
- gold: gold examples without a human label or an open request (not scored: the gold
  stream draws uniformly, so evaluation stays unbiased).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from models import Classifier
from tasks.images.decode import decode_images
from tasks.store import EXAMPLES, GoldSplit, Store

BATCH = 1024


@dataclass
class Scored:
    ids: list[str] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    emb: list[np.ndarray] = field(default_factory=list)

    def add(self, ids: list[str], probs: np.ndarray, emb: np.ndarray) -> None:
        self.ids += ids
        self.probs.append(probs)
        self.emb.append(emb)

    def arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.ids:
            return np.zeros((0, k), np.float32), np.zeros((0, 1), np.float32)
        return np.concatenate(self.probs), np.concatenate(self.emb)


@dataclass
class Pools:
    train: Scored
    anchors: Scored
    review: Scored
    gold: list[str]
    # gold examples left out of `gold`, by why: a human label already, or a request open
    gold_skipped: dict[str, int] = field(default_factory=lambda: {"labeled": 0, "requested": 0})
    gold_total: int = 0


@torch.no_grad()
def _score(model: Classifier | None, images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (B, K), embeddings (B, D)); without a model: uniform probabilities
    and the pixels themselves as embeddings."""
    if model is None:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return np.full((len(images), k), 1.0 / k, np.float32), flat
    x = torch.from_numpy(images).float().div_(255.0)
    z, logits = model.features_and_logits(x)
    return torch.softmax(logits.float(), 1).numpy(), z.float().numpy()


def read_pools(
    store: Store,
    model: Classifier | None,
    *,
    split: GoldSplit,
    classes: tuple[str, ...],
    image_size: int,
    channels: int,
    human: set[str],
    labeled: set[str],
    blocked: dict[str, set[str]],
    want_anchors: bool,
    want_review: bool,
) -> Pools:
    """Stream the examples once, decode only what a pool needs, score it."""
    k = len(classes)
    if model is not None:
        model = model.eval()
    pools = Pools(Scored(), Scored(), Scored(), [])
    seen: set[str] = set()
    for rb in store.iter_batches(EXAMPLES, ["example_id", "image"], batch_size=BATCH):
        ids = rb.column(0).to_pylist()
        gold = split.is_gold(ids)
        need: dict[str, list[int]] = {"train": [], "anchors": [], "review": []}
        for i, ex in enumerate(ids):
            if ex in seen:
                continue
            seen.add(ex)
            if gold[i]:
                pools.gold_total += 1
                if ex in human:
                    pools.gold_skipped["labeled"] += 1
                elif ex in blocked["gold"]:
                    pools.gold_skipped["requested"] += 1
                else:
                    pools.gold.append(ex)
                continue
            if ex not in human and ex not in blocked["train"]:
                need["train"].append(i)
            if want_anchors and ex in human:
                need["anchors"].append(i)
            if want_review and ex in labeled and ex not in blocked["review"]:
                need["review"].append(i)
        rows = sorted({i for v in need.values() for i in v})
        if not rows:
            continue
        blobs = rb.column(1).to_pylist()
        images = decode_images([blobs[i] for i in rows], image_size, channels)
        probs, emb = _score(model, images, k)
        at = {r: j for j, r in enumerate(rows)}
        for name, pool in (
            ("train", pools.train),
            ("anchors", pools.anchors),
            ("review", pools.review),
        ):
            sel = [at[i] for i in need[name]]
            if sel:
                pool.add([ids[i] for i in need[name]], probs[sel], emb[sel])
    return pools
