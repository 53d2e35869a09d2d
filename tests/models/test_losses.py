"""The losses (`models/losses.py`), each against a hand-computed value. (The student's
whole step, `student_step`: tests/models/train/test_step.py.)"""

import math

import torch

from models.losses import (
    DistributionAlignment,
    consistency_loss,
    supervised_loss,
)


def test_weighted_supervised_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    weights = torch.tensor([1.0, 0.5])
    # CE_1 = log(1 + e^-2), CE_2 = log(1 + e^1); mean of weighted terms.
    expected = (math.log(1 + math.exp(-2)) * 1.0 + math.log(1 + math.exp(1)) * 0.5) / 2
    assert math.isclose(float(supervised_loss(logits, targets, weights)), expected, rel_tol=1e-6)
    assert math.isclose(
        float(supervised_loss(logits, targets)),
        (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2,
        rel_tol=1e-6,
    )


def test_consistency_loss_masks_and_averages_over_the_whole_batch():
    logits = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([1, 0, 0])
    mask = torch.tensor([1.0, 1.0, 0.0])
    expected = (math.log(2) + math.log(1 + math.exp(-3))) / 3
    assert math.isclose(float(consistency_loss(logits, targets, mask)), expected, rel_tol=1e-6)


def test_distribution_alignment_moves_predictions_toward_the_target():
    da = DistributionAlignment(torch.tensor([1.0, 1.0]), momentum=0.0)
    out = da(torch.tensor([[0.9, 0.1], [0.7, 0.3]]))  # running mean (0.8, 0.2)
    assert torch.allclose(out.sum(1), torch.ones(2))
    assert float(out[:, 1].mean()) > 0.2  # the under-predicted class is boosted
    assert torch.allclose(out[0], torch.tensor([0.9 / 0.8, 0.1 / 0.2]) / (0.9 / 0.8 + 0.5))
