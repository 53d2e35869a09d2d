"""Models go into the registry as a spec plus a state dict and come back without pickle;
a pickled model (semilabel 0.1's format, or one planted in the registry) is refused
unless the registry is explicitly trusted. The registered model takes images as a user
has them (8-bit, any size, either channel order) and sees the pixels training sees."""

import io
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from models import Classifier, ClassifierConfig, build_classifier
from tasks.images.decode import decode_images, to_pixels
from tasks.registry.model_format import (
    ImageInputError,
    ModelFormatError,
    load_classifier,
    log_classifier,
    write_model_data,
)
from tasks.tracking import ensure_experiment

CLASSES = ("red", "green", "blue")


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
    pixels = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    out = mlflow.pyfunc.load_model("models:/art/1").predict(pixels.numpy())
    probs = torch.tensor(out[["a", "b", "c"]].to_numpy())
    assert torch.allclose(probs, torch.softmax(model(pixels / 255), 1), atol=1e-6)


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


# -- the registered model reads images ----------------------------------------------------


def _photos(seed: int, n: int, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 (n, height, width, channels) images, each mostly red, green or blue (by
    turns) with noise; channels 4 adds a random alpha, 1 is their luma."""
    rng = np.random.default_rng(seed)
    base = np.full((n, 3), 40.0)
    base[np.arange(n), np.arange(n) % 3] = 210.0
    rgb = base[:, None, None, :] + rng.normal(0, 30, (n, height, width, 3))
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if channels == 1:
        return np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in rgb])[..., None]
    if channels == 4:
        alpha = rng.integers(0, 256, (n, height, width, 1), dtype=np.uint8)
        return np.concatenate([rgb, alpha], axis=3)
    return rgb


def _trained(in_channels: int) -> Classifier:
    """A small_cnn (28 px) trained a few steps to tell red, green and blue images apart
    (by their luma, in grayscale), so its predictions differ between images."""
    torch.manual_seed(0)
    mean, std = (0.5,) * in_channels, (0.25,) * in_channels
    model = build_classifier(ClassifierConfig("small_cnn", 3, in_channels, 28, mean, std))
    photos = _photos(1, 30, 28, 28, 3)
    x = torch.from_numpy(np.stack([to_pixels(Image.fromarray(a), 28, in_channels) for a in photos]))
    y = torch.arange(30) % 3
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x / 255), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _training_path(model: Classifier, images: np.ndarray) -> np.ndarray:
    """Class probabilities (B, K) for uint8 (B, H, W, C) images as training sees them: the
    images stored as PNG, decoded to the model's size and channels, /255, softmax."""
    blobs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "PNG")
        blobs.append(buf.getvalue())
    cfg = model.config
    x = torch.from_numpy(decode_images(blobs, cfg.image_size, cfg.in_channels)).float() / 255
    with torch.no_grad():
        return torch.softmax(model(x), 1).numpy()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Trained RGB and grayscale models, logged to a real store and loaded back as pyfunc:
    {in_channels: (model, pyfunc)}."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('served') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    ensure_experiment(uri, "served-test")
    out = {}
    for channels in (3, 1):
        model = _trained(channels)
        with mlflow.start_run():
            sample = torch.zeros(2, channels, 28, 28, dtype=torch.uint8)
            model_uri = log_classifier(model, CLASSES, sample)
        out[channels] = (model, mlflow.pyfunc.load_model(model_uri))
    return out


@pytest.mark.parametrize(
    "model_channels, image_channels",
    [(3, 3), (3, 4), (1, 3), (1, 1)],
    ids=["rgb-model-rgb", "rgb-model-rgba", "gray-model-rgb", "gray-model-gray"],
)
def test_the_registered_model_reads_images_of_any_size_as_training_does(
    served, model_channels, image_channels
):
    model, pyfunc = served[model_channels]
    images = _photos(2, 6, 50, 37, image_channels)  # (B, H, W, C) uint8, not 28 x 28
    sent = images[..., 0] if image_channels == 1 else images  # grayscale as (B, H, W)
    out = pyfunc.predict(sent)
    expected = _training_path(model, images)
    assert list(out.columns) == ["label", *CLASSES] and len(out) == 6
    assert out["label"].tolist() == [CLASSES[i] for i in expected.argmax(1)]
    assert out["label"].nunique() > 1  # the model tells these images apart
    np.testing.assert_allclose(out[list(CLASSES)].to_numpy(), expected, atol=1e-6)


def test_either_channel_order_and_any_integer_type_give_the_same_answer(served):
    model, rgb = served[3]
    images = _photos(3, 4, 33, 45, 3)  # (B, H, W, C)
    expected = rgb.predict(images)
    pd.testing.assert_frame_equal(rgb.predict(images.transpose(0, 3, 1, 2)), expected)
    pd.testing.assert_frame_equal(rgb.predict(images.astype(np.int64)), expected)  # JSON's
    # an ambiguous (B, 3, 3, 3) is read channels-last
    tiny = images[:, :3, :3]
    np.testing.assert_allclose(
        rgb.predict(tiny)[list(CLASSES)].to_numpy(), _training_path(model, tiny), atol=1e-6
    )
    _, gray = served[1]
    luma = _photos(3, 4, 33, 45, 1)  # (B, H, W, 1)
    expected = gray.predict(luma[..., 0])
    pd.testing.assert_frame_equal(gray.predict(luma), expected)
    pd.testing.assert_frame_equal(gray.predict(luma.transpose(0, 3, 1, 2)), expected)


