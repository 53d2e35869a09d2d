import math

import torch

from models.ema import ModelEMA
from models.losses import (
    DistributionAlignment,
    FixedThreshold,
    FlexMatchThreshold,
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


def test_unlabeled_loss_is_positive_and_its_gradient_reaches_the_student_only():
    # The trap USB's Mean Teacher fell into: the loss must flow into the strong view's
    # logits (the student), never into the teacher's weak-view prediction.
    torch.manual_seed(0)
    student = torch.nn.Linear(4, 3)
    teacher = torch.nn.Linear(4, 3)
    x_weak, x_strong = torch.randn(8, 4), torch.randn(8, 4)
    probs = torch.softmax(teacher(x_weak), 1)
    mask, pseudo = FixedThreshold(0.0, 3).select(probs)
    loss = consistency_loss(student(x_strong), pseudo, mask)
    assert float(loss.detach()) > 0
    loss.backward()
    assert student.weight.grad is not None and float(student.weight.grad.abs().sum()) > 0
    assert teacher.weight.grad is None


def test_fixed_threshold_mask():
    probs = torch.tensor([[0.96, 0.04], [0.6, 0.4], [0.01, 0.99]])
    mask, pseudo = FixedThreshold(0.95, 2).select(probs)
    assert mask.tolist() == [1.0, 0.0, 1.0] and pseudo.tolist() == [0, 0, 1]


def test_flexmatch_threshold_lowers_for_under_predicted_classes():
    thr = FlexMatchThreshold(
        0.9, num_classes=3, num_unlabeled=10, device=torch.device("cpu"), warmup=False
    )
    # Confident predictions: six examples of class 0, two of class 1, none of class 2.
    probs = torch.tensor([[0.95, 0.03, 0.02]] * 6 + [[0.02, 0.95, 0.03]] * 2)
    thr.select(probs, torch.arange(8))
    t = thr.thresholds()
    # beta = (1, 1/3, 0) -> tau * beta / (2 - beta) = (0.9, 0.18, 0)
    assert torch.allclose(t, torch.tensor([0.9, 0.9 * (1 / 3) / (2 - 1 / 3), 0.0]))
    assert t[2] < t[1] < t[0]
    # A class-1 prediction at 0.5 confidence now passes; a class-0 one does not.
    mask, _ = thr.select(torch.tensor([[0.1, 0.5, 0.4], [0.5, 0.3, 0.2]]), torch.tensor([8, 9]))
    assert mask.tolist() == [1.0, 0.0]


def test_flexmatch_warmup_counts_unused_examples():
    thr = FlexMatchThreshold(0.9, 2, num_unlabeled=100, device=torch.device("cpu"))
    thr.select(torch.tensor([[0.95, 0.05]] * 10), torch.arange(10))
    # 10 confident of class 0, 90 unused: beta_0 = 10/90.
    b = 10 / 90
    assert torch.allclose(thr.thresholds(), torch.tensor([0.9 * b / (2 - b), 0.0]))


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
