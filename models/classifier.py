"""The classifier semilabel trains and ships: a network with its input normalization,
rebuilt from a small config (never unpickled), and the helpers to run it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from models.networks import build_network


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild a `Classifier` before loading its state dict: a model
    is stored as this config plus weights, never as a pickled module."""

    network: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        return cls(
            network=str(d["network"]),
            num_classes=int(d["num_classes"]),
            in_channels=int(d["in_channels"]),
            image_size=int(d["image_size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )


class Classifier(nn.Module):
    """A network with its input normalization: takes float images in [0, 1]."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.config: ClassifierConfig | None = None  # set by build_classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.net((x - self.mean) / self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D)
        return self.net.features((x - self.mean) / self.std)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penultimate layer (B, D) and the logits (B, K) from one forward pass."""
        z = self.features(x)
        return z, self.net.head(z)


def build_classifier(config: ClassifierConfig) -> Classifier:
    """A fresh classifier (random weights) of the given shape; load a state dict into it."""
    net = build_network(config.network, config.num_classes, config.in_channels, config.image_size)
    model = Classifier(net, config.mean, config.std)
    model.config = config
    return model


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu. Asking for an absent device fails now."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "train.device is 'cuda' but CUDA is not available on this machine; "
            "use train.device=auto or cpu"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("train.device is 'mps' but MPS is not available on this machine")
    return dev


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (B, C, H, W), on a sample."""
    sample = to_float(x[: min(len(x), 10_000)])
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 1024
) -> torch.Tensor:
    """Softmax probabilities (N, K) for uint8 images (N, C, H, W), on the CPU."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i : i + batch_size].to(device, non_blocking=True))
        out.append(torch.softmax(model(xb).float(), 1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
