"""The pools sampling chooses from, read from a real store of real images: which example
goes to which pool, each example once, and the scores a model (or no model) gives."""

import numpy as np
import pytest
import torch

from tasks.images.decode import decode_images
from tasks.sampling.pool import read_pools
from tasks.store import EXAMPLES, GoldSplit
from tests.conftest import store_with_images

CLASSES = ("0", "1", "2")
SPLIT = GoldSplit(0.3, "gold-v1", 0.5)


@pytest.fixture
def store_and_parts(store_root):
    """A store of 20 images, written twice (each example must still count once), and
    its gold and non-gold ids in store order."""
    store, ids = store_with_images(store_root, n=20)
    store_with_images(store_root, n=20)
    gold = [e for e, g in zip(ids, SPLIT.is_gold(ids), strict=True) if g]
    rest = [e for e in ids if e not in gold]
    assert len(gold) >= 3 and len(rest) >= 6
    return store, gold, rest


def _read(store, model=None, *, human=(), labeled=(), blocked=None, anchors=True, review=True):
    return read_pools(
        store,
        model,
        split=SPLIT,
        classes=CLASSES,
        image_size=28,
        channels=1,
        human=set(human),
        labeled=set(labeled),
        blocked={"train": set(), "gold": set(), "review": set(), **(blocked or {})},
        want_anchors=anchors,
        want_review=review,
    )


def test_each_example_goes_to_the_pools_it_belongs_to_once(store_and_parts):
    store, gold, rest = store_and_parts
    human = {gold[0], rest[0], rest[1]}  # people labeled these
    labeled = human | {rest[2]}  # and the label model this one
    blocked = {"train": {rest[3]}, "gold": {gold[1]}, "review": {rest[1]}}
    pools = _read(store, human=human, labeled=labeled, blocked=blocked)

    assert pools.gold == gold[2:]  # gold: no human label, no open request
    assert (pools.gold_total, pools.gold_skipped) == (len(gold), {"labeled": 1, "requested": 1})
    assert pools.train.ids == [e for e in rest if e not in human and e != rest[3]]
    assert pools.anchors.ids == rest[:2]  # k-center starts from the human labels
    assert pools.review.ids == [rest[0], rest[2]]  # rest[1] is under review already

    unasked = _read(store, human=human, labeled=labeled, anchors=False, review=False)
    assert unasked.anchors.ids == [] and unasked.review.ids == []
    assert unasked.train.ids == [e for e in rest if e not in human]


def test_without_a_model_probabilities_are_uniform_and_pixels_the_embeddings(store_and_parts):
    store, _, rest = store_and_parts
    pools = _read(store)
    probs, emb = pools.train.arrays(len(CLASSES))
    assert probs.shape == (len(rest), 3) and np.allclose(probs, 1 / 3)
    images = {r["example_id"]: r["image"] for r in store.read(EXAMPLES).to_pylist()}
    pixels = decode_images([images[e] for e in pools.train.ids], 28, 1)
    assert np.allclose(emb, pixels.reshape(len(rest), -1) / 255.0)


def test_a_model_gives_its_probabilities_and_penultimate_embeddings(store_and_parts, small_model):
    store, _, rest = store_and_parts
    pools = _read(store, small_model)
    probs, emb = pools.train.arrays(len(CLASSES))
    images = {r["example_id"]: r["image"] for r in store.read(EXAMPLES).to_pylist()}
    x = torch.from_numpy(decode_images([images[e] for e in pools.train.ids], 28, 1))
    with torch.no_grad():
        z, logits = small_model.features_and_logits(x.float() / 255.0)
    assert np.allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-6)
    assert np.allclose(probs.sum(1), 1.0) and not np.allclose(probs, 1 / 3)
    assert emb.shape == (len(rest), z.shape[1]) and np.allclose(emb, z.numpy(), atol=1e-6)