def test_floats_in_0_1_are_read_as_8_bit_pixels_and_floats_in_0_255_are_refused(served):
    _, pyfunc = served[3]
    images = _photos(4, 4, 30, 30, 3)
    expected = pyfunc.predict(images)
    for dtype in (np.float32, np.float64):
        pd.testing.assert_frame_equal(pyfunc.predict(images.astype(dtype) / 255), expected)
    send = r"send uint8 images 0-255, or floats scaled to \[0, 1\]"
    with pytest.raises(ImageInputError, match=rf"float32 values from \S+ to 255.0.*{send}"):
        pyfunc.predict(images.astype(np.float32))
    with pytest.raises(ImageInputError, match=rf"float64 values from -0.5 to .*{send}"):
        pyfunc.predict(images / 255 - 0.5)
    with pytest.raises(ImageInputError, match=r"float64 values from nan"):
        pyfunc.predict(np.full((1, 30, 30, 3), np.nan))
    with pytest.raises(ImageInputError, match=rf"int64 values from 0 to 300.*{send}"):
        pyfunc.predict(np.minimum(images.astype(np.int64) * 2, 300))
    with pytest.raises(ImageInputError, match="received bool"):
        pyfunc.predict(images > 100)
    assert isinstance(ImageInputError("x"), ValueError)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 5, 6, 7), r"neither \(B, H, W, C\) nor \(B, C, H, W\) with C in 1, 3, 4"),
        ((28, 28, 3), r"one \(H, W, C\) image without its batch axis\? Send \(1, H, W, C\)"),
        ((28, 28), r"rank 2"),
        ((1, 1, 28, 28, 3), r"rank 5"),
        ((1, 0, 28, 3), r"no pixels"),
    ],
)
def test_shapes_it_cannot_read_are_refused_with_what_to_send(served, shape, message):
    with pytest.raises(ImageInputError, match=message):
        served[3][1].predict(np.zeros(shape, np.uint8))


def test_a_dataframe_of_images_a_row_is_read_image_by_image(served):
    # what MLflow passes for a `dataframe_split` or `dataframe_records` request: a column
    # of nested lists, so the rows may differ in size
    _, pyfunc = served[3]
    a, b = _photos(5, 1, 40, 30, 3), _photos(6, 1, 20, 50, 3)
    out = pyfunc.predict(pd.DataFrame({"image": [a[0].tolist(), b[0].tolist()]}))
    pd.testing.assert_frame_equal(
        out, pd.concat([pyfunc.predict(a), pyfunc.predict(b)], ignore_index=True)
    )
    assert len(pyfunc.predict(np.zeros((0, 28, 28, 3), np.uint8))) == 0
    with pytest.raises(ImageInputError, match="must share a shape"):
        pyfunc.predict([a[0], b[0]])  # one array cannot hold them
    with pytest.raises(ImageInputError, match="columns"):
        pyfunc.predict(pd.DataFrame({"a": [1], "b": [2]}))


def test_a_version_logged_before_images_were_accepted_still_loads_and_predicts(uri: str):
    # Until now versions were logged with a float32 (-1, C, 28, 28) signature: MLflow
    # still enforces it, and the loader (this code) answers with the new DataFrame.
    from mlflow.models import infer_signature

    model = _trained(1)
    x = (torch.from_numpy(_photos(7, 4, 28, 28, 1)).permute(0, 3, 1, 2) / 255).numpy()
    probs = torch.softmax(model(torch.from_numpy(x)), 1).detach().numpy()
    with mlflow.start_run(), tempfile.TemporaryDirectory() as tmp:
        data = write_model_data(Path(tmp) / "classifier", model, CLASSES)
        info = mlflow.pyfunc.log_model(
            name="model",
            loader_module="tasks.registry.model_format",
            data_path=str(data),
            signature=infer_signature(x, probs),
            input_example=x,
        )
    mlflow.register_model(info.model_uri, "before")
    loaded = load_classifier("models:/before/1", uri)
    assert torch.equal(loaded(torch.from_numpy(x)), model(torch.from_numpy(x)))
    out = mlflow.pyfunc.load_model("models:/before/1").predict(x)
    np.testing.assert_allclose(out[list(CLASSES)].to_numpy(), probs, atol=1e-6)
    assert out["label"].tolist() == [CLASSES[i] for i in probs.argmax(1)]


def test_a_class_named_like_the_label_column_is_refused(uri: str):
    model = build_classifier(ClassifierConfig("small_cnn", 2, 1, 28, (0.5,), (0.25,)))
    with mlflow.start_run(), pytest.raises(ValueError, match="taxonomy.classes"):
        log_classifier(model, ("label", "other"), torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
