"""Models go into the registry as a spec plus a state dict and come back without pickle;
a pickled model (semilabel 0.1's format, or one planted in the registry) is refused
unless the registry is explicitly trusted."""

import os
from pathlib import Path

import mlflow
import pytest
import torch

from models import ClassifierConfig, build_classifier
from tasks.model_artifact import ModelFormatError, load_classifier, log_classifier
from tasks.tracking import ensure_experiment


class Planted(torch.nn.Module):
    """A module whose unpickling runs `touch <marker>`: what a registry writer could plant."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.lin = torch.nn.Linear(784, 3)

    def forward(self, x):
        return self.lin(x.flatten(1))

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    ensure_experiment(uri, "artifact-test")  # artifacts beside the db, not ./mlruns
    return uri


def test_a_logged_classifier_comes_back_with_the_same_weights(uri: str):
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig("small_cnn", 3, 1, 28, (0.13,), (0.31,))).eval()
    with mlflow.start_run():
        model_uri = log_classifier(
            model, ("a", "b", "c"), torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
        )
    mlflow.register_model(model_uri, "art")
    loaded = load_classifier("models:/art/1", uri)
    assert type(loaded) is type(model) and loaded.config == model.config
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    probs = mlflow.pyfunc.load_model("models:/art/1").predict(x.numpy())
    assert torch.allclose(torch.from_numpy(probs), torch.softmax(model(x), 1), atol=1e-6)


def test_a_pickled_model_in_the_registry_is_refused_and_its_code_never_runs(uri, tmp_path):
    marker = tmp_path / "pwned"
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            Planted(str(marker)), name="model", serialization_format="pickle"
        )
    mlflow.register_model(info.model_uri, "legacy")
    marker.unlink(missing_ok=True)  # logging itself pickles, and never unpickles; be sure
    with pytest.raises(ModelFormatError, match="pickled PyTorch module.*trust_pickled_models"):
        load_classifier("models:/legacy/1", uri)
    assert not marker.exists()
    # A registry the user trusts (e.g. their own 0.1 versions) loads on request: and this
    # is exactly what would have run the planted code.
    with pytest.raises(Exception):  # noqa: B017 - the planted reduce returns an int, not a module
        load_classifier("models:/legacy/1", uri, trust_pickle=True)
    assert marker.exists()


def test_a_version_registered_by_semilabel_0_1_loads_when_trusted(uri: str):
    # 0.1 logged the classifier itself, pickled: it still loads, on explicit trust.
    model = build_classifier(ClassifierConfig("small_cnn", 3, 1, 28, (0.13,), (0.31,))).eval()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
    mlflow.register_model(info.model_uri, "old")
    with pytest.raises(ModelFormatError):
        load_classifier("models:/old/1", uri)
    loaded = load_classifier("models:/old/1", uri, trust_pickle=True)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
