"""Per-iteration learning-rate factors for `torch.optim.lr_scheduler.LambdaLR`.

The official recipe is 'fixed' (factor 1.0 at every iteration, no warm-up, spec model.md §6). 'poly' and
'cosine' decay from 1 to `min_lr_ratio` over `total_iters`; any policy may start with a linear warm-up
from `warmup_factor` to 1 over `warmup_iters`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .config import ScheduleConfig


@dataclass(frozen=True)
class LRFactor:
    """A picklable callable: iteration -> LR multiplier (LambdaLR stores its fields in state_dict)."""

    policy: str
    total_iters: int
    warmup_iters: int = 0
    warmup_factor: float = 1e-3
    poly_power: float = 0.9
    min_lr_ratio: float = 0.0

    def __call__(self, iteration: int) -> float:
        if self.policy == "fixed":
            decay = 1.0
        else:
            progress = min(iteration, self.total_iters) / max(1, self.total_iters)
            if self.policy == "poly":
                shape = (1.0 - progress) ** self.poly_power
            elif self.policy == "cosine":
                shape = 0.5 * (1.0 + math.cos(math.pi * progress))
            else:
                raise ValueError(f"unknown LR policy {self.policy!r}; expected fixed, poly or cosine")
            decay = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            decay *= self.warmup_factor * (1.0 - alpha) + alpha
        return decay


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_iters: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration, as the official trainer does."""
    factor = LRFactor(
        policy=cfg.policy,
        total_iters=total_iters,
        warmup_iters=cfg.warmup_iters,
        warmup_factor=cfg.warmup_factor,
        poly_power=cfg.poly_power,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_horizon(scheduler: torch.optim.lr_scheduler.LambdaLR, total_iters: int) -> None:
    """Move the end of a `build_scheduler` decay to `total_iters` (a run shortened to fit a time budget) and
    apply the new factor to the current LR at once."""
    scheduler.lr_lambdas = [replace(factor, total_iters=total_iters) for factor in scheduler.lr_lambdas]
    for group, base_lr, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base_lr * factor(scheduler.last_epoch)
