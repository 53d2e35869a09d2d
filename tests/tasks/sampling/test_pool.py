"""The pools sampling chooses from, as rows of the decoded cache of a real store of real
images: which example goes to which pool, each example once, and the scores a model
(or no model) gives, batch by batch."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from tasks.images.decode import decode_images
from tasks.sampling.pool import find_pools, score_rows, store_ids
from tasks.store import EXAMPLES, GoldSplit
from tasks.training.decoded_cache import decoded_cache
from tests.conftest import store_with_images

SPLIT = GoldSplit(0.3, "gold-v1", 0.5)


@pytest.fixture
def store_and_parts(store_root, tmp_path):
    """A store of 20 images, written twice (each example must still count once), its
    decoded cache, and its gold and non-gold ids in store order."""
    store, ids = store_with_images(store_root, n=20)
    store_with_images(store_root, n=20)
    cache = decoded_cache(store, tmp_path / "cache", 28, 1)
    gold = [e for e, g in zip(ids, SPLIT.is_gold(ids), strict=True) if g]
    rest = [e for e in ids if e not in gold]
    assert len(gold) >= 3 and len(rest) >= 6
    return store, cache, gold, rest


def _arr(ids) -> pa.Array:
    return pa.array(sorted(ids), pa.string())


def _find(cache, *, human=(), labels=None, blocked=None, anchors=True, review=True):
    labels = labels or {}
    return find_pools(
        cache.example_ids,
        cache,
        split=SPLIT,
        human=_arr(human),
        labels=pa.table({"example_id": list(labels), "label": list(labels.values())}),
        blocked={s: _arr((blocked or {}).get(s, ())) for s in ("train", "gold", "review")},
        want_anchors=anchors,
        want_review=review,
    )


def test_each_example_goes_to_the_pools_it_belongs_to_once(store_and_parts):
    store, cache, gold, rest = store_and_parts
    human = {gold[0], rest[0], rest[1]}  # people labeled these
    labels = {rest[1]: "2", rest[0]: "1", rest[2]: "0", gold[0]: "1"}  # resolved labels
    # blocked as RequestLog.blocked gives it: train and gold skip human labels too
    blocked = {"train": human | {rest[3]}, "gold": human | {gold[1]}, "review": {rest[1]}}
    pools = _find(cache, human=human, labels=labels, blocked=blocked)

    assert pools.gold.to_pylist() == gold[2:]  # gold: no human label, no open request
    assert (pools.gold_total, pools.gold_skipped) == (len(gold), {"labeled": 1, "requested": 1})
    assert pools.example_ids(pools.train) == [e for e in rest if e not in human and e != rest[3]]
    assert pools.example_ids(pools.anchors) == rest[:2]  # k-center starts from human labels
    # rest[1] is under review already; gold labels are never reviewed
    assert pools.example_ids(pools.review) == [rest[0], rest[2]]
    assert pools.review_labels.to_pylist() == ["1", "0"]  # each row's resolved label
    assert pools.train.dtype == np.int64  # rows of the cache, not Python objects

    unasked = _find(cache, human=human, labels=labels, anchors=False, review=False)
    assert len(unasked.anchors) == 0 and len(unasked.review) == 0


def test_without_images_the_store_ids_are_the_caches_index(store_and_parts):
    store, cache, _, _ = store_and_parts
    assert store_ids(store).equals(cache.example_ids)  # same ids, same order


def test_without_a_model_probabilities_are_uniform_and_pixels_the_embeddings(store_and_parts):
    store, cache, _, rest = store_and_parts
    rows = _find(cache).train
    probs, emb = score_rows(cache, rows, None, 3, batch=4)
    assert probs.shape == (len(rest), 3) and np.allclose(probs, 1 / 3)
    images = {r["example_id"]: r["image"] for r in store.read(EXAMPLES).to_pylist()}
    ids = cache.example_ids.take(pa.array(rows)).to_pylist()
    pixels = decode_images([images[e] for e in ids], 28, 1)
    assert np.allclose(emb, pixels.reshape(len(rest), -1) / 255.0)


def test_a_model_gives_its_probabilities_and_penultimate_embeddings(store_and_parts, small_model):
    store, cache, _, rest = store_and_parts
    rows = _find(cache).train
    probs, emb = score_rows(cache, rows, small_model, 3, batch=4)  # 4 images a pass
    images = {r["example_id"]: r["image"] for r in store.read(EXAMPLES).to_pylist()}
    ids = cache.example_ids.take(pa.array(rows)).to_pylist()
    x = torch.from_numpy(decode_images([images[e] for e in ids], 28, 1))
    with torch.no_grad():
        z, logits = small_model.features_and_logits(x.float() / 255.0)
    assert np.allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-6)
    assert np.allclose(probs.sum(1), 1.0) and not np.allclose(probs, 1 / 3)
    assert emb.shape == (len(rest), z.shape[1]) and np.allclose(emb, z.numpy(), atol=1e-5)


def test_a_large_read_batch_is_scored_in_passes_the_image_size_allows(
    store_and_parts, small_model, monkeypatch
):
    """The batch read from the cache (sampling.batch_rows) is not the batch that goes
    through the network: activations grow with the pixels, so the pass is bounded by
    `inference_rows` (here 4 images of 1x28x28), with the same scores as one pass."""
    _, cache, _, _ = store_and_parts
    rows = _find(cache).train
    one_pass = score_rows(cache, rows, small_model, 3, batch=len(rows))
    passes = []
    hook = small_model.net.head.register_forward_hook(lambda m, i, o: passes.append(len(i[0])))
    monkeypatch.setattr("models.classifier.INFERENCE_VALUES", 4 * 28 * 28)
    try:
        probs, emb = score_rows(cache, rows, small_model, 3, batch=len(rows))
    finally:
        hook.remove()
    assert passes == [4] * (len(rows) // 4) + ([len(rows) % 4] if len(rows) % 4 else [])
    assert np.allclose(probs, one_pass[0], atol=1e-6) and np.allclose(emb, one_pass[1], atol=1e-5)
