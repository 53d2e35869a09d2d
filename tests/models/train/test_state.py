"""One run's state (`models/train/state.py`): how `set_up` prepares a run, what a
checkpoint saves is what a resumed run continues from, and a checkpoint of another run
is never resumed."""

import dataclasses
from pathlib import Path

import pytest
import torch

from models.checkpoint import CHECKPOINT
from models.train.loop import teacher_phase
from models.train.state import TrainState
from tests.models.conftest import settings, toy_data


def _state(tmp_path: Path, **kw) -> TrainState:
    run = TrainState.set_up(toy_data(), settings(**kw), None)
    run.ckpt_path = tmp_path / CHECKPOINT
    return run


def test_a_saved_state_resumes_with_the_student_started_and_the_same_next_batch(
    tmp_path: Path,
):
    first = _state(tmp_path)
    teacher_phase(first)  # 10 steps, a checkpoint every 5
    first.start_student()
    first.save()
    again = _state(tmp_path)
    again.resume()
    assert again.step == again.resumed_from == 10
    assert again.teacher is not None and again.ema is not None  # the student had started
    assert again.history == first.history and any("loss_sup" in r for r in again.history)
    for name, p in first.model.state_dict().items():
        assert torch.equal(p, again.model.state_dict()[name]), name
    # the generators continue where they were: the next labeled batch is the same one
    idx_first, x_first = first.labeled_batch()
    idx_again, x_again = again.labeled_batch()
    assert torch.equal(idx_first, idx_again) and torch.equal(x_first, x_again)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path: Path):
    first = _state(tmp_path)
    teacher_phase(first)
    first.save()
    other = _state(tmp_path, lr=0.01)
    other.resume()
    assert other.step == other.resumed_from == 0 and other.teacher is None
    assert other.history == []


def test_set_up_refuses_what_cannot_train_before_any_work():
    data = toy_data()
    no_labels = dataclasses.replace(data, x_lb=data.x_lb[:0], y_lb=data.y_lb[:0])
    with pytest.raises(ValueError, match="no labeled examples"):
        TrainState.set_up(no_labels, settings(), None)
    no_pool = dataclasses.replace(data, x_ulb=data.x_ulb[:0])
    with pytest.raises(ValueError, match="no unlabeled examples"):
        TrainState.set_up(no_pool, settings(), None)
    TrainState.set_up(no_pool, settings(student_steps=0), None)  # the teacher alone: fine


def test_set_up_seeds_and_places_everything_the_steps_use():
    data = toy_data()
    a = TrainState.set_up(data, settings(distribution_alignment="prior"), None)
    assert a.device == torch.device("cpu") and a.step == 0 and a.teacher is None
    assert a.x_lb.dtype == torch.uint8 and a.x_lb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a.x_ulb, data.x_ulb) and a.w_lb.dtype == torch.float32
    assert a.forward is a.model and a.b_lb == 8 and a.n_ulb == len(data.x_ulb)
    # alignment toward the labeled prior (with one added to every class)
    prior = torch.bincount(data.y_lb, minlength=3).float() + 1
    assert torch.allclose(a.align.target, prior / prior.sum())
    assert a.settings_dict["distribution_alignment"] == "prior"
    assert a.fingerprint == data.fingerprint()
    # the same seed: the same initial weights and the same first batch
    b = TrainState.set_up(data, settings(distribution_alignment="prior"), None)
    for name, p in a.model.state_dict().items():
        assert torch.equal(p, b.model.state_dict()[name]), name
    assert torch.equal(a.labeled_batch()[1], b.labeled_batch()[1])
    assert TrainState.set_up(data, settings(), None).align is None  # off by default
