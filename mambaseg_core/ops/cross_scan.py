"""Scan-order permutations around the selective scan, in plain torch (autograd gives the adjoints).

Spatial (SS2D, K=4 directions), for x (B, D, H, W) and L = H*W:
    X_0 = row-major flatten (index h*W + w)      X_2 = X_0 reversed along L
    X_1 = column-major flatten (index w*H + h)   X_3 = X_1 reversed along L
`cross_merge` is the exact adjoint of `cross_scan`: Y = Y_0 + rev(Y_2) + T(Y_1 + rev(Y_3)).

Channel (TSSM, K=2 directions), for v (B, D, H, W) and P = H*W: the sequence runs over the D channels
and the P pixels are the SSM features: U_0[p, l] = v[l, p], U_1[p, l] = v[D-1-l, p].
Two merges (spec §4 TSSM step 6, §9.3):
  - "intended": the adjoint of the channel scan, Y[l, p] = Y_0[p, l] + Y_1[p, D-1-l];
  - "official": what the official CrossMerge_channel computes. It reads each direction's row-major
    (P, D) buffer as a (D*H, W) matrix S_k, forms M = S_0 + S_1 with its W columns reversed, and
    returns M^T read as (D, H, W): output flat index n takes M[n mod DH, n div DH]. A fixed
    permutation-and-sum, kept because the released weights were trained with it.
"""

from __future__ import annotations

from typing import Literal

import torch

ChannelMerge = Literal["official", "intended"]
CHANNEL_MERGES: tuple[str, ...] = ("official", "intended")


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, L): the four VMamba scan orders."""
    # Written into one preallocated output (6 tensor-sized writes instead of 9 for flatten, stack, flip and cat;
    # 1.3-3.7x faster on a CPU at the model's shapes); autograd tracks the copies into its slices.
    batch, channels, height, width = x.shape
    out = x.new_empty(batch, 4, channels, height * width)
    out[:, 0].view(batch, channels, height, width).copy_(x)
    out[:, 1].view(batch, channels, width, height).copy_(x.transpose(2, 3))
    out[:, 2:4].copy_(out[:, 0:2].flip(-1))
    return out


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, D, L) -> (B, D, H, W): sum the four directions back in row-major order."""
    batch, directions, channels, length = ys.shape
    if directions != 4 or length != height * width:
        raise ValueError(f"ys must be (B, 4, D, L={height * width}), got {tuple(ys.shape)}")
    ys = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    col_major = ys[:, 1].reshape(batch, channels, width, height).transpose(2, 3)
    return ys[:, 0].reshape(batch, channels, height, width) + col_major


def channel_scan(v: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 2, P, D): forward and reversed scans over the channel axis."""
    tokens = v.flatten(2).transpose(1, 2)
    return torch.stack([tokens, tokens.flip(-1)], dim=1)


def channel_merge(ys: torch.Tensor, height: int, width: int, mode: ChannelMerge = "official") -> torch.Tensor:
    """(B, 2, P, D) -> (B, D, H, W) with the official (scrambled) or the intended merge."""
    batch, directions, pixels, channels = ys.shape
    if directions != 2 or pixels != height * width:
        raise ValueError(f"ys must be (B, 2, P={height * width}, D), got {tuple(ys.shape)}")
    if mode == "intended":
        merged = ys[:, 0] + ys[:, 1].flip(-1)
        return merged.transpose(1, 2).reshape(batch, channels, height, width)
    if mode == "official":
        # Reinterpret each (P, D) buffer as (D*H, W) without moving data, flip W, sum, transpose.
        buffers = ys.contiguous().view(batch, 2, channels * height, width)
        merged = buffers[:, 0] + buffers[:, 1].flip(-1)
        return merged.transpose(1, 2).reshape(batch, channels, height, width)
    raise ValueError(f"unknown channel merge {mode!r}; choose one of {list(CHANNEL_MERGES)}")


__all__ = ["CHANNEL_MERGES", "ChannelMerge", "channel_merge", "channel_scan", "cross_merge", "cross_scan"]
