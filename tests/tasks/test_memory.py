"""Freed memory goes back to the OS: what keeps a streaming stage's peak flat."""

from pathlib import Path

import pyarrow as pa
import pytest

from tasks.memory import _malloc_trim, release_free_memory, streaming_arrow_pool


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_freed_heap_pages_pinned_below_a_live_object_are_returned():
    # 300 MB of 4 KB buffers from malloc's heap, then all freed but the last: the heap
    # cannot shrink past it, so malloc keeps the 300 MB unless it is told to hand back
    # its free pages
    blocks = [bytearray(4000) for _ in range(75_000)]
    for b in blocks:
        b[::512] = b"x" * len(b[::512])  # touch every page
    pin = blocks[-1]
    del blocks
    before = _rss_mib()
    release_free_memory()
    after = _rss_mib()
    assert before - after > 200, (before, after)
    assert pin[0] == ord("x")


def test_streaming_arrow_pool_is_the_default_inside_the_block_and_only_there():
    before = pa.default_memory_pool()
    with streaming_arrow_pool() as pool:
        assert pa.default_memory_pool().backend_name == pool.backend_name
        assert pool.backend_name in ("jemalloc", "system")
        start = pool.bytes_allocated()
        arr = pa.array([b"x" * 1000] * 1000, pa.binary())  # allocated from the block's pool
        assert pool.bytes_allocated() - start >= 1_000_000
    assert pa.default_memory_pool().backend_name == before.backend_name
    del arr
    assert pool.bytes_allocated() == start  # freed into the pool it came from
