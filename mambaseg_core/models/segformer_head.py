"""SegFormer all-MLP decoder head, as used by MambaSeg (no auxiliary heads)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.models.layers import DerivedWeights, per_pixel_linear, projection_dtype
from mambaseg_core.ops.triton_support import fast_path, kernels_apply
from mambaseg_core.ops.upsample_sum import MAX_SOURCES, upsample_sum_relu

# The classifier's output rows, padded to a multiple of this many classes in CUDA inference (16-byte rows in fp16).
CLASS_ALIGN = 8


class SegFormerHead(nn.Module):
    """Stage features F_0..F_3 (B, C_i, H_i, W_i) -> logits (B, classes, H_0, W_0) at 1/4 input resolution.

    Each F_i is projected per pixel to `dim` channels (true nn.Linear, as upstream), upsampled bilinearly
    to F_0's size, concatenated deepest first ([c4, c3, c2, c1]), then fused:
    Conv1x1(4*dim -> dim) -> BatchNorm2d -> ReLU -> Dropout2d -> Conv1x1(dim -> classes).

    In CUDA inference (eval mode, no autograd) the same map is computed in a cheaper order: projection, fusion
    slice and BatchNorm are linear, and bilinear upsampling commutes with any per-pixel linear map (its weights
    sum to 1), so each F_i goes through one folded matrix W_i (C_i -> dim) at its own resolution, and one kernel
    upsamples, sums and applies the ReLU at full resolution (ops/upsample_sum.py). The full-resolution
    4*dim-channel concatenation and its convolution disappear.
    """

    def __init__(self, in_dims: Sequence[int], num_classes: int, dim: int = 768, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(in_dim, dim) for in_dim in in_dims)
        self.fuse_conv = nn.Conv2d(len(in_dims) * dim, dim, 1)
        self.fuse_norm = nn.BatchNorm2d(dim)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)
        self._folded: DerivedWeights[list[tuple[torch.Tensor, torch.Tensor | None]]] = DerivedWeights()
        self._padded_classifier: DerivedWeights[tuple[torch.Tensor, torch.Tensor | None]] = DerivedWeights()

    def _folds(self, *features: torch.Tensor) -> bool:
        """Whether the head runs folded for these features (CUDA inference)."""
        return (
            not self.training
            and len(self.proj) <= MAX_SOURCES + 1
            and kernels_apply("folded_head", *features, self.fuse_conv.weight)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self._folds(*features):
            return self._forward_folded(features)
        size = features[0].shape[-2:]
        maps = []
        for proj, feature in zip(self.proj, features, strict=True):
            x = per_pixel_linear(proj, feature)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        x = torch.relu(self.fuse_norm(self.fuse_conv(torch.cat(maps[::-1], dim=1))))
        return self.classifier(self.dropout(x))

    def folded_projections(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per level i, (W_i, b_i) with BN(fuse_conv(cat(...))) = sum_i upsample(W_i F_i + b_i) in eval mode; the
        biases are all on level 0. Folded in float32, returned in the projections' dtype; kept until a source
        parameter or BatchNorm statistic changes."""
        sources = [*self.proj.parameters(), *self.fuse_conv.parameters(), *self.fuse_norm.parameters()]
        sources += [self.fuse_norm.running_mean, self.fuse_norm.running_var]
        return self._folded.get(sources, self._fold)

    @torch.no_grad()
    def _fold(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        norm, levels = self.fuse_norm, len(self.proj)
        scale = norm.weight.float() / torch.sqrt(norm.running_var.float() + norm.eps)
        fuse = self.fuse_conv.weight.float()[:, :, 0, 0] * scale[:, None]
        bias = (self.fuse_conv.bias.float() - norm.running_mean.float()) * scale + norm.bias.float()
        folded = []
        for i, proj in enumerate(self.proj):
            slot = fuse[:, (levels - 1 - i) * proj.out_features : (levels - i) * proj.out_features]  # deepest first
            weight = slot @ proj.weight.float()
            bias = bias + slot @ proj.bias.float()
            folded.append(weight)
        dtype = self.proj[0].weight.dtype
        return [(w.to(dtype), bias.to(dtype) if i == 0 else None) for i, w in enumerate(folded)]

    def project(self, level: int, feature: torch.Tensor) -> torch.Tensor | None:
        """The folded projection W_level F_level (+ the folded bias at level 0), or None where the head does not run
        folded: a caller that makes the levels one after another (MambaSeg) projects each as soon as it is made,
        beside the later stages, and hands them all to `forward_projected`."""
        return self._project(level, feature) if self._folds(feature) else None

    def _project(self, level: int, feature: torch.Tensor) -> torch.Tensor:
        weight, bias = self.folded_projections()[level]
        return F.linear(feature.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)

    def _forward_folded(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_projected([self._project(level, feature) for level, feature in enumerate(features)])

    def forward_projected(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The logits from every level's `project`ion."""
        fused = upsample_sum_relu(maps[0], maps[1:], projection_dtype(maps[0]))
        return self._classify(fused) if fast_path("padded_classifier") else self.classifier(fused)

    def _classify(self, fused: torch.Tensor) -> torch.Tensor:
        """classifier(fused) for a channels-last fused map: one GEMM over its pixel rows with the classes padded to a
        multiple of CLASS_ALIGN (zero rows; cuBLAS runs an unaligned half-precision GEMM on slow fallback kernels,
        25 µs for DSEC's 11 classes on an H100), the bias inside; a channels-last view of the first `classes`."""
        weight, bias = self._padded_classifier.get(list(self.classifier.parameters()), self._pad_classifier)
        batch, channels, height, width = fused.shape
        rows = fused.permute(0, 2, 3, 1).reshape(-1, channels)
        logits = F.linear(rows, weight.to(rows.dtype), None if bias is None else bias.to(rows.dtype))
        classes = self.classifier.out_channels
        return logits.view(batch, height, width, -1).permute(0, 3, 1, 2)[:, :classes]

    @torch.no_grad()
    def _pad_classifier(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        classes, dim = self.classifier.weight.shape[:2]
        padded = -(-classes // CLASS_ALIGN) * CLASS_ALIGN
        weight = self.classifier.weight.new_zeros(padded, dim)
        weight[:classes] = self.classifier.weight[:, :, 0, 0]
        if self.classifier.bias is None:
            return weight, None
        bias = self.classifier.bias.new_zeros(padded)
        bias[:classes] = self.classifier.bias
        return weight, bias
