"""The file-backed pool: rows read by position, in any order, without mapping the file."""

import numpy as np
import pytest
import torch

from models.pool import ImagePool, take_rows


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 3, 8, 8), dtype=np.uint8)
    path = tmp_path / "images.u8"
    path.write_bytes(x.tobytes())
    return x, path


def test_take_reads_the_rows_the_pool_names(images):
    x, path = images
    rows = np.array([49, 3, 3, 10, 0])  # any order, repeats allowed
    pool = ImagePool(path, (3, 8, 8), rows)
    assert len(pool) == 5
    got = pool.take(torch.tensor([0, 2, 4]))
    assert got.dtype == torch.uint8 and got.shape == (3, 3, 8, 8)
    assert np.array_equal(got.numpy(), x[[49, 3, 0]])
    assert np.array_equal(pool[1:3].numpy(), x[[3, 3]])
    assert np.array_equal(torch.cat(list(pool.chunks(2))).numpy(), x[rows])
    assert torch.equal(
        take_rows(torch.from_numpy(x), torch.tensor([1, 2])), torch.from_numpy(x[[1, 2]])
    )


def test_rows_outside_the_file_are_refused(images):
    _, path = images
    with pytest.raises(ValueError, match="outside the 50 images"):
        ImagePool(path, (3, 8, 8), np.array([0, 50]))


def test_the_fingerprint_changes_with_the_rows_or_the_file(images):
    x, path = images
    a = ImagePool(path, (3, 8, 8), np.arange(10)).fingerprint()
    assert a == ImagePool(path, (3, 8, 8), np.arange(10)).fingerprint()
    assert a != ImagePool(path, (3, 8, 8), np.arange(11)).fingerprint()
    path.write_bytes(x[::-1].tobytes())
    assert a != ImagePool(path, (3, 8, 8), np.arange(10)).fingerprint()
