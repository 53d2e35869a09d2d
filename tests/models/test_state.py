"""One run's state (`models/train/state.py`): what a checkpoint saves is what a resumed
run continues from, and a checkpoint of another run is never resumed."""

from pathlib import Path

import torch

from models.checkpoint import CHECKPOINT
from models.train.loop import teacher_phase
from models.train.state import TrainState
from tests.models.test_train import settings, toy_data


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
