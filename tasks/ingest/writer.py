"""The ingest loop: check, dedupe and write records into the store.

Records go to worker processes in small batches; the workers read the files, decode
and check every image and hash it, and send back the results with the bytes they read,
so the main process only walks the source, dedupes and writes. Results are gathered, in
source order, into chunks written as one examples file, one label events file and one
quarantine file per chunk, each atomically, under the store's commit lease.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import compress

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from configs.schema import Config
from tasks.images.check import READ_ERROR, read_and_check
from tasks.ingest.runners import open_executor
from tasks.ingest.sources import RawRecord
from tasks.memory import release_free_memory, streaming_arrow_pool
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
ID_BATCH_ROWS = 65_536  # stored ids read per batch when catching up
LOGGED_PER_REASON = 20  # quarantine warnings logged per reason; the store keeps them all

ProgressFn = Callable[[int, int | None], None]


# What to change when one reason quarantined everything (IngestSummary.nothing_usable).
_FIXES = {
    "wrong_channels": "set ingest.convert=auto (converts any image mode to train.channels)",
    "too_many_pixels": "raise ingest.max_pixels if these images are genuine",
    "not_an_image": "check that source.path points at image files (JPEG, PNG, ...)",
    "unreadable": "check that the files exist and can be read by this user",
    "empty_file": "the files are empty (0 bytes): copy them again",
    "truncated_or_corrupt": "the files are damaged: copy them again",
    "label_not_in_taxonomy": "set taxonomy.classes to your class names (semilabel init "
    "PATH --out FILE writes a config with them)",
}


class IngestError(RuntimeError):
    """An ingest stored nothing a run could use; the message says why and what to change."""


CONVERTED = "converted:"  # counter keys: one per source mode
EXIF_ROTATED = "exif_rotated"


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
    # new examples whose mode is not what training reads, by mode (decoding converts
    # them to `converted_to`; the stored bytes stay the original), and those EXIF turns
    converted: dict[str, int] = field(default_factory=dict)
    converted_to: str = "L"
    exif_rotated: int = 0
    quarantined_total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quarantined_total", sum(self.quarantined.values()))

    def nothing_usable(self) -> str | None:
        """Why this ingest stored nothing a run can use (every record quarantined, or every
        label refused), with the key to change; None when something usable came in."""
        if not self.quarantined:
            return None
        top, n = max(self.quarantined.items(), key=lambda kv: kv[1])
        fix = _FIXES.get(top, "see the quarantine/ dataset for each record and its reason")
        if self.seen and self.ingested == 0 and self.duplicates == 0:
            return (
                f"all {self.seen} records from {self.source} were quarantined, nothing was "
                f"stored; most for {top} ({n}): {fix}"
            )
        refused = self.quarantined.get("label_not_in_taxonomy", 0)
        if refused and self.label_events == 0 and self.label_events_duplicate == 0:
            return (
                f"{self.ingested} images were stored but all {refused} labels from "
                f"{self.source} were quarantined as label_not_in_taxonomy: "
                f"{_FIXES['label_not_in_taxonomy']}"
            )
        return None

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
        if self.converted:
            rows.append(
                {
                    "metric": f"converted to {self.converted_to} when decoded",
                    "value": sum(self.converted.values()),
                }
            )
            rows += [
                {"metric": f"  converted: from {mode}", "value": n}
                for mode, n in sorted(self.converted.items())
            ]
        if self.exif_rotated:
            rows.append({"metric": "turned upright (EXIF orientation)", "value": self.exif_rotated})
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


# -- the ingest loop ----------------------------------------------------------------------


def _digests(hex_ids: list[str]) -> np.ndarray:
    """The first 128 bits of each SHA-256 id: two different images share them with
    probability about n^2 / 2^129 (1e-21 for a billion images), as in the decoded cache."""
    return np.array([bytes.fromhex(h[:32]) for h in hex_ids], dtype="S16")


class IdIndex:
    """Set membership for SHA-256 hex ids, ~16 B an id however many are known (their first
    128 bits: see `_digests`).

    The ids sit in sorted numpy runs: each `add` appends a run, and the last two runs
    merge while the older is no larger than the newer and the merge stays within
    `max_run` ids, so there are O(n / max_run + log n) runs, adding costs O(max_run) an
    id at most, and a merge never copies more than `max_run` ids at once (one sorted
    array grown by `np.insert` copied all n ids, and held them twice, on every add)."""

    def __init__(self, hex_ids: Iterable[str] = (), *, max_run: int = 1 << 18):
        self.max_run = max_run
        self._runs: list[np.ndarray] = []
        ids = list(hex_ids)
        if ids:
            self._add_run(np.unique(_digests(ids)))

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    @property
    def n_runs(self) -> int:
        return len(self._runs)

    def contains(self, hex_ids: list[str]) -> np.ndarray:
        found = np.zeros(len(hex_ids), bool)
        if not hex_ids or not self._runs:
            return found
        q = _digests(hex_ids)
        for run in self._runs:
            pos = np.searchsorted(run, q)
            pos[pos == len(run)] = 0
            found |= run[pos] == q
        return found

    def add(self, hex_ids: list[str]) -> None:
        """Add ids that are not in the index yet (callers check with `contains`)."""
        if hex_ids:
            self._add_run(np.unique(_digests(hex_ids)))

    def _add_run(self, run: np.ndarray) -> None:
        runs = self._runs
        runs.append(run)
        while (
            len(runs) > 1
            and len(runs[-2]) <= len(runs[-1])
            and len(runs[-2]) + len(runs[-1]) <= self.max_run
        ):
            new = runs.pop()
            old = runs.pop()
            runs.append(np.insert(old, np.searchsorted(old, new), new))


class _Known:
    """What the store already holds that this ingest dedupes against: example ids, this
    source's label events, quarantine ids, and which files of each dataset were read, so
    that `catch_up` reads only the files other writers added since."""

    def __init__(self, store: Store, source_name: str):
        self.store = store
        self.seen: dict[str, set[str]] = {d: set() for d in (EXAMPLES, LABELS, QUARANTINE)}
        self.examples = IdIndex()
        self.source = SourceLog("human", source_name)
        self.quarantine: set[str] = set()
        self.said_in_run: dict[str, tuple[str, str]] = {}  # example -> (label, source uri)
        self.catch_up()

    def catch_up(self) -> None:
        new = {d: [f for f in self.store.files(d) if f not in self.seen[d]] for d in self.seen}
        for ids in _column_batches(self.store, new[EXAMPLES], "example_id"):
            self.examples.add(list(compress(ids, (~self.examples.contains(ids)).tolist())))
        self.source.add_files(self.store, new[LABELS])
        self.quarantine |= self.store.ids_in_files(QUARANTINE, "quarantine_id", new[QUARANTINE])
        for d, files in new.items():
            self.seen[d].update(files)

    def written(self, dataset: str, path: str | None) -> None:
        if path is not None:
            self.seen[dataset].add(path)


def _column_batches(store: Store, files: list[str], column: str) -> Iterator[list[str]]:
    """One string column of `files`, a batch at a time: a store of millions of examples
    is read into the index without ever holding its ids as one set of Python strings."""
    if files:
        data = ds.dataset(files, format="parquet", filesystem=store.fs)
        for batch in data.to_batches(columns=[column], batch_size=ID_BATCH_ROWS):
            yield batch.column(0).to_pylist()


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


@streaming_arrow_pool()  # Arrow allocates from jemalloc while ingest runs (tasks/memory.py)
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
    accepted = None if cfg.ingest.convert != "off" else tuple(cfg.ingest.channels)
    check_args = (cfg.ingest.max_pixels, accepted, MAX_BATCH_BYTES)

    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    use_pool = cfg.ingest.runner != "processes" or (  # threads or a cluster: as asked
        cfg.ingest.workers > 1 and (total is None or total >= MIN_RECORDS_FOR_POOL)
    )
    pool, close_pool = open_executor(cfg.ingest) if use_pool else (None, None)
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
        # A chunk's images pass through Arrow's allocator, and its records through
        # malloc; both keep what was freed, and the process grew with the run: hand it back.
        release_free_memory()
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
                assert close_pool is not None
                closing = threading.Thread(
                    target=close_pool, args=(True,), name="ingest-pool-shutdown"
                )
                closing.start()
            datas = [r.data if d is None else d for r, d in zip(batch, read, strict=True)]
            chunk.add(batch, checks, datas)
        chunk.flush()
    finally:
        if closing is not None:
            closing.join()
        elif close_pool is not None:
            close_pool(False)

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
        converted={
            k.removeprefix(CONVERTED): n
            for k, n in sorted(counts.items())
            if k.startswith(CONVERTED)
        },
        converted_to="L" if cfg.train.channels == 1 else "RGB",
        exif_rotated=counts[EXIF_ROTATED],
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

    target_mode = "L" if cfg.train.channels == 1 else "RGB"
    ok_ids = [c[1] for c in checks if c[0] == "ok"]
    # ids already stored, then also those added by this chunk: a second copy is a duplicate
    taken = set(compress(ok_ids, known.examples.contains(ok_ids).tolist()))
    new_ids: list[str] = []
    images: list[bytes | None] = []
    heights: list[int] = []
    widths: list[int] = []
    n_channels: list[int] = []
    stored: list[RawRecord] = []  # the record each new example came from
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
            if check[5] != target_mode:
                counts[f"{CONVERTED}{check[5]}"] += 1
            counts[EXIF_ROTATED] += check[6]
            stored.append(rec)  # a later copy, whatever its metadata, is a duplicate
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
            pa.array([r.source_uri for r in stored], pa.string()),
            pa.repeat(pa.scalar(now, ex_schema.field("ingested_at").type), n),
            pa.repeat(pa.scalar(run_id, pa.string()), n),
            pa.array([r.metadata for r in stored], ex_schema.field("metadata").type),
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
