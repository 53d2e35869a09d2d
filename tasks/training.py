"""The training stage: read resolved labels and the unlabeled pool from the store,
train teacher then student (models/), and log everything to MLflow.

Gold examples never reach training — not as labeled and not as unlabeled inputs;
`load_training_data` checks it and refuses to go on if one slipped through.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import subprocess
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from configs.schema import Config
from models import Callback, TrainData, TrainResult, TrainSettings, fit
from tasks.progress import stage_progress
from tasks.store import EXAMPLES, Store, gold_mask, resolve_labels

log = logging.getLogger(__name__)


class DataLeakError(RuntimeError):
    """A gold (holdout) example reached the training tensors."""


class NotEnoughDataError(ValueError):
    """The store holds too little to train; the message says what to add."""


@dataclass
class TrainingSet:
    data: TrainData
    train_ids: list[str]  # labeled + unlabeled example ids used for training
    labeled_ids: list[str]
    gold_ids: list[str]  # evaluation only
    label_event_ids: list[str]
    n_human: int
    n_weak: int
    n_unlabeled: int
    class_counts: dict[str, int]


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# PNG IHDR colour type -> channels, for 8-bit non-interlaced images whose pixels need no
# conversion: decoding them natively gives exactly the bytes Pillow gives.
_PNG_PLAIN = {0: 1, 2: 3}


def _png_fast_ok(data: bytes, size: int, channels: int) -> bool:
    """An 8-bit, non-interlaced PNG already in the target channels and size, per its IHDR
    (signature, length, 'IHDR', width, height, depth, colour type, ..., interlace)."""
    return (
        len(data) > 33
        and data[:8] == _PNG_MAGIC
        and data[12:16] == b"IHDR"
        and int.from_bytes(data[16:20], "big") == size
        and int.from_bytes(data[20:24], "big") == size
        and data[24] == 8
        and _PNG_PLAIN.get(data[25]) == channels
        and data[28] == 0
    )


_NATIVE_PNG: list[Any] = []


def _native_png_decoder() -> Any:
    """torchvision's PNG decoder as `f(uint8 tensor) -> (C, H, W) tensor`, or None."""
    if not _NATIVE_PNG:
        try:
            from torchvision.io import ImageReadMode, decode_png
        except ImportError:
            _NATIVE_PNG.append(None)
        else:
            # Deprecated since torchvision 0.29 (it warns on every call); Pillow is the
            # fallback the day it is removed.
            warnings.filterwarnings(
                "ignore", "The image decoding and encoding capabilities of TorchVision"
            )
            _NATIVE_PNG.append(lambda t: decode_png(t, ImageReadMode.UNCHANGED))
    return _NATIVE_PNG[0]


