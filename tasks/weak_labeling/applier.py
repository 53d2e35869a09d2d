"""The applier: every labeling function over every example of the store, vectorized per
Arrow batch and parallel over shards of the store's row groups (one mapped Prefect task
per shard, on a process, thread or Dask task runner). It writes the run's label matrix
(example x function, -1 = abstain) as Parquet parts beside the datasets."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from configs.data import DataSpec
from configs.weak_labeling import WeakLabelingConfig
from tasks.store import EXAMPLES, Store
from tasks.task_runners import cpus, worker_environment
from tasks.task_runners import shard_task_runner as task_runner
from tasks.weak_labeling.functions import (
    LF_COLUMNS,
    LabelingFunction,
    LabelingFunctionError,
    LFBatch,
    lf_batches,
)
from tasks.weak_labeling.label_model import ABSTAIN

log = logging.getLogger(__name__)

MATRIX_FOLDER = "label_matrices"  # beside the datasets: label_matrices/run=<id>/part-*.parquet


ID_CHUNK_ROWS = 1 << 16  # ids turned into Python strings at a time


class ExampleIds(Sequence[str]):
    """Example ids held as Arrow strings: the characters and a 4-byte offset per id, where
    a list of `str` costs about 60 bytes more per id (object header and pointer), which
    a million-row label matrix would otherwise keep for the whole stage. Reads as a
    sequence of `str`; `chunks` hands them out as short lists."""

    def __init__(self, ids: pa.Array | pa.ChunkedArray | Iterable[str]):
        if isinstance(ids, pa.Array):
            ids = pa.chunked_array([ids], pa.string())
        elif not isinstance(ids, pa.ChunkedArray):
            ids = pa.chunked_array([pa.array(list(ids), pa.string())], pa.string())
        self.arrow: pa.ChunkedArray = ids

    def __len__(self) -> int:
        return len(self.arrow)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.arrow[i].to_pylist()
        return self.arrow[i].as_py()

    def __iter__(self) -> Iterator[str]:
        for _, ids in self.chunks():
            yield from ids

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExampleIds):
            return self.arrow.equals(other.arrow)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-sequence semantics: unhashable

    def __repr__(self) -> str:
        return f"ExampleIds({len(self)} ids)"

    def chunks(self, rows: int = ID_CHUNK_ROWS) -> Iterator[tuple[int, list[str]]]:
        """(offset, ids) for consecutive runs of at most `rows` ids, in order."""
        for start in range(0, len(self.arrow), rows):
            yield start, self.arrow.slice(start, rows).to_pylist()

    def take(self, rows: np.ndarray) -> ExampleIds:
        """The ids at positions `rows`, in that order."""
        return ExampleIds(self.arrow.take(pa.array(rows, pa.int64())))

    def repeated(self) -> set[str]:
        """The ids that occur more than once."""
        counts = pc.value_counts(self.arrow)
        return set(counts.field("values").filter(pc.greater(counts.field("counts"), 1)).to_pylist())


@dataclass
class LabelMatrix:
    example_ids: ExampleIds  # a list of str is taken too, and stored as ExampleIds
    names: list[str]
    votes: np.ndarray  # (N, M) int16, ABSTAIN = -1
    elapsed_s: float = 0.0
    path: str = ""  # where the run's label matrix is stored (a folder of Parquet parts)

    def __post_init__(self) -> None:
        if not isinstance(self.example_ids, ExampleIds):
            self.example_ids = ExampleIds(self.example_ids)


def apply_functions(
    batches: Iterator[LFBatch],
    functions: list[LabelingFunction],
    k_classes: int,
    progress: Callable[[int], None] | None = None,
) -> LabelMatrix:
    """Apply every function to every batch (vectorized per batch)."""
    start = time.perf_counter()
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for batch in batches:
        cols = []
        for lf in functions:
            v = lf(batch)
            bad = (v < ABSTAIN) | (v >= k_classes)
            if bad.any():
                raise LabelingFunctionError(
                    f"labeling function {lf.name!r} returned {int(v[bad][0])} for example "
                    f"{batch.example_ids[int(np.flatnonzero(bad)[0])]}; valid: -1 (abstain) "
                    f"or 0..{k_classes - 1}"
                )
            cols.append(v)
        parts.append(np.stack(cols, 1) if cols else np.zeros((len(batch), 0), np.int16))
        ids.extend(batch.example_ids)
        if progress:
            progress(len(ids))
    votes = np.concatenate(parts) if parts else np.zeros((0, len(functions)), np.int16)
    return LabelMatrix(ids, [f.name for f in functions], votes, time.perf_counter() - start)


# -- applying in parallel, shard by shard -----------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Row groups of the examples dataset that one task applies the functions to."""

    index: int
    parts: tuple[tuple[str, tuple[int, ...]], ...]  # (file, its row groups), in store order
    rows: int


