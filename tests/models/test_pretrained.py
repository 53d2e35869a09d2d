"""Starting from pretrained torchvision weights (`train.pretrained`), with no network:
every file here is a seeded torchvision resnet18 saved locally."""

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from models import fit
from models.classifier import ClassifierConfig, build_classifier
from models.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedWeightsError,
    pretrained_classifier,
)
from tests.models.conftest import settings, toy_data


def _resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()  # 1000-class fc


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(_resnet18_state(), path)
    return path


def _body_equals(model, state: dict[str, torch.Tensor], conv1: torch.Tensor | None = None):
    own = model.net.body.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        expected = conv1 if key == "conv1.weight" and conv1 is not None else value
        assert torch.equal(own[key], expected), key


def test_body_loads_from_the_file_and_the_head_is_new(weights_file):
    state = torch.load(weights_file, weights_only=True)
    model = pretrained_classifier("resnet18", 7, 3, 32, str(weights_file))
    _body_equals(model, state)
    assert model.net.head.out_features == 7  # new: the file's fc has 1,000 classes
    assert model.config.stem == "torchvision"  # kept even at 32 px
    assert model.net.body.conv1.kernel_size == (7, 7)
    assert model.config.mean == IMAGENET_MEAN and model.config.std == IMAGENET_STD
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_one_channel_sums_conv1_over_rgb_and_uses_the_mean_normalization(weights_file):
    state = torch.load(weights_file, weights_only=True)
    model = pretrained_classifier("resnet18", 3, 1, 16, str(weights_file))
    _body_equals(model, state, conv1=state["conv1.weight"].sum(1, keepdim=True))
    assert model.config.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert model.config.std == pytest.approx((sum(IMAGENET_STD) / 3,))


@pytest.mark.parametrize("wrap", ["state_dict", "module", "both"])
def test_wrapped_or_module_prefixed_files_load(tmp_path, wrap):
    state = _resnet18_state(1)
    saved: dict = state
    if wrap in ("module", "both"):
        saved = {f"module.{k}": v for k, v in saved.items()}
    if wrap in ("state_dict", "both"):
        saved = {"state_dict": saved, "epoch": 3}
    path = tmp_path / "wrapped.pth"
    torch.save(saved, path)
    _body_equals(pretrained_classifier("resnet18", 4, 3, 32, str(path)), state)


def test_a_file_with_wrong_keys_names_the_file_and_the_keys(tmp_path):
    state = _resnet18_state()
    state.pop("layer4.1.bn2.weight")
    state["extra.weight"] = torch.zeros(3)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "not-a-resnet18.pt"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError) as err:
        pretrained_classifier("resnet18", 4, 3, 32, str(path))
    message = str(err.value)
    assert str(path) in message
    assert "layer4.1.bn2.weight" in message and "extra.weight" in message
    assert "layer1.0.conv1.weight" in message
    assert err.value.missing == ("layer4.1.bn2.weight",)
    assert err.value.unexpected == ("extra.weight",)


def test_a_resnet34_file_does_not_load_into_a_resnet18(tmp_path):
    path = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="unexpected"):
        pretrained_classifier("resnet18", 4, 3, 32, str(path))


def test_a_missing_or_pickled_file_is_refused(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        pretrained_classifier("resnet18", 4, 3, 32, str(tmp_path / "absent.pt"))
    pickled = tmp_path / "model.pt"
    torch.save(torchvision.models.resnet18(weights=None), pickled)  # the module, not weights
    with pytest.raises(PretrainedWeightsError, match="state_dict"):
        pretrained_classifier("resnet18", 4, 3, 32, str(pickled))


def test_imagenet_reads_the_torch_hub_cache_without_downloading(tmp_path, monkeypatch):
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    state = _resnet18_state(2)
    torch.save(state, folder / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded although the file was in the cache")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    _body_equals(pretrained_classifier("resnet18", 4, 3, 32, "imagenet"), state)


def test_imagenet_without_network_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError) as err:
        pretrained_classifier("resnet18", 4, 3, 32, "imagenet")
    message = str(err.value)
    assert str(tmp_path / "checkpoints") in message
    assert "resnet18-" in message and "train.pretrained" in message


def test_a_stored_pretrained_model_rebuilds_without_the_file(weights_file, tmp_path):
    model = pretrained_classifier("resnet18", 4, 1, 32, str(weights_file))
    spec = model.config.to_dict()
    state = model.state_dict()
    rebuilt = build_classifier(ClassifierConfig.from_dict(spec))  # reads no weights file
    rebuilt.load_state_dict(state)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_training_starts_from_the_pretrained_weights(weights_file):
    state = torch.load(weights_file, weights_only=True)
    conv1 = state["conv1.weight"].sum(1, keepdim=True)  # toy data is grayscale
    few = dict(network="resnet18", pretrained=str(weights_file), teacher_steps=3)
    few |= dict(student_steps=3, eval_every=3)
    # lr 0: the weights stay where they started, so the result shows the start
    still = fit(toy_data(), settings(**few, lr=0.0))
    assert still.model.config.stem == "torchvision"
    assert still.model.config.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    for model in (still.model, still.teacher):
        own = model.net.body.state_dict()
        for key, value in state.items():
            if key.endswith(".weight") and key.startswith(("conv", "layer")):
                expected = conv1 if key == "conv1.weight" else value
                assert torch.equal(own[key], expected), key
    # a real run (a few steps) moves them
    moved = fit(toy_data(), settings(**few))
    assert moved.steps == 6 and moved.history
    trained = moved.model.net.body.layer1[0].conv1.weight
    assert not torch.equal(trained, state["layer1.0.conv1.weight"])


def test_colour_invariant_pretrained_start_standardizes_each_image(weights_file):
    model = pretrained_classifier("resnet18", 4, 3, 32, str(weights_file), "per_image")
    assert model.config.normalize == "per_image" and model.config.stem == "torchvision"
    assert model.config.mean == (0.0,) * 3 and model.config.std == (1.0,) * 3
