"""Scanning some groups from their last step to their first (`selective_scan(..., reverse_groups=...)`).

A reversed group's channels see the sequence backwards: y_t depends on steps t..L-1. That is the scan of the
inputs flipped along L, flipped back, which is how backends without native support compute it (`flip_groups`
around the scan); the CUDA inference kernel reads the steps in reverse instead, so a bidirectional scan needs no
flipped copies of its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def reverse_mask(reverse_groups: Sequence[bool] | None, groups: int) -> int:
    """The bit mask of the reversed groups (bit g for group g); ValueError unless one flag per group."""
    if reverse_groups is None:
        return 0
    flags = tuple(reverse_groups)
    if len(flags) != groups or not all(isinstance(flag, bool) for flag in flags):
        raise ValueError(f"reverse_groups must be {groups} bools, one per group of B and C, got {flags!r}")
    return sum(1 << group for group, flag in enumerate(flags) if flag)


def flip_groups(x: torch.Tensor, mask: int, groups: int) -> torch.Tensor:
    """x (batch, rows, ..., L), whose rows are `groups` equal consecutive blocks, with the blocks of the groups set
    in `mask` flipped along L (u, delta, y: (B, channels, L); B, C: (B, groups, N, L)). Differentiable."""
    if mask == 0:
        return x
    blocks = x.reshape(x.shape[0], groups, -1, x.shape[-1])
    flipped = [blocks[:, g].flip(-1) if (mask >> g) & 1 else blocks[:, g] for g in range(groups)]
    return torch.stack(flipped, dim=1).reshape(x.shape)
