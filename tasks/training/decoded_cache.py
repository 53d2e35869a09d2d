"""The decoded image cache: every example of the store decoded once to uint8 at the
training size, in one flat file on local disk, reused by every training run that reads
the same examples at the same size.

Layout, under `train.cache_dir` (default `.semilabel/cache`), one folder per key:

    <key>/images.u8      uint8 (N, C, H, W), row i = example i of the index
    <key>/index.parquet  example_id, source_uri, digest (of the decoded pixels)
    <key>/meta.json      shape, count, store, as_of, when it was built

The key hashes the store URI, the time-travel instant, the image size and channels, and
the ordered example ids, so a new ingest (or another size) makes a new cache and an
unchanged store reuses the old one without decoding anything. Building streams the
examples in batches (memory stays that of one batch) into a folder of its own that is
renamed into place when complete: a killed build leaves no half cache that a later run
could read. The newest `KEEP` caches are kept; older ones are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.image_decode import decode_images
from tasks.store import EXAMPLES, Store
from tasks.store.locks import pid_alive

log = logging.getLogger(__name__)

IMAGES = "images.u8"
INDEX = "index.parquet"
META = "meta.json"
KEEP = 2  # caches kept per cache folder (the one in use and the one before)
BATCH = 512


@dataclass(frozen=True)
class DecodedCache:
    """A complete cache: where its images are, their shape, and what each row is."""

    folder: Path
    shape: tuple[int, int, int]  # (C, H, W)
    example_ids: list[str]
    source_uris: list[str]
    digests: list[bytes]  # blake2b-16 of each row's pixels
    built: bool  # True when this call decoded the images, False when it reused them

    @property
    def images_path(self) -> Path:
        return self.folder / IMAGES

    def __len__(self) -> int:
        return len(self.example_ids)


def pixel_digest(image: np.ndarray) -> bytes:
    """A digest of decoded pixels: equal for the same image in any lossless encoding."""
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def _example_filter(as_of: datetime | None) -> pc.Expression | None:
    if as_of is None:
        return None
    return pc.field("ingested_at") <= pa.scalar(as_of, pa.timestamp("us", tz="UTC"))


def cache_key(store: Store, size: int, channels: int, as_of: datetime | None) -> tuple[str, int]:
    """(key, number of distinct examples), from the example ids alone (no image bytes)."""
    h = hashlib.sha256(f"{store.uri}|{size}|{channels}|{as_of}".encode())
    seen: set[str] = set()
    for batch in store.iter_batches(
        EXAMPLES, ["example_id"], filter=_example_filter(as_of), batch_size=65536
    ):
        for e in batch.column(0).to_pylist():
            if e not in seen:  # a duplicate row an older version wrote counts once
                seen.add(e)
                h.update(e.encode() + b"\0")
    return h.hexdigest()[:20], len(seen)


def _read(folder: Path, built: bool) -> DecodedCache:
    meta = json.loads((folder / META).read_text())
    index = pq.read_table(folder / INDEX)
    return DecodedCache(
        folder=folder,
        shape=tuple(meta["shape"]),  # type: ignore[arg-type]
        example_ids=index.column("example_id").to_pylist(),
        source_uris=index.column("source_uri").to_pylist(),
        digests=index.column("digest").to_pylist(),
        built=built,
    )


def _build(
    store: Store, tmp: Path, n: int, size: int, channels: int, as_of: datetime | None
) -> None:
    """Decode every example into `tmp` (a fresh folder), batch by batch."""
    row_bytes = channels * size * size
    ids: list[str] = []
    uris: list[str] = []
    digests: list[bytes] = []
    seen: set[str] = set()
    with (tmp / IMAGES).open("wb") as f:
        f.truncate(n * row_bytes)
        for batch in store.iter_batches(
            EXAMPLES,
            ["example_id", "image", "source_uri"],
            filter=_example_filter(as_of),
            batch_size=BATCH,
            lean=True,
        ):
            batch_ids = batch.column(0).to_pylist()
            keep = [i for i, e in enumerate(batch_ids) if not (e in seen or seen.add(e))]
            if len(keep) < len(batch_ids):
                batch = batch.take(pa.array(keep, pa.int64()))
            images = decode_images(batch.column(1).to_pylist(), size, channels)
            f.seek(len(ids) * row_bytes)
            f.write(np.ascontiguousarray(images).tobytes())
            ids.extend(batch.column(0).to_pylist())
            uris.extend(batch.column(2).to_pylist())
            digests.extend(pixel_digest(im) for im in images)
        f.flush()
        os.fsync(f.fileno())
    if len(ids) != n:  # the store changed between counting and reading: build again
        raise RuntimeError(
            f"the store {store.uri!r} changed while its images were decoded "
            f"({n} examples counted, {len(ids)} read); run again"
        )
    pq.write_table(
        pa.table(
            {"example_id": ids, "source_uri": uris, "digest": digests},
            schema=pa.schema(
                [("example_id", pa.string()), ("source_uri", pa.string()), ("digest", pa.binary())]
            ),
        ),
        tmp / INDEX,
    )
    (tmp / META).write_text(
        json.dumps(
            {
                "shape": [channels, size, size],
                "count": n,
                "store": store.uri,
                "as_of": as_of.isoformat() if as_of else None,
                "built_at": time.time(),
            }
        )
    )


def _evict(root: Path, keep: Path) -> None:
    """Remove all but the newest KEEP complete caches (and builds left by killed runs)."""
    done = sorted(
        (p for p in root.iterdir() if p.is_dir() and (p / META).exists() and ".tmp-" not in p.name),
        key=lambda p: (p / META).stat().st_mtime,
        reverse=True,
    )
    for old in done[KEEP:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("*.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def cache_root(configured: str | None, store_root: str) -> Path:
    """`train.cache_dir`, or `cache/` beside a local store (`.semilabel/cache` for the
    default store), or `.semilabel/cache` when the store is remote (`s3://...`)."""
    if configured:
        return Path(configured)
    if "://" in store_root and not store_root.startswith("file://"):
        return Path(".semilabel/cache")
    local = Path(store_root.removeprefix("file://"))
    return local.resolve().parent / "cache"


def decoded_cache(
    store: Store, cache_dir: str | Path, size: int, channels: int, as_of: datetime | None = None
) -> DecodedCache:
    """The store's examples decoded at `size` × `size` × `channels`: the existing cache
    for exactly these examples, or a new one built now."""
    key, n = cache_key(store, size, channels, as_of)
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    if (folder / META).exists():
        os.utime(folder / META)  # in use: the newest, for eviction
        return _read(folder, built=False)
    if n == 0:
        return DecodedCache(folder, (channels, size, size), [], [], [], built=False)
    tmp = root / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.perf_counter()
    try:
        _build(store, tmp, n, size, channels, as_of)
        try:
            os.rename(tmp, folder)
        except OSError:  # another run finished the same cache first: use that one
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "decoded %d images (%dx%dx%d) into the cache %s in %.1fs",
        n,
        channels,
        size,
        size,
        folder,
        time.perf_counter() - started,
    )
    _evict(root, folder)
    return _read(folder, built=True)
