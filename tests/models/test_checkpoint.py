"""Training checkpoints (`models/checkpoint.py`): written whole or not at all, read back
as tensors and plain values only, and a planted file that would run code refused."""

import os
from pathlib import Path

import pytest
import torch

from models import UnsafeCheckpointError, fit
from models.checkpoint import load_checkpoint, save_checkpoint
from tests.models.conftest import settings, toy_data


def test_a_checkpoint_reads_back_as_written_and_leaves_no_temporary_file(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    state = {"step": 7, "weights": torch.arange(4.0), "history": [{"loss": 0.5}]}
    save_checkpoint(path, state)
    save_checkpoint(path, {**state, "step": 8})  # replaced whole
    back = load_checkpoint(path, torch.device("cpu"))
    assert back["step"] == 8 and back["history"] == [{"loss": 0.5}]
    assert torch.equal(back["weights"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


class _Payload:
    """Unpickling this runs `touch <marker>`: what a planted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_crafted_to_run_code_is_refused_and_never_run(tmp_path: Path):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"step": 5, "settings": {}, "payload": _Payload(marker)}, run_dir / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpointError, match="could run code.*Delete it"):
        fit(toy_data(), settings(), run_dir=run_dir)
    assert not marker.exists()
    # the same file through pickle would have run the payload: the test is not vacuous
    torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path: Path):
    fit(toy_data(), settings(), run_dir=tmp_path, keep_checkpoint=True)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no error: safe
    assert state["step"] == 30
    assert state["classifier"]["network"] == "small_cnn" and state["classifier"]["num_classes"] == 3
