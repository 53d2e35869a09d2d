"""The ingest loop: check, dedupe and write records into the store.

Records are read and checked in batches (`runners.checked_batches`), and the results
gathered, in source order, into chunks written as one examples file, one label events
file and one quarantine file per chunk, each atomically, under the store's commit lease.
Writing a chunk reads top to bottom: catch up with other writers, sort each record into
a new example, a duplicate, a label event or a quarantine row, then write the three
tables, examples first.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress

import pyarrow as pa

from configs.data import DataSpec, GoldConfig, IngestConfig
from tasks.images.check import READ_ERROR
from tasks.ingest.known import DedupeState
from tasks.ingest.runners import CheckedBatch, checked_batches
from tasks.ingest.sources import RawRecord
from tasks.ingest.summary import IngestSummary, IngestTally, target_mode
from tasks.memory import release_free_memory, streaming_arrow_pool
from tasks.store import (
    EXAMPLES,
    LABELS,
    QUARANTINE,
    SCHEMAS,
    SourceEvent,
    Store,
    gold_mask,
    utcnow,
)

log = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 64 << 20  # flush a chunk early when its images pass this size
LOGGED_PER_REASON = 20  # quarantine warnings logged per reason; the store keeps them all

ProgressFn = Callable[[int, int | None], None]


@streaming_arrow_pool()  # Arrow allocates from jemalloc while ingest runs (tasks/memory.py)
def ingest_records(
    store: Store,
    records: Iterator[RawRecord],
    spec: DataSpec,
    ingest: IngestConfig,
    *,
    source_name: str,
    run_id: str,
    total: int | None = None,
    progress: ProgressFn | None = None,
) -> IngestSummary:
    """Check, dedupe and write `records` into `store`; returns what happened."""
    start = time.perf_counter()
    store.remove_stale_temp_files()
    run = _IngestRun.of(spec, source_name, run_id)
    writer = _ChunkWriter(store, run, DedupeState(store, source_name))

    def write(chunk: CheckedBatch) -> None:
        writer.commit(chunk)
        if progress:
            progress(writer.tally.seen, total)

    chunk = _Chunk(spec.store.rows_per_file, write)
    with checked_batches(records, ingest, total) as checked:
        for batch in checked:
            chunk.add(batch)
        chunk.flush()
    return writer.tally.summary(
        source=source_name,
        run_id=run_id,
        elapsed_s=time.perf_counter() - start,
        converted_to=run.target_mode,
    )


@dataclass(frozen=True)
class _IngestRun:
    """What every chunk of one ingest is written with."""

    source_name: str
    run_id: str
    classes: frozenset[str]
    taxonomy_version: str
    target_mode: str  # the mode training reads: new examples in another are `converted`
    gold: GoldConfig

    @classmethod
    def of(cls, spec: DataSpec, source_name: str, run_id: str) -> _IngestRun:
        return cls(
            source_name=source_name,
            run_id=run_id,
            classes=frozenset(spec.classes),
            taxonomy_version=spec.taxonomy.version,
            target_mode=target_mode(spec.channels),
            gold=spec.gold,
        )


class _Chunk:
    """Checked records waiting to be written: at most `max_rows` of them, and flushed
    early once their bytes reach MAX_CHUNK_BYTES (the same boundaries whoever read the
    bytes, so chunks line up between runs)."""

    def __init__(self, max_rows: int, write: Callable[[CheckedBatch], None]):
        self.max_rows = max_rows
        self._write = write
        self.records: list[RawRecord] = []
        self.checks: list[tuple] = []
        self.datas: list[bytes | None] = []
        self.size = 0

    def add(self, batch: CheckedBatch) -> None:
        n_bytes = sum(map(len, filter(None, batch.datas)))
        if (
            len(self.records) + len(batch.records) < self.max_rows
            and self.size + n_bytes < MAX_CHUNK_BYTES
        ):  # the common case: no boundary inside this batch
            self.records += batch.records
            self.checks += batch.checks
            self.datas += batch.datas
            self.size += n_bytes
            return
        for rec, check, data in zip(batch.records, batch.checks, batch.datas, strict=True):
            self.records.append(rec)
            self.checks.append(check)
            self.datas.append(data)
            if data:
                self.size += len(data)
            if len(self.records) >= self.max_rows or self.size >= MAX_CHUNK_BYTES:
                self.flush()

    def flush(self) -> None:
        if self.records:
            chunk = CheckedBatch(self.records, self.checks, self.datas)
            self.records, self.checks, self.datas, self.size = [], [], [], 0
            self._write(chunk)


class _ChunkWriter:
    """Writes the chunks of one ingest, deduped against what the store holds (`known`),
    counting what it did in `tally`."""

    def __init__(self, store: Store, run: _IngestRun, known: DedupeState):
        self.store = store
        self.run = run
        self.known = known
        self.tally = IngestTally()

    def commit(self, chunk: CheckedBatch) -> None:
        """The optimistic commit: catch up with what other writers stored meanwhile, then
        dedupe and write, all under the store's lease."""
        with self.store.commit_lock() as lease:
            self.known.catch_up()
            lease.check()
            rows = self._sort(chunk, now=utcnow())
            self._count_new(rows)
            self._write(rows)
        # A chunk's images pass through Arrow's allocator, and its records through
        # malloc; both keep what was freed, and the process grew with the run: hand it back.
        release_free_memory()

    def _sort(self, chunk: CheckedBatch, now: datetime) -> _ChunkRows:
        """Each record a new example or a duplicate, a label event, or quarantined."""
        ok_ids = [c[1] for c in chunk.checks if c[0] == "ok"]
        rows = _ChunkRows(
            now=now,
            taken=set(compress(ok_ids, self.known.examples.contains(ok_ids).tolist())),
            quarantine=_QuarantineRows(
                self.run, self.known.quarantine, self.tally.quarantined, now
            ),
        )
        self.tally.seen += len(chunk.records)
        for rec, check, data in zip(chunk.records, chunk.checks, chunk.datas, strict=True):
            if rec.error is not None:  # the source could not read it
                reason, detail = rec.error
                rows.quarantine.add(
                    _Quarantined(
                        "example", reason, detail, rec.source_uri, rec.label, None, rec.data
                    )
                )
            elif check[0] == READ_ERROR:  # `path` could not be read: there are no bytes
                uri = rec.error_uri or rec.source_uri
                rows.quarantine.add(_Quarantined("example", check[1], check[2], uri, rec.label))
            elif check[0] != "ok":
                rows.quarantine.add(
                    _Quarantined(
                        "example", check[1], check[2], rec.source_uri, rec.label, None, data
                    )
                )
            else:
                self._add_image(rows, rec, check, data)
                if rec.label is not None:
                    self._add_label(rows, rec.source_uri, check[1], rec.label)
        return rows

    def _add_image(self, rows: _ChunkRows, rec: RawRecord, check: tuple, data: bytes) -> None:
        """A new example, or a duplicate of one stored or earlier in this chunk."""
        example_id, mode, exif_rotated = check[1], check[5], check[6]
        if example_id in rows.taken:
            self.tally.duplicates += 1
            return
        rows.taken.add(example_id)
        rows.examples.add(rec, check, data)
        if mode != self.run.target_mode:
            self.tally.converted[mode] += 1
        self.tally.exif_rotated += exif_rotated
        if rec.label is not None and rec.label in self.run.classes:
            self.tally.labeled += 1

    def _add_label(self, rows: _ChunkRows, uri: str, example_id: str, label: str) -> None:
        """A label event, unless the label is outside the taxonomy or contradicts what
        this source said of the same image in this run (both quarantined), or the source
        already said it."""
        known = self.known
        if label not in self.run.classes:
            detail = (
                f"label {label!r} is not one of taxonomy.classes "
                f"(version {self.run.taxonomy_version}); the image was kept unlabeled"
            )
            rows.quarantine.add(
                _Quarantined("label", "label_not_in_taxonomy", detail, uri, label, example_id)
            )
            return
        said = known.said_in_run.get(example_id)
        if said is not None and said[0] != label:
            detail = (
                f"this source labels the same image {said[0]!r} at {said[1]} and {label!r} "
                "here; the first label was kept. Remove one of the copies, or move both "
                "into the right class."
            )
            rows.quarantine.add(
                _Quarantined("label", "conflicting_labels", detail, uri, label, example_id)
            )
            return
        known.said_in_run[example_id] = (label, uri)
        event_id = known.source.next_event(example_id, label)
        if event_id is None or event_id in known.source.event_ids:
            self.tally.label_events_duplicate += 1
            return
        known.source.record(example_id, SourceEvent(event_id, label, 1.0), (rows.now, event_id))
        rows.events.add(event_id, example_id, label)

    def _count_new(self, rows: _ChunkRows) -> None:
        new_ids = rows.examples.ids
        self.tally.ingested += len(new_ids)
        self.tally.bytes += sum(map(len, rows.examples.images))
        self.tally.label_events += len(rows.events.ids)
        if new_ids:
            gold = self.run.gold
            self.tally.gold += int(gold_mask(new_ids, gold.fraction, gold.salt).sum())

    def _write(self, rows: _ChunkRows) -> None:
        store, known, now = self.store, self.known, rows.now
        # Examples first: a label event must never point at an example that is not stored.
        known.written(EXAMPLES, store.write(EXAMPLES, rows.examples.table(self.run, now), when=now))
        known.examples.add(rows.examples.ids)
        known.written(LABELS, store.write(LABELS, rows.events.table(self.run, now), when=now))
        known.written(QUARANTINE, store.write(QUARANTINE, rows.quarantine.table(), when=now))


