"""An exponential moving average of a model's weights (the evaluation/teacher copy)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEMA:
    """ema = decay * ema + (1 - decay) * online, for parameters and floating-point
    buffers (BatchNorm statistics, so they match the averaged weights); integer
    buffers (batch counters) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        online = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, online, 1.0 - self.decay)
        for eb, b in zip(self.module.buffers(), model.buffers(), strict=True):
            if eb.is_floating_point():
                eb.lerp_(b, 1.0 - self.decay)
            else:
                eb.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
