"""The store's datasets: append-only, hive-partitioned Parquet with provenance.

Layout under the root (a local folder or any pyarrow filesystem URI)::

    examples/date=YYYY-MM-DD/part-*.parquet    one row per unique input (id = content hash)
    labels/date=YYYY-MM-DD/part-*.parquet      label events; a correction is a new event
    quarantine/date=YYYY-MM-DD/part-*.parquet  rejected inputs with bytes and reason
    snapshots/date=YYYY-MM-DD/part-*.parquet   what a training run read
    annotation_requests/date=YYYY-MM-DD/...    what sampling asked people to label
    slis/date=YYYY-MM-DD/...                   label-health SLIs of every run (long format)
    _locks/<name>/*.lock                       writers' leases (tasks.store.locks)

Nothing is updated in place. On a local filesystem every file is written under a
dot-prefixed temporary name and renamed, so readers (which skip names starting with
"." or "_") never see a partial file. On object stores a single PUT/multipart upload
is already all-or-nothing, so files are written straight to their final key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from configs.redact import redact_text
from tasks.store.holdout import Ids
from tasks.store.locks import StoreLock, pid_alive

log = logging.getLogger(__name__)

EXAMPLES, LABELS, QUARANTINE, SNAPSHOTS = "examples", "labels", "quarantine", "snapshots"
ANNOTATION_REQUESTS = "annotation_requests"
SLIS = "slis"
SLIS_LATEST = "slis_latest"  # each flow's latest SLI rows, derived from SLIS (tasks.slis.latest)
DATASETS = (EXAMPLES, LABELS, QUARANTINE, SNAPSHOTS)  # what `counts()` reports
TMP_PREFIX = ".tmp-"
SOURCE_KINDS = ("human", "rule", "label_model", "model", "external")

_TS = pa.timestamp("us", tz="UTC")
SCHEMAS: dict[str, pa.Schema] = {
    EXAMPLES: pa.schema(
        [
            ("example_id", pa.string()),
            ("image", pa.binary()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("channels", pa.int8()),
            ("source", pa.string()),
            ("source_uri", pa.string()),
            ("ingested_at", _TS),
            ("run_id", pa.string()),  # the ingest run that stored it (null before 0.2)
            # A manifest's source.metadata_columns (region, camera...), for the gate's
            # slices; null for other sources and in files written before the column existed.
            ("metadata", pa.map_(pa.string(), pa.string())),
        ]
    ),
    LABELS: pa.schema(
        [
            ("event_id", pa.string()),
            ("example_id", pa.string()),
            ("label", pa.string()),
            ("source_kind", pa.string()),
            ("source_name", pa.string()),
            ("confidence", pa.float32()),
            ("created_at", _TS),
            ("run_id", pa.string()),
            ("taxonomy_version", pa.string()),
            # Whether a model's output shaped this label (a model's prediction, or a label
            # model fed by a model-backed labeling function). Null in files written before
            # the column existed: read as `source_kind == "model"`.
            ("model_influenced", pa.bool_()),
        ]
    ),
    QUARANTINE: pa.schema(
        [
            ("quarantine_id", pa.string()),
            ("record_kind", pa.string()),  # "example" or "label"
            ("reason", pa.string()),  # a stable code, e.g. "truncated_or_corrupt"
            ("detail", pa.string()),  # what happened, for a person
            ("source", pa.string()),
            ("source_uri", pa.string()),
            ("example_id", pa.string()),
            ("label", pa.string()),
            ("data", pa.binary()),  # original bytes, null when there were none
            ("quarantined_at", _TS),
            ("run_id", pa.string()),
        ]
    ),
    ANNOTATION_REQUESTS: pa.schema(
        [
            ("request_id", pa.string()),
            ("example_id", pa.string()),
            ("stream", pa.string()),  # train | gold | review
            ("strategy", pa.string()),
            ("score", pa.float64()),  # the strategy's score (higher: more worth a label)
            ("model_version", pa.string()),  # the model that scored it
            (
                "suggestion",
                pa.string(),
            ),  # pre-annotation: the model's class, or the label under review
            ("suggestion_confidence", pa.float64()),
            ("run_id", pa.string()),
            ("batch_id", pa.string()),
            ("created_at", _TS),
        ]
    ),
    SLIS: pa.schema(
        [
            ("run_id", pa.string()),
            ("flow", pa.string()),  # retrain | monitor
            ("computed_at", _TS),
            ("metric", pa.string()),  # a name of tasks.slis.catalog.METRICS
            ("labels", pa.string()),  # JSON object of Prometheus label -> value
            ("value", pa.float64()),
            ("threshold", pa.float64()),
            ("breached", pa.bool_()),
        ]
    ),
    SNAPSHOTS: pa.schema(
        [
            ("snapshot_id", pa.string()),
            ("item_kind", pa.string()),  # "example" or "label_event"
            ("item_id", pa.string()),
            ("purpose", pa.string()),
            ("created_at", _TS),
            ("run_id", pa.string()),
        ]
    ),
}
_PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


def _temp_prefix() -> str:
    return f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"


# `<host>-<pid>-<file name>` after TMP_PREFIX; the last `-<digits>-` ends the writer, as
# a host name may hold both and file names (`part-...`, `flow=<flow>.parquet`) do not (a
# flow name that did would make its writer look foreign: then only age removes it)
_TEMP_WRITER = re.compile(r"(?P<host>.+)-(?P<pid>\d+)-")


def _writer_alive(temp_name: str) -> bool:
    """Whether the process that is writing `temp_name` may still be running."""
    writer = _TEMP_WRITER.match(temp_name[len(TMP_PREFIX) :])
    if writer is None:  # no writer recorded
        return False
    host, pid = writer["host"], int(writer["pid"])
    if host != socket.gethostname():
        return True  # another machine's writer: only age can tell
    return pid == os.getpid() or pid_alive(pid)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreError(RuntimeError):
    """The store cannot be opened, read or written; the message names the path."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def content_id(data: bytes) -> str:
    """The example id: SHA-256 of the encoded bytes, so identical inputs dedupe."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoreCounts:
    examples: int
    label_events: int
    quarantined: int
    snapshots: int


def _sorted_unique(ids: Ids) -> pa.StringArray:
    """Distinct ids in code-point order (Arrow compares UTF-8 bytes: the same order)."""
    if isinstance(ids, pa.ChunkedArray):
        arr = ids.combine_chunks()
    elif isinstance(ids, pa.Array):
        arr = ids
    else:
        arr = pa.array(list(ids), pa.string())
    unique = pc.unique(arr.cast(pa.string()))
    return unique.take(pc.sort_indices(unique))


class Store:
    """Handle on a store root. Cheap to create; holds no data in memory."""

    def __init__(self, root: str | Path):
        self.uri = str(root)
        if "://" in self.uri:
            try:
                self.fs, self.base = pafs.FileSystem.from_uri(self.uri)
            except (pa.ArrowInvalid, OSError) as exc:
                # the URI may carry credentials (s3://KEY:SECRET@...), and so may the
                # message pyarrow quotes it in
                raise StoreError(redact_text(f"cannot open store {self.uri!r}: {exc}")) from exc
        else:
            self.fs = pafs.LocalFileSystem()
            self.base = str(Path(self.uri).expanduser().resolve())
        self.base = self.base.rstrip("/")
        self.is_local = self.fs.type_name == "local"

    def __repr__(self) -> str:
        return redact_text(f"Store({self.uri!r})")  # logged: without credentials

    def path(self, dataset: str) -> str:
        return f"{self.base}/{dataset}"

    # -- writing -------------------------------------------------------------------

    def write(self, dataset: str, table: pa.Table, *, when: datetime | None = None) -> str | None:
        """Write `table` as one new file of `dataset`, atomically. Returns its path."""
        if table.num_rows == 0:
            return None
        schema = SCHEMAS[dataset]
        for f in schema:  # a column added to the schema later: null for older writers
            if f.name not in table.column_names and f.nullable:
                table = table.append_column(f, pa.nulls(table.num_rows, f.type))
        table = table.select(schema.names).cast(schema)
        when = when or utcnow()
        folder = f"{self.path(dataset)}/date={when:%Y-%m-%d}"
        name = f"part-{when:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"
        return self.write_file(f"{folder}/{name}", table)

    def write_file(self, path: str, table: pa.Table) -> str:
        """Write `table` as the Parquet file `path` under this store, atomically: locally a
        temp name, fsync, then rename; on object stores one PUT (readers never see a part)."""
        if self.is_local:
            folder, name = path.rsplit("/", 1)
            self.fs.create_dir(folder, recursive=True)
            tmp = f"{folder}/{_temp_prefix()}{name}"
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())  # the bytes are on disk before the name appears
            os.replace(tmp, path)  # atomic rename on POSIX
            _fsync_dir(folder)
        else:
            pq.write_table(table, path, filesystem=self.fs, compression="zstd")
        return path

    def remove_stale_temp_files(self, max_age_s: float = 3600.0) -> int:
        """Delete temporary files left by writers that died. A temp file is stale when its
        writer (host and pid are in its name) is no longer running, or when it is older
        than `max_age_s`; live writers' files are left alone. Returns how many."""
        if not self.is_local:
            return 0
        removed = 0
        now = time.time()
        for dataset in (*DATASETS, ANNOTATION_REQUESTS, SLIS, SLIS_LATEST, "label_matrices"):
            for info in self._list(dataset):
                if not info.base_name.startswith(TMP_PREFIX):
                    continue
                age_s = now - info.mtime.timestamp() if info.mtime else max_age_s
                if _writer_alive(info.base_name) and age_s < max_age_s:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(info.path)
                    removed += 1
        if removed:
            log.warning("removed %d partial file(s) left by an interrupted write", removed)
        return removed

    # -- reading -------------------------------------------------------------------

    def _list(self, dataset: str) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(self.path(dataset), recursive=True, allow_not_found=True)
        try:
            return [i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]
        except OSError as exc:
            raise StoreError(f"cannot list {self.path(dataset)!r}: {exc}") from exc

    def files(self, dataset: str) -> list[str]:
        """Visible (complete) data files of `dataset`, sorted by name (= write time)."""
        infos = self._list(dataset)
        return sorted(i.path for i in infos if not i.base_name.startswith((".", "_")))

    def dataset(self, dataset: str) -> ds.Dataset:
        files = self.files(dataset)
        return ds.dataset(
            files,
            schema=SCHEMAS[dataset].append(pa.field("date", pa.string())),
            format="parquet",
            filesystem=self.fs,
            partitioning=_PARTITIONING,
            partition_base_dir=self.path(dataset),
        )

    def iter_batches(
        self,
        dataset: str,
        columns: list[str] | None = None,
        *,
        filter: ds.Expression | None = None,  # noqa: A002 - pyarrow's own name
        batch_size: int = 8192,
        lean: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Stream record batches; never materializes the whole dataset.

        `lean` is for large columns (images): one file is scanned at a time, one batch
        ahead. A scanner over the whole dataset reads ahead of a slow reader without
        bound, whatever its read-ahead settings: with a filter and a consumer that
        decodes and predicts, it had queued about half of a 1M-image store's matching
        rows (450 MB of Arrow memory, growing with the store) before the reader caught
        up (bench/RESULTS.md, *Scale*). File by file, what is held is bounded by one file.
        """
        data = self.dataset(dataset)
        if lean:
            batches = (
                batch
                for fragment in data.get_fragments(filter=filter)
                for batch in fragment.to_batches(
                    schema=data.schema,
                    columns=columns,
                    filter=filter,
                    batch_size=batch_size,
                    batch_readahead=1,
                    fragment_readahead=1,
                    use_threads=True,
                )
            )
        else:
            batches = data.scanner(
                columns=columns, filter=filter, batch_size=batch_size, use_threads=True
            ).to_batches()
        yield from (b for b in batches if b.num_rows)

    def read(
        self,
        dataset: str,
        columns: list[str] | None = None,
        *,
        filter: ds.Expression | None = None,  # noqa: A002
    ) -> pa.Table:
        """Read a (usually filtered or projected) table. Prefer `iter_batches` for images."""
        return self.dataset(dataset).to_table(columns=columns, filter=filter)

    def ids_in_files(self, dataset: str, column: str, files: Iterable[str]) -> set[str]:
        """The values of one string column in the given files of `dataset` (used to catch
        up with what other writers added since this process last looked)."""
        out: set[str] = set()
        files = list(files)
        if files:
            data = ds.dataset(files, format="parquet", filesystem=self.fs)
            for batch in data.to_batches(columns=[column], batch_size=65536):
                out.update(batch.column(0).to_pylist())
        return out

    def count(self, dataset: str) -> int:
        return self.dataset(dataset).count_rows()

    def counts(self) -> StoreCounts:
        return StoreCounts(*(self.count(d) for d in DATASETS))

    def column_set(self, dataset: str, column: str) -> set[str]:
        """All values of one string column, streamed (for dedup keys)."""
        out: set[str] = set()
        for batch in self.iter_batches(dataset, [column], batch_size=65536):
            out.update(batch.column(0).to_pylist())
        return out

    # -- locks ---------------------------------------------------------------------

    def lock(
        self, name: str, *, timeout_s: float = 600.0, note: dict[str, str] | None = None
    ) -> StoreLock:
        """An exclusive lease named `name` over this store, shared by every process and
        machine that opens the same root (local disk or object store); see
        `tasks.store.locks`. `note` says who holds it, for those who wait. Use as a
        context manager."""
        return StoreLock(self.fs, f"{self.base}/_locks/{name}", timeout_s=timeout_s, note=note)

    def commit_lock(self, timeout_s: float = 600.0) -> StoreLock:
        """The lease every deduplicating writer (ingest, label-model events) commits under:
        catch up with other writers' new files, dedupe, write, release."""
        return self.lock("commit", timeout_s=timeout_s)

    # -- snapshots -----------------------------------------------------------------

    def write_snapshot(
        self,
        example_ids: Ids,
        label_event_ids: Ids,
        *,
        purpose: str,
        run_id: str,
    ) -> str:
        """Record exactly which examples and label events a run read; returns the id.

        The id is a hash of the sorted contents, so the same data gives the same id. Ids
        may come as Arrow arrays and stay columnar here: a million-example snapshot costs
        bytes per id, not Python objects.
        """
        ex = _sorted_unique(example_ids)
        ev = _sorted_unique(label_event_ids)
        h = hashlib.sha256()
        for kind, ids in (("example", ex), ("label_event", ev)):
            for start in range(0, len(ids), 65536):
                piece = ids.slice(start, 65536).to_pylist()
                h.update("".join(f"{kind}:{i}\n" for i in piece).encode())
        snapshot_id = h.hexdigest()[:16]
        if self.count_snapshot(snapshot_id):
            return snapshot_id
        n = len(ex) + len(ev)
        now = utcnow()
        table = pa.table(
            {
                "snapshot_id": pa.array([snapshot_id] * n, pa.string()),
                "item_kind": pa.array(
                    ["example"] * len(ex) + ["label_event"] * len(ev), pa.string()
                ),
                "item_id": pa.concat_arrays([ex, ev]),
                "purpose": pa.array([purpose] * n, pa.string()),
                "created_at": pa.array([now] * n, _TS),
                "run_id": pa.array([run_id] * n, pa.string()),
            }
        )
        self.write(SNAPSHOTS, table, when=now)
        return snapshot_id

    def count_snapshot(self, snapshot_id: str) -> int:
        return self.dataset(SNAPSHOTS).count_rows(filter=pc.field("snapshot_id") == snapshot_id)
