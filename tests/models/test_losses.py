import math

import pytest
import torch

from models.ema import ModelEMA
from models.losses import (
    DistributionAlignment,
    consistency_loss,
    supervised_loss,
)
from models.thresholds import FixedThreshold
from models.train import student_step


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


def _tiny_net() -> torch.nn.Module:
    # No BatchNorm: in train mode BatchNorm couples a batch's samples, so the strong
    # view's loss would reach the weak view through the batch statistics (by design of
    # FixMatch's shared forward); without it, any gradient on the weak view is a wiring bug.
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3)
    )


def _views(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_lb = torch.rand(4, 1, 8, 8, generator=g)
    y_lb = torch.tensor([0, 1, 2, 0])
    x_w = torch.rand(6, 1, 8, 8, generator=g).requires_grad_()
    x_s = torch.rand(6, 1, 8, 8, generator=g).requires_grad_()
    return x_lb, y_lb, x_w, x_s


@pytest.mark.parametrize("source", ["self", "teacher"])
def test_the_unlabeled_gradient_reaches_the_strong_view_only(source):
    # USB's Mean Teacher trap: the unlabeled loss must flow into the strong view's logits,
    # never into the weak view nor the pseudo-label source.
    torch.manual_seed(0)
    student, teacher = _tiny_net(), _tiny_net()
    x_lb, y_lb, x_w, x_s = _views()
    out = student_step(
        student,
        x_lb,
        y_lb,
        torch.ones(4),
        x_w,
        x_s,
        torch.arange(6),
        thr=FixedThreshold(0.0, 3),  # every pseudo-label used
        source=None if source == "self" else teacher,
    )
    assert float(out.metrics["loss_unsup"]) > 0 and float(out.metrics["mask_rate"]) == 1.0
    out.loss.backward()
    assert x_s.grad is not None and float(x_s.grad.abs().sum()) > 0
    assert x_w.grad is None or float(x_w.grad.abs().sum()) == 0.0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_student_step_loss_matches_hand_computation():
    torch.manual_seed(1)
    model, teacher = _tiny_net(), _tiny_net()
    x_lb, y_lb, x_w, x_s = _views(1)
    w = torch.tensor([1.0, 0.5, 1.0, 0.25])
    with torch.no_grad():
        tau = float(torch.softmax(teacher(x_w), 1).max(1).values.median())  # keeps about half
    out = student_step(
        model,
        x_lb,
        y_lb,
        w,
        x_w,
        x_s,
        torch.arange(6),
        thr=FixedThreshold(tau, 3),
        source=teacher,
        lambda_u=2.0,
    )
    with torch.no_grad():
        probs = torch.softmax(teacher(x_w), 1)
        conf, pseudo = probs.max(1)
        mask = (conf >= tau).float()
        ce_s = torch.nn.functional.cross_entropy(model(x_s), pseudo, reduction="none")
        ce_l = torch.nn.functional.cross_entropy(model(x_lb), y_lb, reduction="none")
        expected = (ce_l * w).mean() + 2.0 * (ce_s * mask).mean()
    assert 0 < float(mask.sum()) < 6  # some kept, some masked: the mask matters
    assert math.isclose(float(out.loss.detach()), float(expected), rel_tol=1e-5)
    assert out.pseudo.tolist() == pseudo.tolist()


def test_distribution_alignment_moves_predictions_toward_the_target():
    da = DistributionAlignment(torch.tensor([1.0, 1.0]), momentum=0.0)
    out = da(torch.tensor([[0.9, 0.1], [0.7, 0.3]]))  # running mean (0.8, 0.2)
    assert torch.allclose(out.sum(1), torch.ones(2))
    assert float(out[:, 1].mean()) > 0.2  # the under-predicted class is boosted
    assert torch.allclose(out[0], torch.tensor([0.9 / 0.8, 0.1 / 0.2]) / (0.9 / 0.8 + 0.5))


def test_ema_update_is_exact():
    online = torch.nn.BatchNorm1d(2)
    ema = ModelEMA(online, decay=0.9)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([2.0, 3.0]))
        online.running_mean.copy_(torch.tensor([1.0, -1.0]))
        online.num_batches_tracked.fill_(5)
    ema.update(online)
    # weight was (1, 1): 0.9 * 1 + 0.1 * w
    assert torch.allclose(ema.module.weight, torch.tensor([1.1, 1.2]))
    assert torch.allclose(ema.module.running_mean, torch.tensor([0.1, -0.1]))
    assert int(ema.module.num_batches_tracked) == 5
    assert not any(p.requires_grad for p in ema.module.parameters())
