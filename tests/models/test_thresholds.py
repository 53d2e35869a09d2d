"""Which pseudo-labels count and how much: fixed, FlexMatch, FreeMatch, SoftMatch; each
against numbers worked out by hand, and wired through the training step and loop."""

import math
from pathlib import Path

import pytest
import torch

from models import Callback, fit
from models.losses import consistency_loss
from models.thresholds import (
    FixedThreshold,
    FlexMatchThreshold,
    FreeMatchThreshold,
    SoftMatchWeight,
    make_threshold,
    self_adaptive_fairness,
)
from models.train import student_step
from tests.models.conftest import settings, toy_data

CPU = torch.device("cpu")


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


def test_freematch_thresholds_follow_the_models_confidence_per_class():
    thr = FreeMatchThreshold(3, CPU, momentum=0.5)
    assert torch.allclose(thr.thresholds(), torch.full((3,), 1 / 3))  # tau_0 = 1/K
    batch = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.4, 0.35, 0.25]])
    mask, pseudo = thr.select(batch)
    # update first: tau = 0.5/3 + 0.5 * mean(0.8, 0.6, 0.4) = 0.466667
    # p_model = 0.5/3 + 0.5 * (0.6, 0.25, 0.15) = (0.466667, 0.291667, 0.241667)
    # thresholds = tau * p_model / max(p_model) = (0.466667, 0.291667, 0.241667)
    assert float(thr.global_threshold) == pytest.approx(0.466667, abs=1e-6)
    assert torch.allclose(thr.p_model, torch.tensor([0.466667, 0.291667, 0.241667]), atol=1e-6)
    assert torch.allclose(thr.thresholds(), torch.tensor([0.466667, 0.291667, 0.241667]), atol=1e-6)
    assert torch.allclose(thr.label_hist, torch.tensor([2 / 3, 1 / 6, 1 / 6]))  # all said 0
    assert pseudo.tolist() == [0, 0, 0] and mask.tolist() == [1.0, 1.0, 0.0]  # 0.4 < 0.4667
    # a class-1 prediction at 0.45 counts (FlexMatch or a fixed 0.95 would drop it):
    # tau = 0.5 * 0.466667 + 0.5 * 0.45 = 0.458333; p_model(1) / max = 0.370833 / 0.383333
    mask, pseudo = thr.select(torch.tensor([[0.3, 0.45, 0.25]]))
    assert float(thr.thresholds()[1]) == pytest.approx(0.458333 * 0.370833 / 0.383333, abs=1e-5)
    assert pseudo.tolist() == [1] and mask.tolist() == [1.0]


def test_freematch_fairness_loss_matches_hand_computation_and_reaches_masked_logits_only():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    logits = probs.log().requires_grad_(True)
    mask = torch.tensor([1.0, 1.0, 0.0])
    p_model, label_hist = torch.tensor([0.7, 0.3]), torch.tensor([0.5, 0.5])
    loss = self_adaptive_fairness(logits, mask, p_model, label_hist)
    # kept: rows 0 and 1; their histogram (0.5, 0.5), mean (0.55, 0.45) -> (0.55, 0.45)
    # target p_model / label_hist normalized = (0.7, 0.3)
    expected = 0.7 * math.log(0.55) + 0.3 * math.log(0.45)  # -0.658038
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[:2].abs().sum() > 0 and torch.equal(logits.grad[2], torch.zeros(2))
    # nothing masked in: no term, and no gradient
    none = self_adaptive_fairness(logits, torch.zeros(3), p_model, label_hist)
    assert float(none) == 0.0 and not none.requires_grad


def test_freematch_fairness_is_wired_into_the_student_loss_by_its_weight():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x_lb, x_w, x_s = (torch.randn(n, 4, generator=g) for n in (2, 6, 6))
    y_lb = torch.tensor([0, 1])
    plain = student_step(
        model, x_lb, y_lb, torch.ones(2), x_w, x_s, torch.arange(6), thr=FreeMatchThreshold(3, CPU)
    )
    thr = FreeMatchThreshold(3, CPU, fairness_weight=0.5)
    out = student_step(model, x_lb, y_lb, torch.ones(2), x_w, x_s, torch.arange(6), thr=thr)
    assert "loss_fairness" not in plain.metrics and "loss_fairness" in out.metrics
    assert float(out.metrics["loss_fairness"]) != 0.0
    logits_s = model(x_s)
    fair = 0.5 * self_adaptive_fairness(logits_s, out.mask, thr.p_model, thr.label_hist)
    assert float(out.loss) == pytest.approx(float(plain.loss) + float(fair), abs=1e-5)


