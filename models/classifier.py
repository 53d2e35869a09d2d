"""The classifier semilabel trains and ships: a network with its input normalization,
rebuilt from a small config (never unpickled), and the helpers to run it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from models.networks import STEMS, build_network, default_stem

NORMALIZATIONS = ("dataset", "per_image")
PER_IMAGE_MIN_STD = 0.02  # in [0, 1] units: ~5 grey levels


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
    # "small" or "torchvision" (models.networks.STEMS); None: the network's default for
    # the image size (`default_stem`), which is also how models stored before the stem was
    # recorded were built, so their specs rebuild the same architecture
    stem: str | None = None
    # "dataset": (x - mean) / std with the stored statistics; "per_image": each image's
    # channels first standardized by their own mean and std (colour-invariant training,
    # `AugmentSettings.colour`), then mean and std as stored (0 and 1 for it)
    normalize: str = "dataset"

    def __post_init__(self) -> None:
        if self.stem is None:
            object.__setattr__(self, "stem", default_stem(self.network, self.image_size))
        elif self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; choose one of {', '.join(STEMS)}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {self.normalize!r}; choose one of "
                f"{', '.join(NORMALIZATIONS)}"
            )

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
            stem=d.get("stem"),  # absent from specs stored before it was recorded
            normalize=str(d.get("normalize", "dataset")),  # likewise
        )


class Classifier(nn.Module):
    """A network with its input normalization: takes float images in [0, 1]."""

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        normalize: str = "dataset",
    ):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.per_image = normalize == "per_image"
        self.config: ClassifierConfig | None = None  # set by build_classifier

    def normalized(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W), what net sees
        if self.per_image:
            # each channel of each image to mean 0, std 1: the image's own colour cast and
            # contrast are gone (a floor on the std keeps flat channels from blowing up noise)
            mu = x.mean(dim=(2, 3), keepdim=True)
            sigma = x.std(dim=(2, 3), keepdim=True).clamp_min(PER_IMAGE_MIN_STD)
            x = (x - mu) / sigma
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.net(self.normalized(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D)
        return self.net.features(self.normalized(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penultimate layer (B, D) and the logits (B, K) from one forward pass."""
        z = self.features(x)
        return z, self.net.head(z)


def build_classifier(config: ClassifierConfig) -> Classifier:
    """A fresh classifier (random weights) of the given shape; load a state dict into it."""
    net = build_network(
        config.network, config.num_classes, config.in_channels, config.image_size, config.stem
    )
    model = Classifier(net, config.mean, config.std, config.normalize)
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


def inference_input(x: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images (B, C, H, W) as the float [0, 1] batch a model sees at inference, on
    `device`, in channels_last where that speeds convolutions (oneDNN on the CPU, CUDA),
    as training does: small_cnn scores 64x64 RGB images ~1.5x faster on a 2-core CPU,
    with the same probabilities (bench/RESULTS.md)."""
    device = torch.device(device)
    out = to_float(x.to(device, non_blocking=True))
    if out.dim() == 4 and device.type in ("cpu", "cuda"):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (B, C, H, W), on a sample."""
    sample = to_float(x[: min(len(x), 10_000)])
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


INFERENCE_VALUES = 1 << 22  # input values (images x C x H x W) per forward pass


def inference_rows(image_shape: Sequence[int]) -> int:
    """Images per forward pass at inference, for images of `image_shape` (C, H, W).
    Activations grow with the pixels in a batch, so the batch shrinks as images grow:
    1024 at 1x64x64, 341 at 3x64x64, 27 at 3x224x224 (a fixed 1024 would need tens of GB
    for photos)."""
    values = 1
    for side in image_shape:
        values *= int(side)
    return max(1, INFERENCE_VALUES // max(values, 1))


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> torch.Tensor:
    """Softmax probabilities (N, K) for uint8 images (N, C, H, W), on the CPU, in
    batches of `batch_size` images (default: `inference_rows` of the image shape)."""
    batch_size = batch_size or inference_rows(x.shape[1:])
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = inference_input(x[i : i + batch_size], device)
        out.append(torch.softmax(model(xb).float(), 1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