def decode_images(blobs: list[bytes], size: int, channels: int) -> np.ndarray:
    """Encoded images -> uint8 (N, C, size, size), the same pixels `decode_image` gives.

    PNGs that need no conversion (8-bit, already `channels` and `size`: the common case
    for a store of one dataset) go through torchvision's native decoder, which skips
    Pillow's per-image Python work (about 1.7x faster on 28x28 PNGs); anything else, or
    anything that decoder refuses, goes through Pillow (`decode_image`). torchvision 0.29
    deprecated its image codecs in favour of TorchCodec; where they are gone, every image
    goes through Pillow."""
    decode_png = _native_png_decoder()
    out = np.empty((len(blobs), channels, size, size), np.uint8)
    for i, data in enumerate(blobs):
        if decode_png is not None and _png_fast_ok(data, size, channels):
            try:
                t = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            except RuntimeError:  # e.g. a corrupt stream: let Pillow decide
                pass
            else:
                if t.shape == (channels, size, size):
                    out[i] = t.numpy()
                    continue
        out[i] = decode_image(data, size, channels)
    return out


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Encoded bytes -> uint8 (C, size, size)."""
    img = Image.open(io.BytesIO(data))
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def load_training_data(store: Store, cfg: Config, *, seed: int | None = None) -> TrainingSet:
    """Training tensors from the store: resolved labels (human, then confident label-model
    labels, weighted by confidence), every non-gold example as unlabeled input, and the
    gold holdout's human labels as the evaluation set."""
    classes = {c: i for i, c in enumerate(cfg.taxonomy.classes)}
    resolved = resolve_labels(
        store,
        confidence_floor=cfg.labels.confidence_floor,
        max_model_share=cfg.labels.max_model_share,
    )
    label_of = dict(
        zip(
            resolved.column("example_id").to_pylist(),
            zip(
                resolved.column("label").to_pylist(),
                resolved.column("confidence").to_pylist(),
                resolved.column("source_kind").to_pylist(),
                resolved.column("event_id").to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )
    size, channels = cfg.train.image_size, cfg.train.channels
    ids: list[str] = []
    images: list[np.ndarray] = []
    for batch in store.iter_batches(EXAMPLES, ["example_id", "image"], batch_size=4096):
        ids.extend(batch.column(0).to_pylist())
        images.extend(decode_images(batch.column(1).to_pylist(), size, channels))
    if not ids:
        raise NotEnoughDataError(
            f"the store {store.uri!r} has no examples: run `semilabel ingest` first"
        )
    x = torch.from_numpy(np.stack(images))  # (N, C, H, W) uint8
    gold = gold_mask(ids, cfg.gold.fraction, cfg.gold.salt)

    lb_idx, y_lb, w_lb, events, is_human = [], [], [], [], []
    gold_idx, y_gold = [], []
    n_human = n_weak = 0
    for i, ex in enumerate(ids):
        hit = label_of.get(ex)
        if hit is None or hit[0] not in classes:
            continue
        label, conf, kind, event_id = hit
        if gold[i]:
            if kind == "human":  # only human labels are gold truth
                gold_idx.append(i)
                y_gold.append(classes[label])
            continue
        lb_idx.append(i)
        y_lb.append(classes[label])
        w_lb.append(1.0 if kind == "human" else float(conf))
        events.append(event_id)
        is_human.append(kind == "human")
        n_human += kind == "human"
        n_weak += kind != "human"
    train_idx = np.flatnonzero(~gold)
    if not lb_idx:
        raise NotEnoughDataError(
            "no labeled examples outside the gold holdout: add human "
            "labels (semilabel annotate) or weak labels (semilabel "
            "weak-label)"
        )
    y_lb_t = torch.tensor(y_lb, dtype=torch.long)
    if cfg.train.shuffle_labels:
        log.warning("train.shuffle_labels is on: training labels are shuffled (testing only)")
        g = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        y_lb_t = y_lb_t[torch.randperm(len(y_lb_t), generator=g)]
    data = TrainData(
        x_lb=x[lb_idx],
        y_lb=y_lb_t,
        w_lb=torch.tensor(w_lb, dtype=torch.float32),
        x_ulb=x[train_idx],
        x_eval=x[gold_idx] if gold_idx else None,
        y_eval=torch.tensor(y_gold, dtype=torch.long) if gold_idx else None,
        human_lb=torch.tensor(is_human, dtype=torch.bool),
    )
    training = TrainingSet(
        data=data,
        train_ids=[ids[i] for i in train_idx],
        labeled_ids=[ids[i] for i in lb_idx],
        gold_ids=[ids[i] for i in gold_idx],
        label_event_ids=events,
        n_human=n_human,
        n_weak=n_weak,
        n_unlabeled=len(train_idx) - len(lb_idx),
        class_counts=dict(Counter(cfg.taxonomy.classes[c] for c in y_lb)),
    )
    assert_no_gold_in_training(training, cfg)
    return training


def assert_no_gold_in_training(training: TrainingSet, cfg: Config) -> None:
    """Fail closed if any training example id is in the gold holdout."""
    for name, id_list in (("labeled", training.labeled_ids), ("unlabeled", training.train_ids)):
        leaked = [
            i
            for i, g in zip(
                id_list, gold_mask(id_list, cfg.gold.fraction, cfg.gold.salt), strict=True
            )
            if g
        ]
        if leaked:
            raise DataLeakError(
                f"{len(leaked)} gold example(s) in the {name} training set, "
                f"e.g. {leaked[0]}; refusing to train"
            )


def train_settings(cfg: Config) -> TrainSettings:
    return cfg.train_settings()


def run_dir_for(cfg: Config, settings: TrainSettings, training: TrainingSet) -> Path:
    """One folder per (settings, data): a restarted run finds its checkpoint there."""
    key = json.dumps(
        {"settings": repr(settings), "data": training.data.fingerprint(), "store": cfg.store.root},
        sort_keys=True,
    )
    return Path(cfg.train.run_dir) / f"train-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_tags(device: str) -> dict[str, str]:
    import mlflow
    import torchvision

    return {
        "semilabel.code_version": code_version(),
        "semilabel.device": device,
        "versions.python": platform.python_version(),
        "versions.torch": torch.__version__,
        "versions.torchvision": torchvision.__version__,
        "versions.mlflow": mlflow.__version__,
    }


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """{"train": {"lr": 0.03}} -> {"train.lr": 0.03}."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: obj}


class MlflowMetrics(Callback):
    """Send the loop's metric rows to the active MLflow run."""

    def __init__(self) -> None:
        import mlflow

        self._mlflow = mlflow

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: v for k, v in metrics.items() if v == v}  # NaN -> not logged
        self._mlflow.log_metrics(clean, step=step)


class ProgressCallback(Callback):
    def __init__(self, progress: Any) -> None:
        self.progress = progress

    def on_progress(self, step: int, total: int) -> None:
        self.progress.update(step)


@dataclass(frozen=True)
class TrainSummary:
    mlflow_run_id: str
    model_uri: str
    snapshot_id: str
    steps: int
    resumed_from: int
    device: str
    n_human: int
    n_weak: int
    n_unlabeled: int
    n_gold: int
    teacher_gold_accuracy: float
    student_gold_accuracy: float
    pseudo_label_precision: float
    elapsed_s: float

    def rows(self) -> list[dict[str, object]]:
        return [
            {"metric": "labeled (human)", "value": self.n_human},
            {"metric": "labeled (weak, weighted)", "value": self.n_weak},
            {"metric": "unlabeled", "value": self.n_unlabeled},
            {"metric": "gold (evaluation only)", "value": self.n_gold},
            {"metric": "steps", "value": self.steps},
            {"metric": "device", "value": self.device},
            {"metric": "teacher gold accuracy", "value": round(self.teacher_gold_accuracy, 4)},
            {"metric": "student gold accuracy", "value": round(self.student_gold_accuracy, 4)},
            {
                "metric": "pseudo-label precision (gold)",
                "value": round(self.pseudo_label_precision, 4),
            },
            {"metric": "seconds", "value": round(self.elapsed_s, 1)},
            {"metric": "MLflow run", "value": self.mlflow_run_id},
            {"metric": "data snapshot", "value": self.snapshot_id},
        ]


def log_model(result: TrainResult, cfg: Config, sample: torch.Tensor) -> str:
    """Log the trained classifier (pickled module: loads back as our `Classifier`, not a
    torch.export graph) with a signature and an input example. Returns the model URI."""
    import mlflow
    from mlflow.models import infer_signature

    example = (sample[:4].float() / 255.0).numpy()  # (4, C, H, W) floats in [0, 1]
    with torch.no_grad():
        out = result.model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        result.model,
        name="model",
        serialization_format="pickle",
        signature=infer_signature(example, out),
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
    return info.model_uri


def train_and_log(cfg: Config, progress: Any | None = None) -> tuple[TrainSummary, TrainResult]:
    """Load data, train, and log to MLflow (params, config, curves, model). The MLflow
    run stays the caller's if one is active; otherwise one is opened and closed here."""
    import mlflow

    store = Store(cfg.store.root)
    training = load_training_data(store, cfg)
    settings = train_settings(cfg)
    run_dir = run_dir_for(cfg, settings, training)
    snapshot_id = store.write_snapshot(
        training.train_ids, training.label_event_ids, purpose="train", run_id=run_dir.name
    )
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    active = mlflow.active_run()
    run = active or mlflow.start_run(run_name=f"train-{snapshot_id}")
    try:
        mlflow.log_params(
            {k: str(v)[:500] for k, v in flatten("", cfg.model_dump(mode="json")).items()}
        )
        mlflow.log_params(
            {
                "data.n_human": training.n_human,
                "data.n_weak": training.n_weak,
                "data.n_unlabeled": training.n_unlabeled,
                "data.n_gold": len(training.gold_ids),
            }
        )
        mlflow.set_tags({"semilabel.snapshot_id": snapshot_id, **environment_tags("pending")})
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "config.json"
            cfg_path.write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
            mlflow.log_artifact(str(cfg_path))
        callbacks: list[Callback] = [MlflowMetrics()]
        if progress is not None:
            callbacks.append(ProgressCallback(progress))
        result = fit(training.data, settings, run_dir=run_dir, callbacks=callbacks)
        mlflow.set_tag("semilabel.device", result.device)
        model_uri = log_model(result, cfg, training.data.x_lb)
        last = _last_eval(result)
        summary = TrainSummary(
            mlflow_run_id=run.info.run_id,
            model_uri=model_uri,
            snapshot_id=snapshot_id,
            steps=result.steps,
            resumed_from=result.resumed_from,
            device=result.device,
            n_human=training.n_human,
            n_weak=training.n_weak,
            n_unlabeled=training.n_unlabeled,
            n_gold=len(training.gold_ids),
            teacher_gold_accuracy=last.get("eval_teacher_accuracy", float("nan")),
            student_gold_accuracy=last.get(
                "eval_student_accuracy", last.get("eval_teacher_accuracy", float("nan"))
            ),
            pseudo_label_precision=last.get("eval_pseudo_label_precision", float("nan")),
            elapsed_s=result.elapsed_s,
        )
        return summary, result
    finally:
        if active is None:
            mlflow.end_run()


def _last_eval(result: TrainResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in result.history:
        out.update({k: v for k, v in row.items() if k.startswith("eval_")})
    return out


# -- Prefect tasks ---------------------------------------------------------------------


@task(name="train-candidate", cache_policy=NO_CACHE)
def train_candidate(cfg: Config) -> TrainSummary:
    """Train teacher and student on the store's data and log the run to MLflow."""
    bar = stage_progress("train", cfg.train.teacher_steps + cfg.train.student_steps)
    summary, _ = train_and_log(cfg, progress=bar)
    bar.finish(summary.steps)
    get_run_logger().info(
        "trained %d steps on %s: gold accuracy teacher %.4f, student %.4f (MLflow run %s)",
        summary.steps,
        summary.device,
        summary.teacher_gold_accuracy,
        summary.student_gold_accuracy,
        summary.mlflow_run_id,
    )
    return summary


@task(name="publish-train-summary", cache_policy=NO_CACHE)
def publish_train_summary(summary: TrainSummary) -> None:
    create_table_artifact(
        table=summary.rows(),
        key="train-summary",
        description=f"Training run {summary.mlflow_run_id}",
    )
