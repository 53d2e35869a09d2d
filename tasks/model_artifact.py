"""How a trained classifier is stored in MLflow and loaded back, without pickle.

A model logged by semilabel is an MLflow pyfunc model whose loader is this module (the
installed semilabel code, never code stored in the registry) and whose data is::

    model/data/classifier/classifier.json   network name, shape, normalization, classes
    model/data/classifier/weights.pt        the state dict (read with weights_only=True)

`load_classifier` rebuilds the network with `models.build_classifier` and loads the
weights, so loading a model runs no code from the registry, and an old version still
loads after `models/` is refactored as long as its network name exists.
`mlflow.pyfunc.load_model(uri).predict(x)` returns class probabilities for float images
in [0, 1] of shape (B, C, H, W).

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

import numpy as np
import torch

from models import Classifier, ClassifierConfig, build_classifier
from models.pool import ImagePool

log = logging.getLogger(__name__)

FORMAT = "semilabel-classifier/1"
SPEC_FILE = "classifier.json"
WEIGHTS_FILE = "weights.pt"


class ModelFormatError(RuntimeError):
    """A registered model cannot be loaded safely; the message says why and what to do."""


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
    with a signature and an input example from uint8 `sample` (B, C, H, W). Returns the
    model URI."""
    import mlflow
    from mlflow.models import infer_signature

    example = (sample[:4].float() / 255.0).numpy()  # (4, C, H, W) floats in [0, 1]
    with torch.no_grad():
        probs = torch.softmax(model.cpu().eval()(torch.from_numpy(example)), 1).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_model_data(Path(tmp) / "classifier", model, classes)
        info = mlflow.pyfunc.log_model(
            name="model",
            loader_module=__name__,
            data_path=str(data),
            signature=infer_signature(example, probs),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata={"semilabel_format": FORMAT, "classes": list(classes)},
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
    float images in [0, 1] of shape (B, C, H, W) and returns class probabilities (B, K)."""

    def __init__(self, stored: StoredModel):
        self.model = stored.classifier
        self.classes = stored.classes

    def predict(self, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        x = torch.from_numpy(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return torch.softmax(self.model(x), 1).numpy()


def _load_pyfunc(data_path: str) -> PyfuncClassifier:
    """MLflow's pyfunc entry point for models logged by `log_classifier`."""
    return PyfuncClassifier(read_model_data(Path(data_path)))