def test_softmatch_weights_are_a_truncated_gaussian_of_confidence():
    w = SoftMatchWeight(2, CPU, momentum=0.0, n_sigma=2.0)  # state = this batch's statistics
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]])
    weight, pseudo = w.select(probs)
    # conf (0.9, 0.7, 0.6): mu = 0.733333, unbiased var = 0.023333
    assert float(w.mu) == pytest.approx(0.733333, abs=1e-5)
    assert float(w.var) == pytest.approx(0.023333, abs=1e-5)
    # below mu: exp(-(conf - mu)^2 / (2 var / n_sigma^2)); at or above: 1
    assert pseudo.tolist() == [0, 0, 1]
    expected = [
        1.0,
        math.exp(-(0.033333**2) / (2 * 0.023333 / 4)),
        math.exp(-(0.133333**2) / 0.011667),
    ]
    assert weight.tolist() == pytest.approx(expected, abs=1e-3)  # (1, 0.909, 0.218)
    # running statistics start at 1/K and 1, and move by the momentum
    slow = SoftMatchWeight(2, CPU, momentum=0.5)
    slow.select(probs)
    assert float(slow.mu) == pytest.approx(0.5 * 0.5 + 0.5 * 0.733333, abs=1e-5)
    assert float(slow.var) == pytest.approx(0.5 * 1.0 + 0.5 * 0.023333, abs=1e-5)
    assert slow.thresholds().tolist() == pytest.approx([float(slow.mu)] * 2)


def test_softmatch_weights_scale_each_examples_gradient_in_the_student_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x_lb, x_w, x_s = torch.randn(2, 4), torch.randn(5, 4), torch.randn(5, 4)
    w = SoftMatchWeight(2, CPU, momentum=0.0)
    out = student_step(
        model, x_lb, torch.tensor([0, 1]), torch.ones(2), x_w, x_s, torch.arange(5), thr=w
    )
    weight = out.mask
    assert ((weight > 0) & (weight <= 1)).all() and (weight < 1).any()  # soft, not 0/1
    logits_s = model(x_s).detach().requires_grad_(True)
    consistency_loss(logits_s, out.pseudo, weight).backward()
    one_hot = torch.nn.functional.one_hot(out.pseudo, 2).float()
    by_hand = weight[:, None] * (torch.softmax(logits_s.detach(), 1) - one_hot) / 5
    assert torch.allclose(logits_s.grad, by_hand, atol=1e-6)


@pytest.mark.parametrize("kind", ["freematch", "softmatch"])
def test_the_loop_trains_with_each_rule_and_resumes_its_state_exactly(kind, tmp_path: Path):
    s = settings(threshold=kind, threshold_momentum=0.9, fairness_weight=0.01)
    rows: list[dict] = []

    class Stop(Callback):
        def on_progress(self, step, total):
            if step == 17:  # the checkpoint of step 15 is on disk
                raise KeyboardInterrupt

    class Collect(Callback):
        def on_metrics(self, step, metrics):
            rows.append(metrics)

    with pytest.raises(KeyboardInterrupt):
        fit(toy_data(), s, run_dir=tmp_path / "run", callbacks=[Stop()])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["threshold"]
    assert state and all(torch.is_tensor(v) for v in state.values())
    resumed = fit(toy_data(), s, run_dir=tmp_path / "run")
    straight = fit(toy_data(), s, callbacks=[Collect()])
    assert resumed.resumed_from == 15
    for name, p in straight.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name
    student = [m for m in rows if m.get("phase") == 1.0]
    assert student and any(m["loss_unsup"] > 0 for m in student)
    if kind == "freematch":
        assert all("loss_fairness" in m for m in student)
    else:  # soft weights: the mask rate is a mean weight, strictly between 0 and 1
        assert any(0 < m["mask_rate"] < 1 for m in student)


def test_make_threshold_names_every_rule_and_refuses_others():
    kinds = {"fixed": FixedThreshold, "flexmatch": FlexMatchThreshold}
    kinds |= {"freematch": FreeMatchThreshold, "softmatch": SoftMatchWeight}
    for kind, cls in kinds.items():
        thr = make_threshold(kind, tau=0.9, num_classes=3, num_unlabeled=10, device=CPU)
        assert type(thr) is cls
    with pytest.raises(ValueError, match="unknown threshold 'nope'"):
        make_threshold("nope", tau=0.9, num_classes=3, num_unlabeled=10, device=CPU)
