"""How a trained classifier is stored in MLflow and loaded back, without pickle.

A model logged by semilabel is an MLflow pyfunc model whose loader is this module (the
installed semilabel code, never code stored in the registry) and whose data is::

    model/data/classifier/classifier.json   network name, shape, normalization, classes
    model/data/classifier/weights.pt        the state dict (read with weights_only=True)

`load_classifier` rebuilds the network with `models.build_classifier` and loads the
weights, so loading a model runs no code from the registry, and an old version still
loads after `models/` is refactored as long as its network name exists.

`mlflow.pyfunc.load_model(uri).predict(images)` (and `mlflow models serve`) takes images
as they come: uint8 (or any integer type holding 0-255, which is what a JSON request
becomes) or floats in [0, 1]; shaped (B, H, W, C), (B, C, H, W) with C in 1, 3, 4, or
(B, H, W) grayscale; of any size. Each image gets the pixels training gives the same
image (`tasks.images.decode.to_pixels`: alpha on white, luma or RGB, bilinear resize to
the model's square). It returns a DataFrame: `label` (the predicted class name) and one
probability column per class, a row per image. Values it cannot read unambiguously
(floats in 0-255, integers past 255) are refused with `ImageInputError`, never guessed.

Versions logged by semilabel 0.1 are pickled PyTorch modules (MLflow's `pytorch`
flavor); unpickling runs whatever code the file names. They load only when the caller
says it trusts the registry (`mlflow.trust_pickled_models`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from models import Classifier, ClassifierConfig, build_classifier, predict_proba
from models.pool import ImagePool
from tasks.images.decode import to_pixels

log = logging.getLogger(__name__)

FORMAT = "semilabel-classifier/1"
SPEC_FILE = "classifier.json"
WEIGHTS_FILE = "weights.pt"
LABEL_COLUMN = "label"  # the predicted class name; the other columns are class names
IMAGE_CHANNELS = (1, 3, 4)  # grayscale, RGB, RGBA: what a channel axis may hold
SEND = "uint8 images 0-255, or floats scaled to [0, 1]"


class ModelFormatError(RuntimeError):
    """A registered model cannot be loaded safely; the message says why and what to do."""


class ImageInputError(ValueError):
    """Images the registered model cannot read unambiguously; the message says what was
    received and what to send instead."""


@dataclass(frozen=True)
class StoredModel:
    classifier: Classifier
    classes: tuple[str, ...]


def write_model_data(folder: Path, model: Classifier, classes: tuple[str, ...]) -> Path:
    """The model's data folder (spec + state dict), ready for `mlflow.pyfunc.log_model`."""
    if model.config is None:
        raise ValueError("the classifier has no config: build it with models.build_classifier")
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"format": FORMAT, "classifier": model.config.to_dict(), "classes": list(classes)}
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    return folder


def read_model_data(folder: Path) -> StoredModel:
    """Rebuild a classifier from its data folder; runs no stored code."""
    spec = json.loads((folder / SPEC_FILE).read_text())
    if spec.get("format") != FORMAT:
        raise ModelFormatError(
            f"{folder}: model format {spec.get('format')!r} is not {FORMAT!r}; "
            "upgrade semilabel to load it"
        )
    model = build_classifier(ClassifierConfig.from_dict(spec["classifier"]))
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return StoredModel(model.eval(), tuple(spec.get("classes", ())))


