"""The decoded image cache: every example of the store decoded once to uint8 at the
training size, in one flat file on local disk, reused by every training run that reads
the same examples at the same size.

Layout, under `train.cache_dir` (default `.semilabel/cache`), one folder per key:

    <key>/images.u8      uint8 (N, C, H, W), row i = example i of the index
    <key>/index.parquet  example_id, source_uri, digest (16 bytes, of the decoded pixels)
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

from tasks.images.decode import decode_images
from tasks.memory import release_free_memory
from tasks.store import EXAMPLES, Store
from tasks.store.locks import pid_alive

log = logging.getLogger(__name__)

IMAGES = "images.u8"
INDEX = "index.parquet"
META = "meta.json"
KEEP = 2  # caches kept per cache folder (the one in use and the one before)
BATCH = 512
INDEX_ROWS = 65536  # index rows per Parquet row group
DIGEST_BYTES = 16
FORMAT = "v3"  # in the key: a cache written in another layout is never read


@dataclass(frozen=True)
class DecodedCache:
    """A complete cache: where its images are, their shape, and what each row is.

    Per-row facts stay columnar (an Arrow array of ids, a NumPy array of digests), not
    Python objects: at a million images the lists alone would cost hundreds of MB."""

    folder: Path
    shape: tuple[int, int, int]  # (C, H, W)
    example_ids: pa.StringArray
    digests: np.ndarray  # "S16": blake2b-16 of each row's pixels
    built: bool  # True when this call decoded the images, False when it reused them

    @property
    def images_path(self) -> Path:
        return self.folder / IMAGES

    def __len__(self) -> int:
        return len(self.example_ids)

    def source_uris(self, rows: np.ndarray) -> list[str]:
        """Where the examples at `rows` came from (read from the index when asked)."""
        if not len(rows):
            return []
        column = pq.read_table(self.folder / INDEX, columns=["source_uri"]).column(0)
        return column.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()


def pixel_digest(image: np.ndarray) -> bytes:
    """A digest of decoded pixels: equal for the same image in any lossless encoding."""
    return hashlib.blake2b(image.tobytes(), digest_size=DIGEST_BYTES).digest()


def digest_array(digests: list[bytes]) -> np.ndarray:
    """Digests as a compact "S16" array (compare arrays with arrays: NumPy drops trailing
    zero bytes when it hands one element back as `bytes`)."""
    return np.array(digests, dtype=f"S{DIGEST_BYTES}").reshape(len(digests))


def _example_filter(as_of: datetime | None) -> pc.Expression | None:
    if as_of is None:
        return None
    return pc.field("ingested_at") <= pa.scalar(as_of, pa.timestamp("us", tz="UTC"))


@dataclass(frozen=True)
class _Listing:
    """The store's example ids in reading order, what the cache is keyed on."""

    key: str
    n: int  # distinct examples
    first: np.ndarray | None  # per stored row: its id's first occurrence (None: all are)


def _listing(store: Store, size: int, channels: int, as_of: datetime | None) -> _Listing:
    """The key and count of distinct examples, from the example ids alone (no image
    bytes). Ids are read as Arrow arrays, so memory is bytes per id, not Python objects."""
    h = hashlib.sha256(f"{FORMAT}|{store.uri}|{size}|{channels}|{as_of}".encode())
    chunks = [
        batch.column(0)
        for batch in store.iter_batches(
            EXAMPLES, ["example_id"], filter=_example_filter(as_of), batch_size=65536
        )
    ]
    ids = pa.chunked_array(chunks, pa.string()).combine_chunks()
    unique = pc.unique(ids)  # in order of first occurrence
    first = None
    if len(unique) < len(ids):  # a duplicate row an older version wrote counts once
        where = pc.index_in(ids, value_set=unique).to_numpy()
        first = np.zeros(len(ids), dtype=bool)
        first[np.unique(where, return_index=True)[1]] = True
    for start in range(0, len(unique), 65536):
        piece = unique.slice(start, 65536).to_pylist()
        h.update(("\0".join(piece) + "\0").encode())
    return _Listing(h.hexdigest()[:20], len(unique), first)


def _read(folder: Path, built: bool) -> DecodedCache:
    meta = json.loads((folder / META).read_text())
    index = pq.read_table(folder / INDEX, columns=["example_id", "digest"])
    digests = index.column("digest").combine_chunks()
    return DecodedCache(
        folder=folder,
        shape=tuple(meta["shape"]),  # type: ignore[arg-type]
        example_ids=index.column("example_id").combine_chunks(),
        digests=np.frombuffer(
            digests.buffers()[1],
            dtype=f"S{DIGEST_BYTES}",
            count=len(digests),
            offset=digests.offset * DIGEST_BYTES,
        ),
        built=built,
    )


INDEX_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("source_uri", pa.string()),
        ("digest", pa.binary(DIGEST_BYTES)),
    ]
)


def _build(
    store: Store, tmp: Path, listing: _Listing, size: int, channels: int, as_of: datetime | None
) -> None:
    """Decode every example into `tmp` (a fresh folder), batch by batch; the index is
    written as it goes, so memory stays that of a batch whatever the pool's size."""
    n = listing.n
    row_bytes = channels * size * size
    written = read = 0
    pending: list[pa.Table] = []
    with (
        (tmp / IMAGES).open("wb") as f,
        pq.ParquetWriter(tmp / INDEX, INDEX_SCHEMA) as index,
    ):
        f.truncate(n * row_bytes)
        for batch in store.iter_batches(
            EXAMPLES,
            ["example_id", "image", "source_uri"],
            filter=_example_filter(as_of),
            batch_size=BATCH,
            lean=True,
        ):
            rows = len(batch)
            if listing.first is not None:
                keep = listing.first[read : read + rows]
                batch = batch.filter(pa.array(keep))
            read += rows
            images = decode_images(batch.column(1).to_pylist(), size, channels)
            f.seek(written * row_bytes)
            f.write(np.ascontiguousarray(images).tobytes())
            written += len(batch)
            digests = pa.array([pixel_digest(im) for im in images], pa.binary(DIGEST_BYTES))
            pending.append(
                pa.Table.from_arrays(
                    [batch.column(0), batch.column(2), digests], schema=INDEX_SCHEMA
                )
            )
            if sum(len(t) for t in pending) >= INDEX_ROWS:
                index.write_table(pa.concat_tables(pending))
                pending = []
            release_free_memory()  # else freed pages pile up batch by batch
        if pending:
            index.write_table(pa.concat_tables(pending))
        f.flush()
        os.fsync(f.fileno())
    if written != n:  # the store changed between counting and reading: build again
        raise RuntimeError(
            f"the store {store.uri!r} changed while its images were decoded "
            f"({n} examples counted, {written} read); run again"
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
    listing = _listing(store, size, channels, as_of)
    key, n = listing.key, listing.n
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    if (folder / META).exists():
        os.utime(folder / META)  # in use: the newest, for eviction
        return _read(folder, built=False)
    if n == 0:
        empty = np.zeros(0, dtype=f"S{DIGEST_BYTES}")
        return DecodedCache(folder, (channels, size, size), pa.array([], pa.string()), empty, False)
    tmp = root / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.perf_counter()
    try:
        _build(store, tmp, listing, size, channels, as_of)
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
