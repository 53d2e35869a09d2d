"""Weak labeling: labeling functions vote (or abstain) over batches, a label model
weighs them by their estimated reliability, and the result is written as `label_model`
events with provenance.

A labeling function takes an `LFBatch` (images as a uint8 array plus metadata) and
returns one class index per row, or ABSTAIN (-1). Write your own with the decorator::

    from tasks.weak_labeling import ABSTAIN, labeling_function

    @labeling_function(name="dark_is_one")
    def dark_is_one(batch):
        ink = batch.images.reshape(len(batch), -1).mean(1)
        return np.where(ink < 20, 1, ABSTAIN)

and list it in config as `{name: dark_is_one, kind: python, target: mypkg.lfs:dark_is_one}`.
Built-in families need no code: `knn` and `prototype` (similarity to human-labeled,
non-gold examples in raw pixels, PCA, or the champion's penultimate layer), `model` (a
registered MLflow model, confident predictions only) and `external` (labels another
system produced, from CSV/Parquet).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.schema import Config, LabelingFunctionConfig, WeakLabelingConfig
from tasks.label_model import ABSTAIN, DawidSkene, lf_summary, majority_vote
from tasks.progress import stage_progress
from tasks.store import EXAMPLES, LABELS, SCHEMAS, Store, gold_mask, resolve_labels, utcnow

log = logging.getLogger(__name__)

LF_COLUMNS = ["example_id", "image", "source", "source_uri"]  # what a function may read
MATRIX_FOLDER = "label_matrices"  # beside the datasets: label_matrices/run=<id>/part-*.parquet


class LabelingFunctionError(ValueError):
    """A labeling function is misconfigured or returned something unusable."""


@dataclass(frozen=True)
class LFBatch:
    example_ids: list[str]
    images: np.ndarray  # (B, C, H, W) uint8
    columns: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.example_ids)


@dataclass(frozen=True)
class LabelingFunction:
    name: str
    fn: Callable[[LFBatch], np.ndarray]
    source_kind: str = "rule"  # provenance of its votes: rule | model | external
    accuracy_floor: float | None = None

    def __call__(self, batch: LFBatch) -> np.ndarray:
        votes = np.asarray(self.fn(batch))
        if votes.shape != (len(batch),):
            raise LabelingFunctionError(
                f"labeling function {self.name!r} returned shape {votes.shape} for a batch of "
                f"{len(batch)} rows; it must return one class index (or -1) per row"
            )
        return votes.astype(np.int16, copy=False)


def labeling_function(
    name: str | None = None, *, source_kind: str = "rule", accuracy_floor: float | None = None
) -> Callable[[Callable[[LFBatch], np.ndarray]], LabelingFunction]:
    """Decorator: turn `fn(batch) -> votes` into a `LabelingFunction`."""

    def wrap(fn: Callable[[LFBatch], np.ndarray]) -> LabelingFunction:
        return LabelingFunction(name or fn.__name__, fn, source_kind, accuracy_floor)

    return wrap


# -- embeddings and reference data -------------------------------------------------------


@dataclass
class Reference:
    """Human-labeled, non-gold examples: what similarity functions compare against."""

    images: np.ndarray  # (R, C, H, W) uint8
    labels: np.ndarray  # (R,) class indices


def _flat(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x


class Embedder:
    """pixels -> vectors: raw (L2-normalized) pixels, PCA fitted on the reference, or the
    champion model's penultimate layer."""

    def __init__(self, kind: str, reference: Reference, dims: int, model: Any = None):
        self.kind = kind
        self.model = model
        self.mean = self.components = None
        if kind == "pca":
            x = _flat(reference.images)
            self.mean = x.mean(0)
            # SVD of the centred reference: the top `dims` directions.
            _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
            self.components = vt[: min(dims, vt.shape[0])].T  # (D, dims)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.kind == "champion" and self.model is not None:
            import torch

            with torch.no_grad():
                z = self.model.features(torch.from_numpy(images).float() / 255.0).numpy()
        else:
            z = _flat(images)
            if self.kind == "pca":
                z = (z - self.mean) @ self.components
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)