def log_classifier(
    model: Classifier, classes: tuple[str, ...], sample: torch.Tensor | ImagePool
) -> str:
    """Log `model` to the active MLflow run as `model/` (pyfunc flavor, state dict data),
    with an output signature and one image of uint8 `sample` (B, C, H, W) as the input
    example. Returns the model URI.

    The signature has no input schema, on purpose: MLflow enforces one strictly. A
    `TensorSpec` has one dtype and one rank (-1 frees sizes, not ranks), so uint8 with
    (-1, -1, -1, 3) refuses floats in [0, 1] and grayscale (B, H, W) in process, and in a
    JSON request MLflow casts every number to the spec's dtype before `predict` sees it:
    0.5 becomes 0 and 200.7 becomes 200, silently. Without an input schema a JSON request
    arrives as int64 (integers) or float64 (floats) and `predict` checks the range
    itself. What the model takes is in the module docstring, the metadata and the
    example (`serving_input_example.json` is a ready request)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if LABEL_COLUMN in classes:
        raise ValueError(
            f"a class is named {LABEL_COLUMN!r}, the name of the predicted-class column of "
            "the registered model's output; rename the class in taxonomy.classes"
        )
    if model.config is None:
        raise ValueError("the classifier has no config: build it with models.build_classifier")
    example = np.ascontiguousarray(sample[:1].numpy().transpose(0, 2, 3, 1))  # (1, H, W, C)
    outputs = Schema(
        [ColSpec("string", LABEL_COLUMN), *(ColSpec("float", name) for name in classes)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = write_model_data(Path(tmp) / "classifier", model, classes)
        info = mlflow.pyfunc.log_model(
            name="model",
            loader_module=__name__,
            data_path=str(data),
            signature=ModelSignature(inputs=None, outputs=outputs),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata={
                "semilabel_format": FORMAT,
                "classes": list(classes),
                "input": f"{SEND}: (B, H, W, C), (B, C, H, W) or (B, H, W), any size",
                "image_size": model.config.image_size,
                "in_channels": model.config.in_channels,
            },
        )
    return info.model_uri


def load_classifier(uri: str, tracking_uri: str, *, trust_pickle: bool = False) -> Classifier:
    """The classifier at `uri` (e.g. `models:/name/3`), in eval mode on the CPU.

    Models logged by this module are rebuilt from their spec and weights. Pickled models
    (semilabel 0.1) load only with `trust_pickle`; otherwise `ModelFormatError` says how.
    """
    import mlflow
    from mlflow.models import Model

    # `models:/` URIs resolve through the global registry URI whatever download_artifacts
    # is told (MLflow 3.17), and a subprocess inherits a stale one via MLFLOW_REGISTRY_URI:
    # point both at this run's registry.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
        )
        meta = Model.load(str(local))
        pyfunc = meta.flavors.get("python_function", {})
        if pyfunc.get("loader_module") == __name__:
            data = (local / pyfunc["data"]).resolve()
            if not data.is_relative_to(local.resolve()):  # the MLmodel file is registry data
                raise ModelFormatError(
                    f"{uri}: model data path {pyfunc['data']!r} points outside the model"
                )
            return read_model_data(data).classifier
        if "pytorch" in meta.flavors:
            if not trust_pickle:
                raise ModelFormatError(
                    f"{uri} was logged as a pickled PyTorch module (semilabel 0.1); loading "
                    "it would run code stored in the registry, so it was not loaded. If only "
                    "you can write to this registry, set mlflow.trust_pickled_models=true "
                    "for this run (e.g. --set mlflow.trust_pickled_models=true); a retrain "
                    "then replaces it with a champion in the safe format."
                )
            log.warning("loading pickled model %s (mlflow.trust_pickled_models is on)", uri)
            return mlflow.pytorch.load_model(str(local), map_location="cpu").eval()
    raise ModelFormatError(
        f"{uri} is not a semilabel classifier (flavors: {', '.join(meta.flavors)})"
    )


# -- the MLflow pyfunc flavor -----------------------------------------------------------


class PyfuncClassifier:
    """What `mlflow.pyfunc.load_model` returns for a semilabel model: `predict` takes
    images (see `prepare_images`) and returns a DataFrame of the predicted `label` and
    one probability column per class, a row per image."""

    def __init__(self, stored: StoredModel):
        self.model = stored.classifier
        if self.model.config is None:  # read_model_data always builds it from its config
            raise ModelFormatError("the stored classifier has no config")
        self.config: ClassifierConfig = self.model.config
        config = self.config
        self.classes = stored.classes
        # a spec without (matching) class names still answers, with the class indices
        names = stored.classes
        if len(names) != config.num_classes:
            names = tuple(str(i) for i in range(config.num_classes))
        self.columns = names

    def predict(self, model_input: Any, params: dict | None = None) -> pd.DataFrame:
        pixels = [
            prepare_images(batch, self.config.image_size, self.config.in_channels)
            for batch in _image_batches(model_input)
        ]
        size, k = self.config.image_size, len(self.columns)
        x = np.concatenate([np.empty((0, self.config.in_channels, size, size), np.uint8), *pixels])
        probs = np.zeros((0, k), np.float32)
        if len(x):
            probs = predict_proba(self.model, torch.from_numpy(x), "cpu").numpy()  # (B, K)
        out = pd.DataFrame(probs, columns=list(self.columns))
        out.insert(0, LABEL_COLUMN, [self.columns[i] for i in probs.argmax(1)])
        return out


def prepare_images(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Images as a caller sends them -> uint8 (B, channels, size, size), the pixels
    training gives the same source pixels (`tasks.images.decode.to_pixels`).

    Takes uint8 (or any integer type holding 0-255) or floats in [0, 1], which become
    round(x * 255). Layouts: rank 3 is (B, H, W) grayscale; rank 4 is (B, H, W, C) when
    the last axis has 1, 3 or 4 entries, else (B, C, H, W) when axis 1 has (so an
    ambiguous (B, 3, 3, 3) is channels-last). A rank-3 array whose last axis has 1, 3 or
    4 entries is refused: it is far likelier one (H, W, C) image without its batch axis
    than images 1 to 4 pixels wide. Anything else raises `ImageInputError`.
    """
    x = _to_uint8(_stack(images))
    if x.ndim == 3 and x.shape[-1] in IMAGE_CHANNELS:
        raise ImageInputError(
            f"received shape {x.shape}: one (H, W, C) image without its batch axis? Send "
            f"(1, H, W, C); grayscale images are (B, H, W) and more than {max(IMAGE_CHANNELS)} "
            "pixels wide"
        )
    if x.ndim == 4 and x.shape[-1] not in IMAGE_CHANNELS:
        if x.shape[1] not in IMAGE_CHANNELS:
            raise ImageInputError(
                f"received shape {x.shape}: neither (B, H, W, C) nor (B, C, H, W) with C in "
                f"{', '.join(map(str, IMAGE_CHANNELS))}"
            )
        x = x.transpose(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
    if x.ndim not in (3, 4):
        raise ImageInputError(
            f"received shape {x.shape} (rank {x.ndim}): send a batch of images, "
            "(B, H, W, C), (B, C, H, W) or grayscale (B, H, W)"
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ImageInputError(f"received shape {x.shape}: images with no pixels")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]  # (B, H, W, 1) -> (B, H, W): Pillow reads (H, W) as L
    out = np.empty((len(x), channels, size, size), np.uint8)
    for i, img in enumerate(x):
        out[i] = to_pixels(Image.fromarray(np.ascontiguousarray(img)), size, channels)
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """uint8 from integers in 0-255 or floats in [0, 1]; anything else is refused, since
    a guess (0-255 floats? 16-bit?) would predict on wrong pixels without a word."""
    if x.dtype == object:  # e.g. nested lists that numpy did not make numeric
        x = _stack(x.tolist())
    if x.dtype.kind not in "uif":
        raise ImageInputError(f"received {x.dtype} values; send {SEND}")
    if x.size == 0:
        return x.astype(np.uint8)
    lo, hi = x.min(), x.max()
    received = f"received {x.dtype} values from {lo} to {hi}"
    if x.dtype.kind == "f":
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            hint = ", which look like 0-255 pixels: divide by 255" if hi > 1 else ""
            raise ImageInputError(f"{received}{hint}; send {SEND}")
        return np.rint(x * 255.0).astype(np.uint8)
    if lo < 0 or hi > 255:
        raise ImageInputError(f"{received}; send {SEND} (8 bits a channel)")
    return x.astype(np.uint8, copy=False)


def _image_batches(model_input: Any) -> list[np.ndarray]:
    """What MLflow hands `predict` -> arrays of images. A JSON `inputs` or `instances`
    request arrives as one ndarray (int64 or float64); `dataframe_split` or
    `dataframe_records` as a one-column DataFrame with an image (nested lists) a row,
    each row a batch of one, so rows may differ in size."""
    if isinstance(model_input, dict) and len(model_input) == 1:  # a named input
        model_input = next(iter(model_input.values()))
    if isinstance(model_input, pd.DataFrame):
        if len(model_input.columns) != 1:
            raise ImageInputError(
                f"received a DataFrame with columns {list(model_input.columns)}: send one "
                "column holding an image a row, or an array of images"
            )
        return [_stack(cell)[None] for cell in model_input.iloc[:, 0]]
    if isinstance(model_input, (np.ndarray, list, tuple, torch.Tensor)):
        return [_stack(model_input)]
    raise ImageInputError(f"received a {type(model_input).__name__}; send an array of images")


def _stack(images: Any) -> np.ndarray:
    try:
        return np.asarray(images)
    except ValueError as e:  # e.g. "inhomogeneous shape": images of different sizes
        raise ImageInputError(
            f"received images numpy cannot stack ({e}); images in one array must share a "
            "shape: send differently sized images in separate requests, or a row each"
        ) from None


def _load_pyfunc(data_path: str) -> PyfuncClassifier:
    """MLflow's pyfunc entry point for models logged by `log_classifier`."""
    return PyfuncClassifier(read_model_data(Path(data_path)))
