"""Labeling functions: the API for writing them and the built-in families.

A labeling function takes an `LFBatch` (images as a uint8 array plus metadata) and
returns one class index per row, or ABSTAIN (-1). Write your own with the decorator::

    from tasks.weak_labeling import ABSTAIN, labeling_function

    @labeling_function(name="dark_is_one")
    def dark_is_one(batch):
        ink = batch.images.reshape(len(batch), -1).mean(1)
        return np.where(ink < 20, 1, ABSTAIN)

and list it in config as `{name: dark_is_one, kind: python, target: mypkg.lfs:dark_is_one}`.
A function whose votes come from a model says so (`labeling_function(model_backed=True)`,
or `model_backed: true` in its config): the labels built on its votes then count against
`labels.max_model_share`, as a model's own predictions do.
Built-in families need no code: `knn` and `prototype` (similarity to human-labeled,
non-gold examples in raw pixels, PCA, or the champion's penultimate layer), `model` (a
registered MLflow model, confident predictions only) and `external` (labels another
system produced, from CSV/Parquet).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.data import DataSpec
from configs.weak_labeling import LabelingFunctionConfig
from tasks.images.decode import decode_images
from tasks.store import EXAMPLES, Store, gold_mask
from tasks.store import human_labels as store_human_labels
from tasks.weak_labeling.inputs import WeakLabelInputs
from tasks.weak_labeling.label_model import ABSTAIN

log = logging.getLogger(__name__)

LF_COLUMNS = ["example_id", "image", "source", "source_uri"]  # what a function may read


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
    model_backed: bool = False  # its votes use a model's output (e.g. champion embeddings)

    @property
    def model_influenced(self) -> bool:
        """Whether a model shaped its votes: labels built on them count against
        `labels.max_model_share`, as a model's own predictions do."""
        return self.model_backed or self.source_kind == "model"

    def __call__(self, batch: LFBatch) -> np.ndarray:
        votes = np.asarray(self.fn(batch))
        if votes.shape != (len(batch),):
            raise LabelingFunctionError(
                f"labeling function {self.name!r} returned shape {votes.shape} for a batch of "
                f"{len(batch)} rows; it must return one class index (or -1) per row"
            )
        return votes.astype(np.int16, copy=False)


def labeling_function(
    name: str | None = None,
    *,
    source_kind: str = "rule",
    accuracy_floor: float | None = None,
    model_backed: bool = False,
) -> Callable[[Callable[[LFBatch], np.ndarray]], LabelingFunction]:
    """Decorator: turn `fn(batch) -> votes` into a `LabelingFunction`. `model_backed`:
    its votes come from a model (see `LabelingFunction.model_influenced`)."""

    def wrap(fn: Callable[[LFBatch], np.ndarray]) -> LabelingFunction:
        return LabelingFunction(name or fn.__name__, fn, source_kind, accuracy_floor, model_backed)

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
        self.uses_model = kind == "champion" and model is not None
        self.mean = self.components = None
        if kind == "pca":
            x = _flat(reference.images)
            self.mean = x.mean(0)
            # SVD of the centred reference: the top `dims` directions.
            _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
            self.components = vt[: min(dims, vt.shape[0])].T  # (D, dims)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.kind == "champion" and self.model is not None:
            import torch  # only a champion embedder needs torch in an applier worker

            from models import inference_input

            with torch.no_grad():
                z = self.model.features(inference_input(torch.from_numpy(images))).numpy()
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

    return LabelingFunction(
        spec.name, vote, "rule", spec.accuracy_floor, embed.uses_model or spec.model_backed
    )


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

    return LabelingFunction(
        spec.name, vote, "rule", spec.accuracy_floor, embed.uses_model or spec.model_backed
    )


