"""Classifiers chosen by name: a small CNN for 28×28 on CPU, WideResNet-28-2 (the
standard SSL backbone), and torchvision classification models for larger images.

Every network has `features(x) -> (B, D)` (the penultimate layer, used for
embeddings) and `forward(x) -> (B, num_classes)` logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NETWORKS = ("small_cnn", "wrn28_2", "resnet18", "resnet34", "resnet50")
TORCHVISION_NETWORKS = ("resnet18", "resnet34", "resnet50")
# "small": 3x3 stride-1 first convolution, no max-pool; "torchvision": torchvision's
# 7x7 stride-2 convolution and max-pool (the stem its pretrained weights were trained with)
STEMS = ("small", "torchvision")


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Four 3×3 conv blocks and a linear head: ~0.3M parameters, fast on a CPU."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _conv_bn(in_channels, w),
            _conv_bn(w, w),
            nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            _conv_bn(w, 2 * w),
            _conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            _conv_bn(2 * w, 4 * w),  # (B, 4w, H/4, W/4)
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (B, 4w)
        )
        self.head = nn.Linear(4 * w, num_classes)
        self.feature_dim = 4 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, bn_momentum: float = 0.001):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=bn_momentum)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (
            None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.leaky_relu(self.bn1(x), 0.1)
        y = self.conv1(o)
        y = self.conv2(F.leaky_relu(self.bn2(y), 0.1))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-k as used by FixMatch/USB (leaky ReLU 0.1, BN momentum 0.001)."""

    def __init__(self, num_classes: int, in_channels: int = 3, depth: int = 28, widen: int = 2):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers = []
        for i, stride in enumerate((1, 2, 2)):
            for j in range(n):
                layers.append(
                    _WideBlock(
                        widths[i] if j == 0 else widths[i + 1],
                        widths[i + 1],
                        stride if j == 0 else 1,
                    )
                )
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(widths[3], momentum=0.001)
        self.head = nn.Linear(widths[3], num_classes)
        self.feature_dim = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.bn(self.blocks(self.stem(x))), 0.1)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TorchvisionClassifier(nn.Module):
    """A torchvision ResNet, randomly initialized (no downloads; `models.pretrained` loads
    weights into it), with its first convolution taking `in_channels`. Its stem is
    torchvision's own (7x7 stride-2 conv + max-pool: what pretrained weights expect) or,
    `stem="small"`, a 3x3 stride-1 conv without max-pool, which keeps a small image's
    resolution (torchvision's would take a 32 px image to 8 px before the first block)."""

    def __init__(
        self, arch: str, num_classes: int, in_channels: int, image_size: int, stem: str = ""
    ):
        super().__init__()
        import torchvision

        stem = stem or default_stem(arch, image_size)
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if stem == "small":
            net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.head = net.fc
        net.fc = nn.Identity()
        self.body = net  # torchvision's module names: its state dict less `fc.*`
        self.feature_dim = self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def default_stem(name: str, image_size: int) -> str:
    """The stem a network gets unless it is asked for another: torchvision networks keep
    their own above 64 px and get the small one at 64 px or less; small_cnn and wrn28_2
    have only a small stem (3x3 stride 1). Models stored before the stem was recorded
    were built by this rule."""
    return "torchvision" if name in TORCHVISION_NETWORKS and image_size > 64 else "small"


def build_network(
    name: str, num_classes: int, in_channels: int, image_size: int, stem: str | None = None
) -> nn.Module:
    """A fresh network by name (see NETWORKS); `stem` None: `default_stem`."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    stem = stem or default_stem(name, image_size)
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    if name in TORCHVISION_NETWORKS:
        return TorchvisionClassifier(name, num_classes, in_channels, image_size, stem)
    if stem != "small":
        raise ValueError(f"{name} has only the small stem, not {stem!r}")
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels)
    return WideResNet(num_classes, in_channels, depth=28, widen=2)
