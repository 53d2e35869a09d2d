"""Handing freed memory back to the operating system in long streaming loops.

A stage that streams a million records frees as much as it allocates, but the
allocators keep what was freed for reuse: Arrow's (mimalloc by default) keeps whole
pages, and glibc's malloc keeps fragmented heap pages that Python objects came and went
in. The process then looks as if it grew with the data. `release_free_memory` after each
chunk returns both, so peak memory is what a chunk needs, not what the run has seen.

mimalloc also cannot hand back a page that a long-lived buffer shares with freed ones:
ingest keeps a million-name folder listing alive while it writes chunk after chunk, and
under mimalloc its peak at 1M images was 420-444 MiB against 352 MiB under jemalloc
(bench/RESULTS.md, "Scale"). `streaming_arrow_pool` runs such a stage on jemalloc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

import pyarrow as pa


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only; absent on musl and macOS
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return freed Arrow pool pages and free glibc heap pages to the OS (about a
    millisecond; a no-op where the C library has no `malloc_trim`)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def streaming_pool() -> pa.MemoryPool:
    """jemalloc where this pyarrow build has it (Linux wheels do), else the system
    allocator: both return freed pages between live buffers, which mimalloc keeps."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()


@contextlib.contextmanager
def streaming_arrow_pool() -> Iterator[pa.MemoryPool]:
    """Make `streaming_pool()` Arrow's default for the block (or, as a decorator, the
    call), then restore the previous default. Buffers remember their pool, so ones made
    before or kept after are fine."""
    previous = pa.default_memory_pool()
    pool = streaming_pool()
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(previous)
