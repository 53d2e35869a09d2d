"""Starting a torchvision ResNet from saved weights (`train.pretrained`): torchvision's
ImageNet weights, or a state dict in a file.

The weights' own stem is kept (7x7 stride-2 conv and max-pool, whatever the image size)
and the input is normalized as they expect (ImageNet mean and std; with colour-invariant
training, each image by its own channel statistics, which puts it on the same scale); for
grayscale input the first convolution's weights are summed over the RGB axis. The
classification layer is new: every other weight must load, or the error lists what did
not, naming the file.

Only training reads the weights: a trained model is stored with its `ClassifierConfig`
(stem and normalization included) and its whole state dict, so rebuilding it needs
neither the file nor the network.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from models.classifier import Classifier, ClassifierConfig, build_classifier
from models.networks import TORCHVISION_NETWORKS, TorchvisionClassifier

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
# what torchvision's ImageNet weights expect (their `transforms()`), per RGB channel
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD = ("fc.weight", "fc.bias")  # torchvision's classification layer: always new
_WEIGHTS_ENUM = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}
_SHOWN = 8  # keys listed per kind in an error


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be read or do not fit the network; `source` is the
    file (or `imagenet`), the key lists say what did not fit."""

    def __init__(
        self,
        source: str,
        message: str,
        missing: tuple[str, ...] = (),
        unexpected: tuple[str, ...] = (),
        mismatched: tuple[str, ...] = (),
    ):
        super().__init__(message)
        self.source = source
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


def pretrained_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the weights expect: ImageNet's per RGB channel; for one channel,
    their averages (the summed first convolution sees one grey channel standing in for
    three)."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if channels == 1:
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    raise ValueError(f"pretrained weights take 1 or 3 channels, not {channels}")


def pretrained_config(
    network: str, num_classes: int, in_channels: int, image_size: int, normalize: str = "dataset"
) -> ClassifierConfig:
    """The classifier shape a pretrained start gets: torchvision's stem and the
    normalization of its weights (`normalize="per_image"`: each image standardized by its
    own channel statistics instead, already on the scale those weights expect)."""
    if network not in TORCHVISION_NETWORKS:
        raise ValueError(
            f"pretrained weights need a torchvision network ({', '.join(TORCHVISION_NETWORKS)}),"
            f" not {network!r}"
        )
    mean, std = pretrained_normalization(in_channels)
    if normalize == "per_image":
        mean, std = (0.0,) * in_channels, (1.0,) * in_channels
    return ClassifierConfig(
        network, num_classes, in_channels, image_size, mean, std, "torchvision", normalize
    )


def pretrained_classifier(
    network: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    source: str,
    normalize: str = "dataset",
) -> Classifier:
    """A classifier whose body starts from `source` (`imagenet` or a state-dict file) and
    whose classification layer is new (random)."""
    config = pretrained_config(network, num_classes, in_channels, image_size, normalize)
    model = build_classifier(config)
    load_pretrained(model, source)
    return model


def read_state_dict(source: str, network: str) -> dict[str, torch.Tensor]:
    """The weights `source` names, as a plain torchvision state dict: `imagenet` reads
    torchvision's file from the torch hub cache (`torch.hub.get_dir()/checkpoints`),
    downloading it there when missing; anything else is a file read with
    `weights_only=True` (tensors and plain values only), which may hold the state dict
    itself, wrap it in {"state_dict": ...}, or prefix its keys with `module.` (saved from
    DataParallel / DDP)."""
    if source == IMAGENET:
        state = _imagenet_state_dict(network)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                source,
                f"train.pretrained: no such file {source!r}: give the path of a saved "
                f"state dict (.pt/.pth), `{IMAGENET}`, or null",
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise PretrainedWeightsError(
                source,
                f"train.pretrained file {source!r} holds objects other than tensors and plain "
                "values, so it was not loaded (loading it could run code): save the model's "
                "state_dict() instead of the model",
            ) from None
        except (RuntimeError, OSError, EOFError) as exc:
            raise PretrainedWeightsError(
                source, f"train.pretrained file {source!r} is not a readable torch file: {exc}"
            ) from None
    return _unwrap(state, source)


def _imagenet_state_dict(network: str) -> dict:
    import torchvision

    weights = getattr(torchvision.models, _WEIGHTS_ENUM[network]).DEFAULT
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(
            map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        raise PretrainedWeightsError(
            IMAGENET,
            f"train.pretrained=imagenet: the torchvision weights {weights} were not in the "
            f"torch hub cache and could not be downloaded from {weights.url} ({exc}). Put "
            f"that file, as {filename}, into {folder} (copy it from a machine with network), "
            "or set train.pretrained to the path of a saved state dict",
        ) from None


def _unwrap(state: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise PretrainedWeightsError(
            source,
            f"train.pretrained file {source!r} holds {type(state).__name__}, not a state dict "
            "(a dict of parameter names to tensors)",
        )
    if all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module.") :]: v for k, v in state.items()}
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise PretrainedWeightsError(
            source,
            f"train.pretrained file {source!r} is not a state dict: {len(not_tensors)} entries "
            f"are not tensors ({', '.join(not_tensors[:_SHOWN])})",
        )
    return {str(k): v for k, v in state.items()}


def load_pretrained(model: Classifier, source: str) -> None:
    """Load `source`'s weights into `model`'s torchvision body, in place; the
    classification layer keeps its fresh weights. Every body weight must be in the file
    with its shape, and the file must hold nothing else (but the old `fc`)."""
    net = model.net
    if not isinstance(net, TorchvisionClassifier) or model.config is None:
        raise ValueError("pretrained weights load into a torchvision network from build_classifier")
    body = net.body
    network, channels = model.config.network, model.config.in_channels
    state = read_state_dict(source, network)
    state = {k: v for k, v in state.items() if k not in HEAD}
    conv1 = state.get("conv1.weight")
    # grayscale input: its one channel stands in for R, G and B alike
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3 and channels == 1:
        state["conv1.weight"] = conv1.sum(1, keepdim=True)
    own = body.state_dict()
    # BatchNorm's step counter is not a weight; torchvision's older files lack it
    missing = tuple(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = tuple(k for k in state if k not in own)
    mismatched = tuple(
        f"{k} {tuple(state[k].shape)} (the network's: {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [
            f"{what} {len(keys)}: {', '.join(keys[:_SHOWN])}{', ...' if len(keys) > _SHOWN else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", mismatched),
            )
            if keys
        ]
        raise PretrainedWeightsError(
            source,
            f"train.pretrained {source!r} does not fit train.network={network} with "
            f"{channels} input channels and torchvision's stem: "
            + "; ".join(parts)
            + f". Give a torchvision {network} state dict (torch.save(model.state_dict(), path))",
            missing,
            unexpected,
            mismatched,
        )
    body.load_state_dict(state, strict=False)  # strict but for num_batches_tracked
    log.info("started %s from pretrained weights %s (new classification layer)", network, source)