def knn_function(
    spec: LabelingFunctionConfig, reference: Reference, embed: Embedder, k_classes: int
) -> LabelingFunction:
    ref = embed(reference.images)  # (R, D)
    k = min(spec.k, len(ref))

    def vote(batch: LFBatch) -> np.ndarray:
        sim = embed(batch.images) @ ref.T  # (B, R) cosine similarity
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (B, k)
        votes = reference.labels[nn]  # (B, k)
        counts = np.zeros((len(batch), k_classes), np.int32)
        np.add.at(counts, (np.repeat(np.arange(len(batch)), k), votes.ravel()), 1)
        best = counts.argmax(1)
        agree = counts.max(1) / k
        return np.where(agree >= spec.min_agreement, best, ABSTAIN)

    return LabelingFunction(spec.name, vote, "rule", spec.accuracy_floor)


def prototype_function(
    spec: LabelingFunctionConfig, reference: Reference, embed: Embedder, k_classes: int
) -> LabelingFunction:
    z = embed(reference.images)
    present = np.unique(reference.labels)
    protos = np.stack([z[reference.labels == c].mean(0) for c in present])  # (P, D)
    protos_sq = (protos**2).sum(1)

    def vote(batch: LFBatch) -> np.ndarray:
        e = embed(batch.images)
        # |e - p| from one matrix product: no (B, P, D) temporary.
        sq = (e**2).sum(1)[:, None] + protos_sq[None] - 2.0 * (e @ protos.T)
        d = np.sqrt(np.maximum(sq, 0.0))  # (B, P)
        order = np.argsort(d, axis=1)
        d1 = d[np.arange(len(d)), order[:, 0]]
        d2 = d[np.arange(len(d)), order[:, 1]] if len(present) > 1 else d1 * 2
        margin = (d2 - d1) / np.maximum(d1, 1e-8)
        return np.where(margin >= spec.min_margin, present[order[:, 0]], ABSTAIN)

    return LabelingFunction(spec.name, vote, "rule", spec.accuracy_floor)


def model_function(spec: LabelingFunctionConfig, tracking_uri: str) -> LabelingFunction:
    import mlflow
    import torch

    if not spec.model_uri:
        raise LabelingFunctionError(
            f"labeling function {spec.name!r}: kind 'model' needs "
            "model_uri, e.g. models:/semilabel-classifier@champion"
        )
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pytorch.load_model(spec.model_uri, map_location="cpu").eval()
    except mlflow.exceptions.MlflowException as exc:
        raise LabelingFunctionError(
            f"labeling function {spec.name!r}: cannot load "
            f"{spec.model_uri!r} from {tracking_uri}: {exc}"
        ) from exc

    def vote(batch: LFBatch) -> np.ndarray:
        with torch.no_grad():
            p = torch.softmax(model(torch.from_numpy(batch.images).float() / 255.0), 1).numpy()
        return np.where(p.max(1) >= spec.min_confidence, p.argmax(1), ABSTAIN)

    return LabelingFunction(spec.name, vote, "model", spec.accuracy_floor)


def external_function(spec: LabelingFunctionConfig, classes: dict[str, int]) -> LabelingFunction:
    if not spec.path:
        raise LabelingFunctionError(
            f"labeling function {spec.name!r}: kind 'external' needs "
            "path (a CSV or Parquet file with example_id,label)"
        )
    if spec.path.endswith((".parquet", ".pq")):
        table = pq.read_table(spec.path, columns=["example_id", "label"])
    else:
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(
            spec.path,
            convert_options=pacsv.ConvertOptions(
                column_types={"example_id": pa.string(), "label": pa.string()}
            ),
        )
    unknown = 0
    lookup: dict[str, int] = {}
    for ex, lab in zip(
        table.column("example_id").to_pylist(), table.column("label").to_pylist(), strict=True
    ):
        if lab in classes:
            lookup[ex] = classes[lab]
        elif lab not in (None, ""):
            unknown += 1
    if unknown:
        log.warning(
            "labeling function %s: %d labels in %s are not in the taxonomy; they "
            "count as abstentions",
            spec.name,
            unknown,
            spec.path,
        )

    def vote(batch: LFBatch) -> np.ndarray:
        return np.fromiter(
            (lookup.get(e, ABSTAIN) for e in batch.example_ids), np.int16, count=len(batch)
        )

    return LabelingFunction(spec.name, vote, "external", spec.accuracy_floor)


