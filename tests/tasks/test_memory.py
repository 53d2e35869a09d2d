"""Freed memory goes back to the OS: what keeps a streaming stage's peak flat."""

from pathlib import Path

import pytest

from tasks.memory import _malloc_trim, release_free_memory


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
