"""SegFormer all-MLP decoder head, as used by MambaSeg (no auxiliary heads)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.models.layers import per_pixel_linear


class SegFormerHead(nn.Module):
    """Stage features F_0..F_3 (B, C_i, H_i, W_i) -> logits (B, classes, H_0, W_0) at 1/4 input resolution.

    Each F_i is projected per pixel to `dim` channels (true nn.Linear, as upstream), upsampled bilinearly
    to F_0's size, concatenated deepest first ([c4, c3, c2, c1]), then fused:
    Conv1x1(4*dim -> dim) -> BatchNorm2d -> ReLU -> Dropout2d -> Conv1x1(dim -> classes).
    """

    def __init__(self, in_dims: Sequence[int], num_classes: int, dim: int = 768, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(in_dim, dim) for in_dim in in_dims)
        self.fuse_conv = nn.Conv2d(len(in_dims) * dim, dim, 1)
        self.fuse_norm = nn.BatchNorm2d(dim)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        maps = []
        for proj, feature in zip(self.proj, features, strict=True):
            x = per_pixel_linear(proj, feature)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        x = torch.relu(self.fuse_norm(self.fuse_conv(torch.cat(maps[::-1], dim=1))))
        return self.classifier(self.dropout(x))
