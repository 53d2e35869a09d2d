"""Drift: near zero for two samples of the same data, a breach for a shifted batch."""

import numpy as np
import pytest
import torch

from models import ClassifierConfig, build_classifier
from tasks.slis.drift import compare, intensity_histogram, js_distance, mmd_permutation_test


def _embed():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig("small_cnn", 10, 1, 28, (0.13,), (0.31,))).eval()

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.features(torch.from_numpy(images).float() / 255.0).numpy()

    return embed


KW = dict(permutations=200, p_value=0.01, js_threshold=0.1)


def test_two_samples_of_the_same_data_do_not_drift(digits):
    check = compare(
        "same", digits[:300], digits[300:600], _embed(), rng=np.random.default_rng(0), **KW
    )
    assert not check.breached, check.why
    assert check.p_value > 0.05 and check.js < 0.02


@pytest.mark.parametrize(
    ("shift", "js_breach"),
    [
        (lambda x: 255 - x, True),  # inverted: every view sees it
        (lambda x: np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3))), False),  # same pixels
    ],
    ids=["inverted", "rotated"],
)
def test_a_shifted_batch_breaches(digits, shift, js_breach):
    check = compare(
        "shifted",
        shift(digits[:300]),
        digits[300:600],
        _embed(),
        rng=np.random.default_rng(0),
        **KW,
    )
    assert check.breached and check.p_value < 0.01
    assert (check.js > 0.1) == js_breach  # rotation keeps the intensity histogram


def test_the_mmd_and_js_match_known_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    mmd2, p = mmd_permutation_test(x, x[::-1].copy(), 50, rng)  # the same points
    assert mmd2 == pytest.approx(mmd_permutation_test(x, x[::-1].copy(), 10, rng)[0])
    assert p > 0.5
    h = intensity_histogram(np.array([[[[0, 255]]]], np.uint8))
    assert h[0] == 0.5 and h[-1] == 0.5
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert js_distance(h, h) == 0.0