def python_function(spec: LabelingFunctionConfig) -> LabelingFunction:
    if not spec.target or ":" not in spec.target:
        raise LabelingFunctionError(
            f"labeling function {spec.name!r}: kind 'python' needs "
            "target as package.module:function"
        )
    module, _, attr = spec.target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise LabelingFunctionError(
            f"labeling function {spec.name!r}: cannot import {spec.target!r}: {exc}"
        ) from exc
    if isinstance(obj, LabelingFunction):
        return LabelingFunction(
            spec.name, obj.fn, obj.source_kind, spec.accuracy_floor or obj.accuracy_floor
        )
    return LabelingFunction(spec.name, obj, "rule", spec.accuracy_floor)


# -- reading the store in batches -------------------------------------------------------


def _lf_batches(
    record_batches: Iterable[pa.RecordBatch], size: int, channels: int
) -> Iterator[LFBatch]:
    """Arrow batches of examples (example_id, image, source, source_uri) -> LFBatches of
    decoded uint8 images."""
    from tasks.training import decode_images

    for rb in record_batches:
        yield LFBatch(
            rb.column(0).to_pylist(),
            decode_images(rb.column(1).to_pylist(), size, channels),
            {"source": rb.column(2).to_pylist(), "source_uri": rb.column(3).to_pylist()},
        )


def iter_batches(store: Store, cfg: Config) -> Iterator[LFBatch]:
    """Examples as decoded uint8 batches, streamed from the store."""
    rbs = store.iter_batches(EXAMPLES, LF_COLUMNS, batch_size=cfg.weak_labeling.batch_rows)
    yield from _lf_batches(rbs, cfg.train.image_size, cfg.train.channels)


def load_reference(store: Store, cfg: Config) -> Reference:
    """Human-labeled examples outside gold (gold stays evaluation-only)."""
    classes = {c: i for i, c in enumerate(cfg.taxonomy.classes)}
    resolved = resolve_labels(store, confidence_floor=1.1, max_model_share=0.0)
    human = {
        e: classes[lab]
        for e, lab, kind in zip(
            resolved.column("example_id").to_pylist(),
            resolved.column("label").to_pylist(),
            resolved.column("source_kind").to_pylist(),
            strict=True,
        )
        if kind == "human" and lab in classes
    }
    ids = [
        e
        for e, g in zip(
            human, gold_mask(list(human), cfg.gold.fraction, cfg.gold.salt), strict=True
        )
        if not g
    ]
    images, labels = [], []
    # Only the labeled rows are read and decoded, however large the pool is.
    rbs = store.iter_batches(
        EXAMPLES,
        LF_COLUMNS,
        filter=pc.field("example_id").isin(ids),
        batch_size=cfg.weak_labeling.batch_rows,
    )
    for batch in _lf_batches(rbs, cfg.train.image_size, cfg.train.channels):
        images.extend(batch.images)
        labels.extend(human[e] for e in batch.example_ids)
    if not images:
        raise LabelingFunctionError(
            "no human labels outside the gold holdout: knn and "
            "prototype functions have nothing to compare against"
        )
    return Reference(np.stack(images), np.array(labels))


def build_functions(store: Store, cfg: Config, champion: Any = None) -> list[LabelingFunction]:
    """The configured labeling functions, ready to apply."""
    specs = cfg.weak_labeling.functions
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LabelingFunctionError(f"weak_labeling.functions: duplicate names {dupes}")
    classes = {c: i for i, c in enumerate(cfg.taxonomy.classes)}
    reference = None
    out = []
    for spec in specs:
        if spec.kind in ("knn", "prototype"):
            reference = reference or load_reference(store, cfg)
            kind = spec.embedding if (spec.embedding != "champion" or champion) else "pca"
            embed = Embedder(kind, reference, spec.dims, champion)
            make = knn_function if spec.kind == "knn" else prototype_function
            out.append(make(spec, reference, embed, len(classes)))
        elif spec.kind == "model":
            out.append(model_function(spec, cfg.mlflow.tracking_uri))
        elif spec.kind == "external":
            out.append(external_function(spec, classes))
        else:
            out.append(python_function(spec))
    return out


