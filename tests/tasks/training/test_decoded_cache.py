"""The decoded image cache: built once from a real store, reused while the store is
unchanged, rebuilt after an ingest, never left half-built, and the source of a pool
that training reads from disk."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import fit
from models.pool import ImagePool
from tasks.images.decode import decode_images
from tasks.store import EXAMPLES, Store
from tasks.training import load_training_data
from tasks.training.decoded_cache import cache_root, decoded_cache
from tests.conftest import ingest_folder


def _cache_dir(cfg) -> Path:
    return cache_root(cfg.train.cache_dir, cfg.store.root)


def test_the_cache_holds_every_example_decoded_and_is_reused_until_an_ingest(store_cfg, tmp_path):
    store = Store(store_cfg.store.root)
    root = tmp_path / "cache"
    first = decoded_cache(store, root, 28, 1)
    assert first.built and len(first) == store.count(EXAMPLES) == 240
    # row i of the file is example i of the index, decoded as training decodes it
    table = store.read(EXAMPLES, ["example_id", "image"])
    by_id = dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    pool = ImagePool(first.images_path, first.shape, np.arange(len(first)))
    some = [0, 7, 239]
    ids = first.example_ids.to_pylist()
    assert len(set(ids)) == 240 and len(first.digests) == 240
    expected = decode_images([by_id[ids[i]] for i in some], 28, 1)
    assert np.array_equal(pool.take(np.array(some)).numpy(), expected)

    again = decoded_cache(store, root, 28, 1)
    assert not again.built and again.folder == first.folder  # nothing decoded
    assert again.example_ids.to_pylist() == ids
    assert np.array_equal(again.digests, first.digests)
    other_size = decoded_cache(store, root, 16, 1)
    assert other_size.built and other_size.folder != first.folder

    # a new ingest is a new store state: a new cache; only the newest two are kept
    more = tmp_path / "more"
    (more / "unlabeled").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(12):
        pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
        Image.fromarray(pixels).save(more / "unlabeled" / f"new{i}.png")
    ingest_folder(store_cfg, more, "more", "r2")
    after = decoded_cache(store, root, 28, 1)
    assert after.built and len(after) == 252
    kept = sorted(p.name for p in root.iterdir())
    assert kept == sorted([after.folder.name, other_size.folder.name])


def test_a_failed_build_leaves_no_cache_behind(store_cfg, tmp_path, monkeypatch):
    store = Store(store_cfg.store.root)
    calls = []

    def decode_then_die(blobs, size, channels):
        calls.append(len(blobs))
        raise MemoryError("killed mid-build")

    monkeypatch.setattr("tasks.training.decoded_cache.decode_images", decode_then_die)
    with pytest.raises(MemoryError):
        decoded_cache(store, tmp_path / "cache", 28, 1)
    assert calls and list((tmp_path / "cache").iterdir()) == []


def test_a_pool_above_the_memory_budget_is_read_from_disk_and_trains_the_same(store_cfg):
    store = Store(store_cfg.store.root)
    in_memory = load_training_data(store, store_cfg.data_spec(), store_cfg.train, store_cfg.labels)
    assert isinstance(in_memory.data.x_ulb, torch.Tensor)
    small_budget = store_cfg.model_copy(
        update={"train": store_cfg.train.model_copy(update={"pool_memory_mb": 0})}
    )
    on_disk = load_training_data(
        store, small_budget.data_spec(), small_budget.train, small_budget.labels
    )
    pool = on_disk.data.x_ulb
    assert isinstance(pool, ImagePool) and len(pool) == len(in_memory.data.x_ulb)
    assert torch.equal(torch.cat(list(pool.chunks(50))), in_memory.data.x_ulb)
    assert isinstance(on_disk.data.x_lb, ImagePool)  # the labeled images too
    assert torch.equal(on_disk.data.x_lb[:], in_memory.data.x_lb)
    assert on_disk.train_ids.to_pylist() == in_memory.train_ids.to_pylist()
    # the training loop reads the same batches either way: the same weights on the CPU
    settings = store_cfg.train_settings()
    a = fit(in_memory.data, settings)
    b = fit(on_disk.data, settings)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
