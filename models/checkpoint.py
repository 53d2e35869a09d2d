"""Training checkpoints: written atomically, read back as tensors and plain values only."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

CHECKPOINT = "checkpoint.pt"


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds more than tensors and plain values (loading it could run code)."""


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill never leaves a half-written checkpoint


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """A checkpoint's state, read with `weights_only=True`: tensors and plain values only,
    so a file planted in the run folder cannot run code when it is read."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        why = [ln.strip() for ln in str(exc).splitlines() if "WeightsUnpickler error" in ln]
        raise UnsafeCheckpointError(
            f"checkpoint {str(path)!r} holds objects other than tensors and plain values, "
            "so it was not loaded: loading it could run code"
            + (f" ({why[0]})" if why else "")
            + ". Delete it to start this training run over."
        ) from None