# -- applying, analysing, combining ---------------------------------------------------------


@dataclass
class LabelMatrix:
    example_ids: list[str]
    names: list[str]
    votes: np.ndarray  # (N, M) int16, ABSTAIN = -1
    elapsed_s: float = 0.0
    path: str = ""  # where the run's label matrix is stored (a folder of Parquet parts)


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


def apply_to_shard(
    store_root: str,
    shard: Shard,
    functions: list[LabelingFunction],
    k_classes: int,
    image_size: int,
    channels: int,
    batch_rows: int,
    out_folder: str,
) -> ShardResult:
    """Stream one shard's row groups in Arrow batches, decode, apply every function
    (vectorized per batch) and write the shard's label matrix part, atomically."""
    start = time.perf_counter()
    store = Store(store_root)

    def record_batches() -> Iterator[pa.RecordBatch]:
        for path, groups in shard.parts:
            with store.fs.open_input_file(path) as fh:
                yield from pq.ParquetFile(fh).iter_batches(
                    batch_size=batch_rows, row_groups=list(groups), columns=LF_COLUMNS
                )

    matrix = apply_functions(
        _lf_batches(record_batches(), image_size, channels), functions, k_classes
    )
    path = f"{out_folder}/part-{shard.index:05d}.parquet"
    store.write_file(path, _matrix_table(matrix))
    return ShardResult(shard.index, len(matrix.example_ids), path, time.perf_counter() - start)


@task(
    name="apply-labeling-functions",
    task_run_name="apply-labeling-functions-shard-{shard.index}",
    cache_policy=NO_CACHE,
)
def apply_lf_shard(
    store_root: str,
    shard: Shard,
    functions: list[LabelingFunction],
    k_classes: int,
    image_size: int,
    channels: int,
    batch_rows: int,
    out_folder: str,
) -> ShardResult:
    """One shard of the applier, as a Prefect task (mapped over the shards)."""
    return apply_to_shard(
        store_root, shard, functions, k_classes, image_size, channels, batch_rows, out_folder
    )


