"""Handing freed memory back to the operating system in long streaming loops.

A stage that streams a million records frees as much as it allocates, but the
allocators keep what was freed for reuse: Arrow's (mimalloc by default) keeps whole
pages, and glibc's malloc keeps fragmented heap pages that Python objects came and went
in. The process then looks as if it grew with the data. `release_free_memory` after each
chunk returns both, so peak memory is what a chunk needs, not what the run has seen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

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
