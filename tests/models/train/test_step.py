"""One training step's pieces (`models/train/step.py`): the learning rate, the
optimizer, the labeled batch's draw, the semi-supervised loss (USB's `train_step`),
and the evaluation on the held-out set."""

import math

import pytest
import torch

from models import TrainData, student_step
from models.ema import ModelEMA
from models.thresholds import FixedThreshold
from models.train.step import evaluate, labeled_groups, lr_at, make_optimizer, sample_labeled
from tests.models.conftest import settings

CPU = torch.device("cpu")


def test_the_learning_rate_decays_on_fixmatch_cosine():
    assert lr_at(0, 100, 0.03) == 0.03
    assert lr_at(50, 100, 0.03) == pytest.approx(0.03 * math.cos(7 * math.pi / 32))
    assert lr_at(100, 100, 0.03) == pytest.approx(0.03 * math.cos(7 * math.pi / 16))
    assert lr_at(0, 0, 0.03) == 0.03  # a phase of no steps: no division by zero


def test_weights_decay_but_biases_and_norm_parameters_do_not():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    opt = make_optimizer(model, settings(lr=0.1, weight_decay=0.01), CPU)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv and linear biases, BatchNorm weight and bias
    assert decay["lr"] == 0.1 and decay["momentum"] == 0.9 and decay["nesterov"]


def test_a_labeled_batch_keeps_its_share_of_human_labels():
    cpu = torch.device("cpu")
    human_lb = torch.zeros(1000, dtype=torch.bool)
    human_lb[:10] = True  # 10 human labels among 990 weak ones
    groups = labeled_groups(human_lb, 0.5, 32, cpu)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = sample_labeled(1000, groups, 32, gen, cpu)
        assert idx.shape == (32,) and int(human_lb[idx].sum()) == 16
    # Uniform draws (the default) give about 0.3 human rows per batch of 32.
    uniform = [int(human_lb[sample_labeled(1000, None, 32, gen, cpu)].sum()) for _ in range(20)]
    assert sum(uniform) < 20
    # Nothing to balance: uniform draws.
    assert labeled_groups(torch.ones(5, dtype=torch.bool), 0.5, 32, cpu) is None
    assert labeled_groups(human_lb, 0.0, 32, cpu) is None


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


class _ReadsTheClass(torch.nn.Module):
    """Predicts the class written in each image's first pixel (uint8 0, 1 or 2), with
    `confidence` on it and the rest spread over the other classes."""

    def __init__(self, confidence: float, wrong_for: int | None = None):
        super().__init__()
        self.confidence, self.wrong_for = confidence, wrong_for
        self.unused = torch.nn.Parameter(torch.zeros(1))  # ModelEMA copies parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x[:, 0, 0, 0] * 255).round().long()
        if self.wrong_for is not None:
            y = torch.where(y == self.wrong_for, (y + 1) % 3, y)
        rest = (1 - self.confidence) / 2
        probs = torch.full((len(x), 3), rest)
        probs[torch.arange(len(x)), y] = self.confidence
        return probs.log()


def test_evaluation_reports_accuracies_and_the_precision_of_the_kept_pseudo_labels():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0] = y.to(torch.uint8)
    data = TrainData(x, y, torch.ones(6), x, x_eval=x, y_eval=y)
    s = settings(pseudo_label_source="teacher")
    teacher = _ReadsTheClass(0.9, wrong_for=2)  # wrong on class 2: 4 of 6 right
    student = _ReadsTheClass(0.6)  # always right, but under a threshold of 0.7
    # the teacher phase: only the teacher's accuracy
    only = evaluate(student, None, None, FixedThreshold(0.7, 3), data, s, CPU)
    assert only == {"eval_teacher_accuracy": 1.0}
    ev = evaluate(student, ModelEMA(student, 0.5), teacher, FixedThreshold(0.7, 3), data, s, CPU)
    assert ev["eval_teacher_accuracy"] == pytest.approx(4 / 6)
    assert ev["eval_student_accuracy"] == 1.0
    # the teacher is the pseudo-label source: all 6 kept (0.9 >= 0.7), 4 of them right
    assert ev["eval_pseudo_label_coverage"] == 1.0 and ev["eval_pseudo_label_count"] == 6
    assert ev["eval_pseudo_label_precision"] == pytest.approx(4 / 6)
    # the EMA as the source: none clears the threshold, so no precision to report
    ema = evaluate(
        student,
        ModelEMA(student, 0.5),
        teacher,
        FixedThreshold(0.7, 3),
        data,
        settings(pseudo_label_source="ema"),
        CPU,
    )
    assert ema["eval_pseudo_label_count"] == 0
    assert math.isnan(ema["eval_pseudo_label_precision"])
