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


def _row_by_row(pool: ImagePool, positions: np.ndarray) -> np.ndarray:
    """The reference read: one `take` of a single position at a time."""
    return np.concatenate([pool.take(np.array([p])).numpy() for p in positions])


@pytest.mark.parametrize(
    "name",
    ["random", "sorted", "consecutive", "repeated", "runs_with_gaps", "descending", "empty"],
)
def test_runs_of_consecutive_rows_read_at_once_give_what_row_by_row_reads_give(images, name):
    x, path = images
    rng = np.random.default_rng(3)
    positions = {
        "random": rng.integers(0, 50, 64),  # as training draws them, repeats included
        "sorted": np.sort(rng.choice(50, 20, replace=False)),
        "consecutive": np.arange(7, 43),  # as sampling scores a shard
        "repeated": np.array([5, 5, 5, 6, 6, 7, 5]),
        "runs_with_gaps": np.r_[0:10, 12:20, 49, 30:35],
        "descending": np.arange(49, -1, -1),
        "empty": np.zeros(0, np.int64),
    }[name]
    pool = ImagePool(path, (3, 8, 8), np.arange(50))
    got = pool.take(torch.from_numpy(positions))
    assert got.shape == (len(positions), 3, 8, 8)
    assert np.array_equal(got.numpy(), x[positions])
    if len(positions):
        assert np.array_equal(got.numpy(), _row_by_row(pool, positions))
    # a pool whose own rows are shuffled: runs are of file rows, not of positions
    shuffled = rng.permutation(50)
    pool = ImagePool(path, (3, 8, 8), shuffled)
    assert np.array_equal(pool.take(positions).numpy(), x[shuffled[positions]])


def test_a_file_cut_short_under_a_run_is_an_error(images):
    x, path = images
    pool = ImagePool(path, (3, 8, 8), np.arange(50))
    path.write_bytes(x[:30].tobytes())  # rows 30.. gone after the pool was opened
    assert np.array_equal(pool.take(np.arange(0, 30)).numpy(), x[:30])
    with pytest.raises(OSError, match="short read of image row 30"):
        pool.take(np.arange(20, 40))
