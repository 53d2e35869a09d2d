"""The classifier (`models/classifier.py`): its input normalization, its spec, and the
device it runs on."""

import dataclasses

import pytest
import torch

from models import fit, inference_rows, predict_proba, resolve_device
from models.classifier import ClassifierConfig, build_classifier, to_float
from tests.models.conftest import AUGMENT, settings, toy_data


def test_per_image_normalization_ignores_each_image_colour_cast_and_contrast():
    config = ClassifierConfig("small_cnn", 4, 3, 16, (0.0,) * 3, (1.0,) * 3, normalize="per_image")
    model = build_classifier(config).eval()
    x = 0.2 + 0.5 * torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    scale = torch.tensor([0.5, 1.2, 0.8]).view(1, 3, 1, 1)  # per channel, positive
    shift = torch.tensor([0.1, -0.15, 0.05]).view(1, 3, 1, 1)
    y = x * scale + shift
    assert torch.allclose(model.normalized(x), model.normalized(y), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(x), model(y), atol=1e-5)
    plain = build_classifier(ClassifierConfig("small_cnn", 4, 3, 16, (0.5,) * 3, (0.25,) * 3))
    assert not torch.allclose(plain.normalized(x), plain.normalized(y), atol=0.05)


def test_a_spec_stored_before_the_normalization_was_recorded_uses_the_dataset_statistics():
    old = {
        "network": "small_cnn",
        "num_classes": 3,
        "in_channels": 1,
        "image_size": 28,
        "mean": [0.13],
        "std": [0.31],
    }
    config = ClassifierConfig.from_dict(old)
    assert config.normalize == "dataset" and config.stem == "small"
    assert ClassifierConfig.from_dict(config.to_dict()) == config
    x = torch.rand(2, 1, 28, 28)
    model = build_classifier(config).eval()
    with torch.no_grad():
        assert torch.equal(model(x), model.net((x - 0.13) / 0.31))


def test_colour_invariant_training_normalizes_colour_images_per_image():
    gray = toy_data(n_lb=12, n_ulb=24)
    colour = dataclasses.replace(
        gray, x_lb=gray.x_lb.repeat(1, 3, 1, 1), x_ulb=gray.x_ulb.repeat(1, 3, 1, 1)
    )
    invariant = settings(
        augment=dataclasses.replace(AUGMENT, colour="invariant"), teacher_steps=2, student_steps=2
    )
    config = fit(colour, invariant).model.config
    assert config.normalize == "per_image"
    assert config.mean == (0.0,) * 3 and config.std == (1.0,) * 3
    # grayscale: nothing to be invariant to; the data's statistics as before
    assert fit(gray, invariant).model.config.normalize == "dataset"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_fails_early():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_inference_batches_shrink_as_images_grow_and_give_the_same_probabilities():
    assert inference_rows((1, 64, 64)) == 1024
    assert inference_rows((3, 64, 64)) == 341
    assert inference_rows((3, 224, 224)) == 27
    assert inference_rows((3, 4096, 4096)) == 1  # never zero
    config = ClassifierConfig("small_cnn", 4, 3, 24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model = build_classifier(config).eval()
    x = torch.randint(0, 256, (50, 3, 24, 24), dtype=torch.uint8)
    whole = predict_proba(model, x, batch_size=50)
    assert inference_rows(x.shape[1:]) == 2427  # one batch by default here
    assert torch.allclose(predict_proba(model, x), whole, atol=1e-6)
    assert torch.allclose(predict_proba(model, x, batch_size=7), whole, atol=1e-6)


def test_inference_runs_channels_last_with_the_probabilities_of_the_plain_layout():
    """predict_proba (gold, the gate, the monitor) and the pool scoring feed the network
    channels_last on the CPU, as training does, and change no probability."""
    config = ClassifierConfig("small_cnn", 4, 3, 24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model = build_classifier(config).eval()
    x = torch.randint(0, 256, (12, 3, 24, 24), dtype=torch.uint8)
    layouts = []
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [
        c.register_forward_pre_hook(
            lambda m, i: layouts.append(i[0].is_contiguous(memory_format=torch.channels_last))
        )
        for c in convs
    ]
    try:
        probs = predict_proba(model, x)
    finally:
        for h in hooks:
            h.remove()
    assert len(convs) >= 2 and layouts == [True] * len(convs)
    assert not to_float(x).is_contiguous(memory_format=torch.channels_last)  # not by chance
    with torch.no_grad():
        plain = torch.softmax(model(to_float(x)), 1)
    assert torch.allclose(probs, plain, atol=1e-6)