# -- what one chunk writes ---------------------------------------------------------------


@dataclass(frozen=True)
class _Quarantined:
    """A record, or its label, refused, and why."""

    kind: str  # example | label
    reason: str
    detail: str
    uri: str
    label: str | None
    example_id: str | None = None
    data: bytes | None = None

    @property
    def quarantine_id(self) -> str:
        h = hashlib.sha256(f"{self.kind}|{self.reason}|{self.uri}|{self.label}|".encode())
        h.update(self.data or b"")
        return h.hexdigest()[:32]


class _QuarantineRows:
    """The quarantine rows of one chunk. Every refusal is counted (and the first
    LOGGED_PER_REASON of each reason logged); a row is written only for what was not
    quarantined before, by this ingest or an earlier one."""

    def __init__(self, run: _IngestRun, known_ids: set[str], reasons: Counter[str], now: datetime):
        self.run = run
        self.known_ids = known_ids
        self.reasons = reasons
        self.now = now
        self.columns: dict[str, list] = {n: [] for n in SCHEMAS[QUARANTINE].names}

    def add(self, q: _Quarantined) -> None:
        self.reasons[q.reason] += 1
        qid = q.quarantine_id
        if self.reasons[q.reason] <= LOGGED_PER_REASON:
            log.warning("quarantined %s %s: %s [%s]", q.kind, q.uri, q.detail, q.reason)
        elif self.reasons[q.reason] == LOGGED_PER_REASON + 1:
            log.warning("more %r quarantines: see the quarantine/ dataset for all", q.reason)
        if qid in self.known_ids:
            return
        self.known_ids.add(qid)
        for k, v in (
            ("quarantine_id", qid),
            ("record_kind", q.kind),
            ("reason", q.reason),
            ("detail", q.detail),
            ("source", self.run.source_name),
            ("source_uri", q.uri),
            ("example_id", q.example_id),
            ("label", q.label),
            ("data", q.data),
            ("quarantined_at", self.now),
            ("run_id", self.run.run_id),
        ):
            self.columns[k].append(v)

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=SCHEMAS[QUARANTINE])


