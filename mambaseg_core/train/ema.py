"""Exponential moving average of a model's weights (optional; not part of the official recipe)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEma:
    """Keeps `module`, a frozen copy whose floating parameters and buffers follow
    ema = d * ema + (1 - d) * live after every optimiser step.

    With `warmup`, d = min(decay, (1 + n) / (10 + n)) after n updates, so early, random weights fade fast.
    Integer buffers (BatchNorm's `num_batches_tracked`) are copied.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        live = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = live[name].detach()
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(decay).add_(value.to(ema_value.dtype), alpha=1.0 - decay)
            else:
                ema_value.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