def shard_task_runner(wl: WeakLabelingConfig, n_shards: int) -> Any:
    """The Prefect task runner that `weak_labeling.runner` names, sized for the shards."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    workers = max(1, min(wl.workers or os.cpu_count() or 1, n_shards))
    if wl.runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if wl.runner == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise LabelingFunctionError(
            "weak_labeling.runner is 'dask' but prefect-dask is not installed: "
            "pip install 'semilabel[dask]' (or choose runner 'processes')"
        ) from exc
    if wl.dask_address:
        return DaskTaskRunner(address=wl.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


def apply_in_shards(
    store: Store,
    cfg: Config,
    functions: list[LabelingFunction],
    run_id: str,
    progress: Callable[[int], None] | None = None,
) -> LabelMatrix:
    """Apply the functions over the whole store, one mapped Prefect task per shard on the
    configured task runner (in this process when there is a single shard or worker).
    The parts land in `label_matrices/run=<run_id>/` and are read back in store order."""
    start = time.perf_counter()
    wl = cfg.weak_labeling
    shards = plan_shards(store, wl.shard_rows)
    folder = f"{store.base}/{MATRIX_FOLDER}/run={_path_safe(run_id)}"
    if store.is_local:
        store.fs.create_dir(folder, recursive=True)
    common = {
        "store_root": cfg.store.root,
        "functions": functions,
        "k_classes": len(cfg.taxonomy.classes),
        "image_size": cfg.train.image_size,
        "channels": cfg.train.channels,
        "batch_rows": wl.batch_rows,
        "out_folder": folder,
    }
    results: list[ShardResult] = []
    done = 0
    workers = min(wl.workers or os.cpu_count() or 1, len(shards))
    if workers <= 1:
        for shard in shards:
            results.append(apply_to_shard(shard=shard, **common))
            done += results[-1].rows
            if progress:
                progress(done)
    else:
        from prefect import unmapped
        from prefect.futures import as_completed

        log.info(
            "applying %d functions to %d rows in %d shards on %d %s workers",
            len(functions),
            sum(s.rows for s in shards),
            len(shards),
            workers,
            wl.runner,
        )
        with shard_task_runner(wl, len(shards)) as runner:
            futures = runner.map(
                apply_lf_shard,
                {"shard": shards, **{k: unmapped(v) for k, v in common.items()}},
            )
            for future in as_completed(futures):
                results.append(future.result())
                done += results[-1].rows
                if progress:
                    progress(done)
    results.sort(key=lambda r: r.index)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    names = [f.name for f in functions]
    for r in results:
        with store.fs.open_input_file(r.path) as fh:
            table = pq.read_table(fh)
        ids.extend(table.column("example_id").to_pylist())
        parts.append(
            np.stack([table.column(n).to_numpy() for n in names], 1).astype(np.int16)
            if names
            else np.zeros((table.num_rows, 0), np.int16)
        )
    votes = np.concatenate(parts) if parts else np.zeros((0, len(names)), np.int16)
    return LabelMatrix(ids, names, votes, time.perf_counter() - start, folder)


def _matrix_table(matrix: LabelMatrix) -> pa.Table:
    """example_id + one int16 column per function (-1 = abstain)."""
    return pa.table(
        {
            "example_id": pa.array(matrix.example_ids, pa.string()),
            **{n: pa.array(matrix.votes[:, j], pa.int16()) for j, n in enumerate(matrix.names)},
        }
    )


def _path_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@dataclass(frozen=True)
class FunctionReport:
    name: str
    source_kind: str
    coverage: float
    overlap: float
    conflict: float
    polarity: list[str]
    gold_accuracy: float
    gold_covered: int
    quarantined: bool
    reason: str


@dataclass(frozen=True)
class WeakLabelSummary:
    run_id: str
    n_rows: int
    functions: list[FunctionReport]
    label_model: str
    coverage: float  # share of non-gold rows given a label
    gold_accuracy: float  # label model's accuracy on gold rows it covers
    gold_accuracy_majority: float
    events_written: int
    events_already_present: int
    matrix_path: str
    elapsed_s: float

    def table(self) -> list[dict[str, object]]:
        return [
            {
                "function": f.name,
                "kind": f.source_kind,
                "coverage": round(f.coverage, 4),
                "overlap": round(f.overlap, 4),
                "conflict": round(f.conflict, 4),
                "polarity": ",".join(f.polarity),
                "gold accuracy": _r(f.gold_accuracy),
                "gold covered": f.gold_covered,
                "status": "quarantined: " + f.reason if f.quarantined else "used",
            }
            for f in self.functions
        ]

    def rows(self) -> list[dict[str, object]]:
        return [
            {"metric": "rows", "value": self.n_rows},
            {"metric": "functions used", "value": sum(not f.quarantined for f in self.functions)},
            {
                "metric": "functions quarantined",
                "value": sum(f.quarantined for f in self.functions),
            },
            {"metric": f"coverage ({self.label_model})", "value": round(self.coverage, 4)},
            {"metric": f"gold accuracy ({self.label_model})", "value": _r(self.gold_accuracy)},
            {"metric": "gold accuracy (majority vote)", "value": _r(self.gold_accuracy_majority)},
            {"metric": "label events written", "value": self.events_written},
            {"metric": "label events already present", "value": self.events_already_present},
            {"metric": "seconds", "value": round(self.elapsed_s, 1)},
        ]


def _r(x: float) -> object:
    return "n/a" if x != x else round(x, 4)


def analyse_and_combine(
    store: Store, cfg: Config, matrix: LabelMatrix, functions: list[LabelingFunction], run_id: str
) -> WeakLabelSummary:
    """LF analysis on gold, quarantine of functions below their floor, the label model,
    and `label_model` events for non-gold rows (deterministic ids: re-running on the same
    data writes nothing twice)."""
    start = time.perf_counter()
    classes = list(cfg.taxonomy.classes)
    k = len(classes)
    class_idx = {c: i for i, c in enumerate(classes)}
    wl = cfg.weak_labeling
    resolved = resolve_labels(store, confidence_floor=1.1, max_model_share=0.0)
    human = {
        e: class_idx[lab]
        for e, lab, kind in zip(
            resolved.column("example_id").to_pylist(),
            resolved.column("label").to_pylist(),
            resolved.column("source_kind").to_pylist(),
            strict=True,
        )
        if kind == "human" and lab in class_idx
    }
    is_gold = gold_mask(matrix.example_ids, cfg.gold.fraction, cfg.gold.salt)
    y_gold = np.array(
        [
            human.get(e, ABSTAIN) if g else ABSTAIN
            for e, g in zip(matrix.example_ids, is_gold, strict=True)
        ]
    )
    gold_rows = y_gold != ABSTAIN
    L = matrix.votes.astype(np.int64)
    stats = lf_summary(L, k, y_gold=y_gold, gold_mask=gold_rows)

    reports: list[FunctionReport] = []
    keep: list[int] = []
    for j, (lf, st) in enumerate(zip(functions, stats, strict=True)):
        floor = lf.accuracy_floor if lf.accuracy_floor is not None else wl.accuracy_floor
        acc, covered = float(st["gold_accuracy"]), int(st["gold_covered"])
        quarantined, reason = False, ""
        if covered >= wl.min_gold_covered and not acc >= floor:
            quarantined = True
            reason = f"gold accuracy {acc:.3f} on {covered} gold rows is below its floor {floor}"
            log.warning("labeling function %s quarantined for this run: %s", lf.name, reason)
        elif covered < wl.min_gold_covered:
            reason = f"only {covered} gold rows covered: accuracy not judged"
        if not quarantined:
            keep.append(j)
        reports.append(
            FunctionReport(
                lf.name,
                lf.source_kind,
                float(st["coverage"]),
                float(st["overlap"]),
                float(st["conflict"]),
                [classes[c] for c in st["polarity"]],
                acc,
                covered,
                quarantined,
                reason,
            )
        )

    used = L[:, keep]
    mv = majority_vote(used, k) if keep else np.full(len(L), ABSTAIN)
    if wl.label_model == "dawid_skene" and keep:
        # Gold labels align the classes (guards against a permuted solution).
        model = DawidSkene().fit(used, k, y_gold=y_gold)
        proba = model.predict_proba(used)
        pred = model.predict(used)
    else:
        pred = mv
        proba = np.zeros((len(L), k))
        covered_rows = (used != ABSTAIN).sum(1) if keep else np.zeros(len(L))
        for c in range(k):
            proba[:, c] = ((used == c).sum(1) / np.maximum(covered_rows, 1)) if keep else 0
    conf = proba.max(1) if len(proba) else np.zeros(0)

    def gold_acc(p: np.ndarray) -> float:
        sel = gold_rows & (p != ABSTAIN)
        return float((p[sel] == y_gold[sel]).mean()) if sel.any() else math.nan

    lf_key = hashlib.sha256(
        repr([(f.name, f.source_kind) for i, f in enumerate(functions) if i in keep]).encode()
    ).hexdigest()[:8]
    source_name = f"{wl.label_model}:{lf_key}"
    from tasks.ingest import label_event_id

    known = store.column_set(LABELS, "event_id")
    write = (~is_gold) & (pred != ABSTAIN)
    now = utcnow()
    rows: dict[str, list] = {n: [] for n in SCHEMAS[LABELS].names}
    present = 0
    for i in np.flatnonzero(write):
        ex, label = matrix.example_ids[i], classes[int(pred[i])]
        event_id = label_event_id(ex, label, "label_model", source_name)
        if event_id in known:
            present += 1
            continue
        known.add(event_id)
        for key, v in (
            ("event_id", event_id),
            ("example_id", ex),
            ("label", label),
            ("source_kind", "label_model"),
            ("source_name", source_name),
            ("confidence", float(conf[i])),
            ("created_at", now),
            ("run_id", run_id),
            ("taxonomy_version", cfg.taxonomy.version),
        ):
            rows[key].append(v)
    store.write(LABELS, pa.table(rows, schema=SCHEMAS[LABELS]), when=now)
    non_gold = ~is_gold
    return WeakLabelSummary(
        run_id=run_id,
        n_rows=len(L),
        functions=reports,
        label_model=wl.label_model,
        coverage=float((pred[non_gold] != ABSTAIN).mean()) if non_gold.any() else 0.0,
        gold_accuracy=gold_acc(pred),
        gold_accuracy_majority=gold_acc(mv),
        events_written=len(rows["event_id"]),
        events_already_present=present,
        matrix_path="",
        elapsed_s=time.perf_counter() - start,
    )


def weak_label_store(cfg: Config, run_id: str, progress: Any | None = None) -> WeakLabelSummary:
    """Build the configured functions, apply them over the store, analyse them on gold,
    combine their votes, write `label_model` events, and log the analysis to MLflow."""
    import dataclasses

    import mlflow

    store = Store(cfg.store.root)
    if not cfg.weak_labeling.functions:
        raise LabelingFunctionError(
            "weak_labeling.functions is empty: configure at least one "
            "labeling function (see README, Weak labeling)"
        )
    champion = _champion_or_none(cfg)
    functions = build_functions(store, cfg, champion)
    matrix = apply_in_shards(
        store,
        cfg,
        functions,
        run_id,
        progress=progress.update if progress is not None else None,
    )
    summary = analyse_and_combine(store, cfg, matrix, functions, run_id)
    summary = dataclasses.replace(
        summary, matrix_path=matrix.path, elapsed_s=summary.elapsed_s + matrix.elapsed_s
    )
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    with mlflow.start_run(
        run_name=f"weak-label-{run_id[:8]}", tags={"semilabel.stage": "weak_label"}
    ):
        for f in summary.functions:
            metrics = {
                "coverage": f.coverage,
                "overlap": f.overlap,
                "conflict": f.conflict,
                "gold_accuracy": f.gold_accuracy,
                "quarantined": float(f.quarantined),
            }
            mlflow.log_metrics({f"lf.{f.name}.{k}": v for k, v in metrics.items() if v == v})
        mlflow.log_metrics(
            {
                k: v
                for k, v in {
                    "label_model.coverage": summary.coverage,
                    "label_model.gold_accuracy": summary.gold_accuracy,
                    "majority_vote.gold_accuracy": summary.gold_accuracy_majority,
                    "label_model.events_written": summary.events_written,
                }.items()
                if v == v
            }
        )
        mlflow.log_dict({"functions": summary.table()}, "lf_analysis.json")
    return summary


def _champion_or_none(cfg: Config) -> Any:
    if not any(s.embedding == "champion" for s in cfg.weak_labeling.functions):
        return None
    from tasks.registry import CHAMPION, get_client, version_by_alias

    if (
        version_by_alias(get_client(cfg.mlflow.tracking_uri), cfg.mlflow.model_name, CHAMPION)
        is None
    ):
        log.info("no champion yet: champion embeddings fall back to PCA")
        return None
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return mlflow.pytorch.load_model(
        f"models:/{cfg.mlflow.model_name}@{CHAMPION}", map_location="cpu"
    ).eval()


# -- inside a flow ---------------------------------------------------------------------


def weak_label_examples(cfg: Config, run_id: str) -> WeakLabelSummary:
    """Inside a flow: apply the labeling functions (one mapped `apply-labeling-functions`
    task per shard on the configured task runner), fit the label model, write
    `label_model` events, and publish the LF analysis as a table artifact."""
    bar = stage_progress("weak-label", Store(cfg.store.root).count(EXAMPLES))
    summary = weak_label_store(cfg, run_id, progress=bar)
    bar.finish(summary.n_rows)
    create_table_artifact(
        table=summary.table(),
        key="lf-analysis",
        description="Labeling functions: coverage, overlap, conflict, accuracy on gold",
    )
    get_run_logger().info(
        "weak labels: %d events (%d already present), coverage %.3f, gold accuracy %s "
        "(majority vote %s)",
        summary.events_written,
        summary.events_already_present,
        summary.coverage,
        _r(summary.gold_accuracy),
        _r(summary.gold_accuracy_majority),
    )
    return summary