@dataclass
class _NewExamples:
    """The examples a chunk adds to the store, each with the record it came from (a
    later copy, whatever its metadata, is a duplicate)."""

    ids: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    records: list[RawRecord] = field(default_factory=list)

    def add(self, rec: RawRecord, check: tuple, data: bytes) -> None:
        _, example_id, height, width, channels = check[:5]
        self.ids.append(example_id)
        self.images.append(data)
        self.heights.append(height)
        self.widths.append(width)
        self.channels.append(channels)
        self.records.append(rec)

    def table(self, run: _IngestRun, now: datetime) -> pa.Table:
        schema = SCHEMAS[EXAMPLES]
        n = len(self.ids)
        columns = [
            pa.array(self.ids, pa.string()),
            pa.array(self.images, pa.binary()),
            pa.array(self.heights, pa.int32()),
            pa.array(self.widths, pa.int32()),
            pa.array(self.channels, pa.int8()),
            pa.repeat(pa.scalar(run.source_name, pa.string()), n),
            pa.array([r.source_uri for r in self.records], pa.string()),
            pa.repeat(pa.scalar(now, schema.field("ingested_at").type), n),
            pa.repeat(pa.scalar(run.run_id, pa.string()), n),
            pa.array([r.metadata for r in self.records], schema.field("metadata").type),
        ]
        return pa.table(columns, schema=schema)


@dataclass
class _NewEvents:
    """The label events a chunk adds: what the source says that it had not said yet."""

    ids: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, event_id: str, example_id: str, label: str) -> None:
        self.ids.append(event_id)
        self.examples.append(example_id)
        self.labels.append(label)

    def table(self, run: _IngestRun, now: datetime) -> pa.Table:
        schema = SCHEMAS[LABELS]
        n = len(self.ids)
        columns = [
            pa.array(self.ids, pa.string()),
            pa.array(self.examples, pa.string()),
            pa.array(self.labels, pa.string()),
            pa.repeat(pa.scalar("human", pa.string()), n),
            pa.repeat(pa.scalar(run.source_name, pa.string()), n),
            pa.repeat(pa.scalar(1.0, pa.float32()), n),
            pa.repeat(pa.scalar(now, schema.field("created_at").type), n),
            pa.repeat(pa.scalar(run.run_id, pa.string()), n),
            pa.repeat(pa.scalar(run.taxonomy_version, pa.string()), n),
            pa.repeat(pa.scalar(False, pa.bool_()), n),
        ]
        return pa.table(columns, schema=schema)


@dataclass
class _ChunkRows:
    """What one chunk writes, as its records are sorted."""

    now: datetime
    taken: set[str]  # ids stored before, then also those this chunk adds
    quarantine: _QuarantineRows
    examples: _NewExamples = field(default_factory=_NewExamples)
    events: _NewEvents = field(default_factory=_NewEvents)