def model_function(
    spec: LabelingFunctionConfig, tracking_uri: str, trust_pickle: bool = False
) -> LabelingFunction:
    import mlflow
    import torch

    from tasks.registry.model_format import ModelFormatError, load_classifier

    if not spec.model_uri:
        raise LabelingFunctionError(
            f"labeling function {spec.name!r}: kind 'model' needs "
            "model_uri, e.g. models:/semilabel-classifier@champion"
        )
    try:
        model = load_classifier(spec.model_uri, tracking_uri, trust_pickle=trust_pickle)
    except (mlflow.exceptions.MlflowException, ModelFormatError) as exc:
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

    return LabelingFunction(spec.name, vote, "external", spec.accuracy_floor, spec.model_backed)


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
        # config wins over code, an explicit 0.0 too (never quarantine); and config can
        # say a model is behind it, never that a function declared so is not
        return LabelingFunction(
            spec.name,
            obj.fn,
            obj.source_kind,
            obj.accuracy_floor if spec.accuracy_floor is None else spec.accuracy_floor,
            obj.model_backed or spec.model_backed,
        )
    return LabelingFunction(spec.name, obj, "rule", spec.accuracy_floor, spec.model_backed)


# -- reading the store in batches -------------------------------------------------------


def lf_batches(
    record_batches: Iterable[pa.RecordBatch], size: int, channels: int
) -> Iterator[LFBatch]:
    """Arrow batches of examples (example_id, image, source, source_uri) -> LFBatches of
    decoded uint8 images."""
    for rb in record_batches:
        yield LFBatch(
            rb.column(0).to_pylist(),
            decode_images(rb.column(1).to_pylist(), size, channels),
            {"source": rb.column(2).to_pylist(), "source_uri": rb.column(3).to_pylist()},
        )


def human_labels(store: Store, classes: list[str]) -> dict[str, int]:
    """example_id -> class index of its latest human label (taxonomy classes only)."""
    index = {c: i for i, c in enumerate(classes)}
    return {e: index[lab] for e, (lab, _) in store_human_labels(store, classes).items()}


def load_reference(store: Store, data: DataSpec, batch_rows: int) -> Reference:
    """Human-labeled examples outside gold (gold stays evaluation-only), read
    `batch_rows` at a time."""
    human = human_labels(store, list(data.classes))
    ids = [
        e
        for e, g in zip(
            human, gold_mask(list(human), data.gold.fraction, data.gold.salt), strict=True
        )
        if not g
    ]
    images, labels = [], []
    # Only the labeled rows are read and decoded, however large the pool is.
    rbs = store.iter_batches(
        EXAMPLES,
        LF_COLUMNS,
        filter=pc.field("example_id").isin(ids),
        batch_size=batch_rows,
    )
    for batch in lf_batches(rbs, data.image_size, data.channels):
        images.extend(batch.images)
        labels.extend(human[e] for e in batch.example_ids)
    if not images:
        raise LabelingFunctionError(
            "no human labels outside the gold holdout: knn and "
            "prototype functions have nothing to compare against"
        )
    return Reference(np.stack(images), np.array(labels))


def build_functions(
    store: Store, inputs: WeakLabelInputs, champion: Any = None
) -> list[LabelingFunction]:
    """The configured labeling functions (`weak_labeling.functions`), ready to apply.
    `champion`: the champion model, for `champion` embeddings (PCA without one)."""
    specs = inputs.weak_labeling.functions
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LabelingFunctionError(f"weak_labeling.functions: duplicate names {dupes}")
    classes = {c: i for i, c in enumerate(inputs.data.classes)}
    mlflow = inputs.mlflow
    reference = None
    out = []
    for spec in specs:
        if spec.kind in ("knn", "prototype"):
            reference = reference or load_reference(
                store, inputs.data, inputs.weak_labeling.batch_rows
            )
            kind = spec.embedding if (spec.embedding != "champion" or champion) else "pca"
            embed = Embedder(kind, reference, spec.dims, champion)
            make = knn_function if spec.kind == "knn" else prototype_function
            out.append(make(spec, reference, embed, len(classes)))
        elif spec.kind == "model":
            out.append(model_function(spec, mlflow.tracking_uri, mlflow.trust_pickled_models))
        elif spec.kind == "external":
            out.append(external_function(spec, classes))
        else:
            out.append(python_function(spec))
    return out
