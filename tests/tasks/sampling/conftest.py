"""A real, untrained classifier for the sampling tests: what scores a pool."""

import pytest
import torch

from models import Classifier, ClassifierConfig, build_classifier


@pytest.fixture
def small_model() -> Classifier:
    """A seeded small CNN for 28x28 grayscale images of 3 classes, in eval mode."""
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig("small_cnn", 3, 1, 28, (0.1,), (0.3,))).eval()