@dataclass(frozen=True)
class ShardResult:
    index: int
    rows: int
    path: str  # this shard's part of the label matrix
    seconds: float


def plan_shards(store: Store, shard_rows: int) -> list[Shard]:
    """The examples dataset's Parquet row groups, in file order, grouped into shards of
    about `shard_rows` rows (a row group is never split). Only footers are read."""
    shards: list[Shard] = []
    parts: list[tuple[str, list[int]]] = []
    rows = 0

    def close() -> None:
        nonlocal parts, rows
        if parts:
            shards.append(Shard(len(shards), tuple((f, tuple(g)) for f, g in parts), rows))
        parts, rows = [], 0

    for path in store.files(EXAMPLES):
        with store.fs.open_input_file(path) as fh:
            meta = pq.ParquetFile(fh).metadata
        for group in range(meta.num_row_groups):
            if parts and parts[-1][0] == path:
                parts[-1][1].append(group)
            else:
                parts.append((path, [group]))
            rows += meta.row_group(group).num_rows
            if rows >= shard_rows:
                close()
    close()
    return shards


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one application shares: the store, the functions, the image
    shape they see, how many rows a batch decodes, and where the parts go."""

    store_root: str
    functions: tuple[LabelingFunction, ...]
    k_classes: int
    image_size: int
    channels: int
    batch_rows: int
    out_folder: str


def apply_to_shard(job: ShardJob, shard: Shard) -> ShardResult:
    """Stream one shard's row groups in Arrow batches, decode, apply every function
    (vectorized per batch) and write the shard's label matrix part, atomically."""
    start = time.perf_counter()
    store = Store(job.store_root)

    def record_batches() -> Iterator[pa.RecordBatch]:
        for path, groups in shard.parts:
            with store.fs.open_input_file(path) as fh:
                yield from pq.ParquetFile(fh).iter_batches(
                    batch_size=job.batch_rows, row_groups=list(groups), columns=LF_COLUMNS
                )

    matrix = apply_functions(
        lf_batches(record_batches(), job.image_size, job.channels),
        list(job.functions),
        job.k_classes,
    )
    path = f"{job.out_folder}/part-{shard.index:05d}.parquet"
    store.write_file(path, _matrix_table(matrix))
    return ShardResult(shard.index, len(matrix.example_ids), path, time.perf_counter() - start)


@task(
    name="apply-labeling-functions",
    task_run_name="apply-labeling-functions-shard-{shard.index}",
    cache_policy=NO_CACHE,
)
def apply_lf_shard(job: ShardJob, shard: Shard) -> ShardResult:
    """One shard of the applier, as a Prefect task (mapped over the shards)."""
    return apply_to_shard(job, shard)


def shard_task_runner(wl: WeakLabelingConfig, n_shards: int) -> Any:
    """The Prefect task runner that `weak_labeling.runner` names, sized for the shards."""
    workers = max(1, min(wl.workers or cpus(), n_shards))
    return task_runner(
        wl.runner,
        workers,
        wl.dask_address,
        setting="weak_labeling.runner",
        error=LabelingFunctionError,
    )


