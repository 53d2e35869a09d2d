"""An unlabeled pool larger than memory: uint8 images (N, C, H, W) in a flat file, of
which the training loop reads only the rows of each batch.

Rows are read with `os.pread` into a fresh buffer, not through a memory map, so the
process never holds more of the file than the batch in hand (a map would count every
page it ever touched against the process, and a training epoch touches them all). A run
of consecutive rows (sampling scores a pool in store order) is one read. The file is
written once (see `tasks.training.decoded_cache`) and only read here; `rows` picks which
of its images make up the pool, in that order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class PoolSpec:
    """What a rank needs to open the same pool: the file, its image shape, the rows."""

    path: str
    shape: tuple[int, int, int]  # (C, H, W)
    rows: np.ndarray  # int64 indices into the file's images


class ImagePool:
    """Read-only, file-backed uint8 images; `take(idx)` returns the (B, C, H, W) batch of
    pool positions `idx`. Indexing with a slice (`pool[:k]`) reads those rows too."""

    def __init__(self, path: str | Path, shape: tuple[int, int, int], rows: np.ndarray):
        self.path = str(path)
        self.shape = tuple(int(v) for v in shape)
        self.row_bytes = int(np.prod(self.shape))
        n_file = os.path.getsize(self.path) // self.row_bytes
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n_file):
            raise ValueError(f"pool rows outside the {n_file} images of {self.path}")
        self._fd: int | None = None
        self._pid = -1

    @classmethod
    def open(cls, spec: PoolSpec) -> ImagePool:
        return cls(spec.path, spec.shape, spec.rows)

    def spec(self) -> PoolSpec:
        return PoolSpec(self.path, self.shape, self.rows)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def take(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The images at pool positions `idx` (B,), as a new uint8 tensor (B, C, H, W).
        Each run of consecutive file rows is one read (sampling scores a pool in store
        order); random rows, as training draws them, are read one by one, as before."""
        positions = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        file_rows = self.rows[positions].reshape(-1)
        out = np.empty((len(file_rows), self.row_bytes), dtype=np.uint8)
        fd, size = self._file(), self.row_bytes
        runs = _runs(file_rows)  # (R, 2) positions [start, stop) in `out`
        view = memoryview(out.reshape(-1))
        for begin, end, offset in zip(
            (runs[:, 0] * size).tolist(),
            (runs[:, 1] * size).tolist(),
            (file_rows[runs[:, 0]] * size).tolist(),
            strict=True,
        ):
            got = os.preadv(fd, [view[begin:end]], offset)
            if got != end - begin:  # a read may return less than asked: read on
                self._read_rest(fd, view[begin:end], offset, got)
        return torch.from_numpy(out).view(len(file_rows), *self.shape)

    def _read_rest(self, fd: int, into: memoryview, offset: int, done: int) -> None:
        while done < len(into):
            got = os.preadv(fd, [into[done:]], offset + done)
            if got <= 0:
                at = (offset + done) // self.row_bytes
                raise OSError(f"{self.path}: short read of image row {at} ({done} bytes read)")
            done += got

    def __getitem__(self, key: slice) -> torch.Tensor:
        return self.take(np.arange(len(self.rows))[key])

    def chunks(self, size: int = 4096) -> Iterator[torch.Tensor]:
        """The whole pool in order, `size` images at a time."""
        for start in range(0, len(self.rows), size):
            yield self.take(np.arange(start, min(start + size, len(self.rows))))

    def fingerprint(self) -> str:
        """The file's identity (path, size, mtime) and the rows: what a checkpoint's
        data hash needs, without reading the pool."""
        st = os.stat(self.path)
        h = hashlib.sha256(f"{self.path}|{st.st_size}|{st.st_mtime_ns}|{self.shape}".encode())
        h.update(self.rows.tobytes())
        return h.hexdigest()[:16]

    def __getstate__(self) -> dict:  # the open file stays behind
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)  # type: ignore[arg-type]


def _runs(rows: np.ndarray) -> np.ndarray:
    """(start, stop) positions of the runs of consecutive values in `rows` (r, r+1, ...):
    [3, 4, 5, 9, 9] -> [[0, 3], [3, 4], [4, 5]]."""
    if not len(rows):
        return np.zeros((0, 2), np.int64)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return np.stack([np.r_[0, breaks], np.r_[breaks, len(rows)]], 1)


def take_rows(pool: torch.Tensor | ImagePool, idx: torch.Tensor) -> torch.Tensor:
    """Rows `idx` of an in-memory tensor or a file-backed pool."""
    if isinstance(pool, ImagePool):
        return pool.take(idx)
    return pool[idx]


def on_device(
    x: torch.Tensor | ImagePool, device: torch.device, memory_format: torch.memory_format
) -> torch.Tensor | ImagePool:
    """An in-memory tensor moved to `device` (in `memory_format`); a file-backed pool
    stays on disk, and each batch read from it is moved when it is used."""
    if isinstance(x, ImagePool):
        return x
    return x.to(device).contiguous(memory_format=memory_format)
