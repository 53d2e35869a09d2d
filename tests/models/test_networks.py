"""Networks by name, and the stem a torchvision network gets."""

import pytest
import torch
import torch.nn as nn

from models.classifier import ClassifierConfig, build_classifier
from models.networks import NETWORKS, build_network, default_stem


@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_gives_features_and_logits(name):
    net = build_network(name, 4, 3, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z, logits = net.features(x), net(x)
    assert z.shape == (2, net.feature_dim) and logits.shape == (2, 4)


@pytest.mark.parametrize(
    ("name", "size", "stem"),
    [
        ("resnet18", 32, "small"),
        ("resnet18", 64, "small"),
        ("resnet18", 65, "torchvision"),
        ("resnet50", 224, "torchvision"),
        ("small_cnn", 28, "small"),
        ("wrn28_2", 96, "small"),
    ],
)
def test_default_stem_is_the_old_rule(name, size, stem):
    assert default_stem(name, size) == stem
    assert ClassifierConfig(name, 3, 1, size, (0.5,), (0.2,)).stem == stem


def test_torchvision_stem_is_kept_at_any_size_when_asked_for():
    small = build_network("resnet18", 10, 1, 32, "small")
    tv = build_network("resnet18", 10, 1, 32, "torchvision")
    assert small.body.conv1.kernel_size == (3, 3) and small.body.conv1.stride == (1, 1)
    assert isinstance(small.body.maxpool, nn.Identity)
    assert tv.body.conv1.kernel_size == (7, 7) and tv.body.conv1.stride == (2, 2)
    assert tv.body.conv1.in_channels == 1
    assert isinstance(tv.body.maxpool, nn.MaxPool2d)
    assert tv(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_a_stem_the_network_does_not_have_is_refused():
    with pytest.raises(ValueError, match="only the small stem"):
        build_network("small_cnn", 10, 1, 28, "torchvision")
    with pytest.raises(ValueError, match="unknown stem"):
        ClassifierConfig("resnet18", 10, 3, 32, (0.5,) * 3, (0.2,) * 3, stem="big")
    with pytest.raises(ValueError, match="unknown network"):
        build_network("vgg11", 10, 3, 32)


@pytest.mark.parametrize(("size", "kernel"), [(32, 3), (96, 7)])
def test_a_spec_stored_without_the_stem_rebuilds_the_old_architecture(size, kernel):
    # What tasks/registry/model_format.py stored before the stem was recorded: no "stem" key.
    old = {
        "network": "resnet18",
        "num_classes": 5,
        "in_channels": 3,
        "image_size": size,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    config = ClassifierConfig.from_dict(old)
    model = build_classifier(config)
    assert model.net.body.conv1.kernel_size == (kernel, kernel)
    # the old weights load into it, and the spec now records its stem
    twin = build_classifier(ClassifierConfig.from_dict(old))
    model.load_state_dict(twin.state_dict())
    assert ClassifierConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["stem"] == default_stem("resnet18", size)