def apply_in_shards(
    store: Store,
    data: DataSpec,
    wl: WeakLabelingConfig,
    functions: list[LabelingFunction],
    run_id: str,
    progress: Callable[[int], None] | None = None,
) -> LabelMatrix:
    """Apply the functions over the whole store, one mapped Prefect task per shard on the
    configured task runner (in this process when there is a single shard or worker).
    The parts land in `label_matrices/run=<run_id>/` and are read back in store order."""
    start = time.perf_counter()
    shards = plan_shards(store, wl.shard_rows)
    folder = _matrix_folder(store, run_id)
    job = ShardJob(
        data.root,
        tuple(functions),
        len(data.classes),
        data.image_size,
        data.channels,
        wl.batch_rows,
        folder,
    )
    workers = min(wl.workers or cpus(), len(shards))
    if workers <= 1:
        finished = (apply_to_shard(job, shard) for shard in shards)
    else:
        finished = _apply_on_runner(wl, shards, workers, job)
    results: list[ShardResult] = []
    for result in finished:  # as each shard finishes
        results.append(result)
        if progress:
            progress(sum(r.rows for r in results))
    matrix = read_matrix(store, results, [f.name for f in functions])
    return dataclasses.replace(matrix, elapsed_s=time.perf_counter() - start, path=folder)


def _matrix_folder(store: Store, run_id: str) -> str:
    """The run's label-matrix folder, emptied: a rerun under the same run id replaces the
    parts of the one before, all of them."""
    folder = f"{store.base}/{MATRIX_FOLDER}/run={_path_safe(run_id)}"
    store.fs.delete_dir_contents(folder, missing_dir_ok=True)
    if store.is_local:
        store.fs.create_dir(folder, recursive=True)
    return folder


def _apply_on_runner(
    wl: WeakLabelingConfig, shards: list[Shard], workers: int, job: ShardJob
) -> Iterator[ShardResult]:
    """One mapped `apply-labeling-functions` task per shard on `weak_labeling.runner`;
    yields the results as the tasks complete."""
    from prefect import unmapped
    from prefect.futures import as_completed

    log.info(
        "applying %d functions to %d rows in %d shards on %d %s workers",
        len(job.functions),
        sum(s.rows for s in shards),
        len(shards),
        workers,
        wl.runner,
    )
    with worker_environment(), shard_task_runner(wl, len(shards)) as runner:
        futures = runner.map(
            apply_lf_shard,
            {"shard": shards, "job": unmapped(job)},
        )
        for future in as_completed(futures):
            yield future.result()


def read_matrix(store: Store, results: list[ShardResult], names: list[str]) -> LabelMatrix:
    """The label matrix from the shards' parts, in shard (so store) order; the ids stay
    Arrow (see `ExampleIds`)."""
    ids: list[pa.Array] = []
    parts: list[np.ndarray] = []
    for r in sorted(results, key=lambda r: r.index):
        with store.fs.open_input_file(r.path) as fh:
            table = pq.read_table(fh)
        ids.extend(table.column("example_id").chunks)
        parts.append(
            np.stack([table.column(n).to_numpy() for n in names], 1).astype(np.int16)
            if names
            else np.zeros((table.num_rows, 0), np.int16)
        )
    votes = np.concatenate(parts) if parts else np.zeros((0, len(names)), np.int16)
    return LabelMatrix(ExampleIds(pa.chunked_array(ids, pa.string())), names, votes)


def _matrix_table(matrix: LabelMatrix) -> pa.Table:
    """example_id + one int16 column per function (-1 = abstain)."""
    return pa.table(
        {
            "example_id": matrix.example_ids.arrow,
            **{n: pa.array(matrix.votes[:, j], pa.int16()) for j, n in enumerate(matrix.names)},
        }
    )


def _path_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
