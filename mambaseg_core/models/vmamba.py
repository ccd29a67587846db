"""VMamba-T building blocks as configured by MambaSeg (channel-first, "v05_noz", patch embed v2, downsample v3).

Every tensor is NCHW; B = batch, C = model channels, D = inner SSM channels, N = SSM state, R = dt rank,
K = scan directions (4), L = H*W tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from mambaseg_core.models.layers import (
    DropPath,
    LayerNorm2d,
    Linear2d,
    linear_gelu,
    project_and_add,
    projection_dtype,
)
from mambaseg_core.models.ssm import DirectionalSSM
from mambaseg_core.ops import fused_cross_scan, layer_norm
from mambaseg_core.ops.stem_conv import stem_conv


def resolve_dt_rank(dt_rank: int | str, features: int) -> int:
    """dt_rank "auto" is ceil(features / 16), as in Mamba/VMamba."""
    return math.ceil(features / 16) if dt_rank == "auto" else int(dt_rank)


def conv_norm(conv: nn.Conv2d, norm: LayerNorm2d, x: torch.Tensor) -> torch.Tensor:
    """norm(conv(x)). Where the norm's kernel runs (CUDA inference) it adds the convolution's bias itself: PyTorch adds
    a cuDNN convolution's bias in a separate pass over its output (5-11 µs at DSEC sizes on an H200, four times in
    each branch's chain: the stem's second convolution and the downsamplings)."""
    if conv.bias is not None and layer_norm.uses_kernel(x, norm.weight, norm.bias):
        return layer_norm.bias_layer_norm_2d(conv._conv_forward(x, conv.weight, None), conv.bias, *norm.params())
    return norm(conv(x))


class PatchEmbed(nn.Module):
    """Stem "v2": (B, C_in, H, W) -> (B, C, ceil(H/4), ceil(W/4)) via two k3 s2 p1 convs with LN2d and GELU."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, dim // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = LayerNorm2d(dim // 2)  # then the exact GELU (no module: no parameters)
        self.conv2 = nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1)
        self.norm2 = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # norm1 returns conv2's compute dtype: the GELU between them then needs no cast of its own. conv1, norm1
        # and the GELU are one kernel in CUDA inference (ops/stem_conv).
        return conv_norm(self.conv2, self.norm2, stem_conv(x, self.conv1, self.norm1, projection_dtype(x)))


class Downsample(nn.Module):
    """Downsample "v3": (B, C, H, W) -> (B, C_out, ceil(H/2), ceil(W/2)), a k3 s2 p1 conv then LN2d."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = LayerNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_norm(self.conv, self.norm, x)


class SS2D(nn.Module):
    """2-D selective scan, forward type "v05_noz": no z gate, LN2d on the merged scan, no output activation.

    (B, C, H, W) -> in_proj -> (B, D, H, W) -> SiLU(dwconv3x3) -> cross_scan (B, 4, D, L)
    -> 4 selective scans -> cross_merge (B, D, H, W) -> LN2d -> out_proj -> (B, C, H, W).
    The steps around the scans are fused ops (ops/fused_cross_scan.py): one kernel each side in CUDA inference.
    """

    def __init__(
        self,
        dim: int,
        *,
        d_state: int,
        ssm_ratio: float,
        dt_rank: int | str = "auto",
        conv_bias: bool,
        scan_backend: str = "auto",
    ):
        super().__init__()
        inner = int(ssm_ratio * dim)
        self.in_proj = Linear2d(dim, inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, kernel_size=3, padding=1, groups=inner, bias=conv_bias)
        self.scan = DirectionalSSM(
            4, inner, d_state, resolve_dt_rank(dt_rank, dim), backend=scan_backend, half_precision_y=True
        )
        self.out_norm = LayerNorm2d(inner)
        self.out_proj = Linear2d(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """SS2D(x), plus `residual` if given (added by the output projection's GEMM in CUDA inference)."""
        height, width = x.shape[-2:]
        ys = self.scan(fused_cross_scan.conv_silu_cross_scan(self.in_proj(x), self.conv))
        y = fused_cross_scan.cross_merge_norm(ys, height, width, self.out_norm, projection_dtype(x))
        if residual is None:
            return self.out_proj(y)
        return project_and_add(self.out_proj, self.out_proj.weight, y, residual)


class Mlp(nn.Module):
    """Per-pixel MLP: Linear2d(C -> hidden) -> GELU -> Linear2d(hidden -> C); the exact GELU, but its tanh form in
    half-precision CUDA inference (models/layers.linear_gelu)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)  # then the GELU (no module: no parameters)
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fc1 and the GELU are one GEMM in half-precision CUDA inference (models/layers.linear_gelu).
        return self.fc2(linear_gelu(self.fc1, x))


class VSSBlock(nn.Module):
    """Pre-norm VSS block: x + DropPath(SS2D(LN2d(x))), then x + DropPath(MLP(LN2d(x)))."""

    def __init__(
        self,
        dim: int,
        *,
        d_state: int,
        ssm_ratio: float,
        dt_rank: int | str,
        conv_bias: bool,
        mlp_ratio: float,
        drop_path: float,
        scan_backend: str = "auto",
    ):
        super().__init__()
        self.ssm_norm = LayerNorm2d(dim)
        self.ssm = SS2D(
            dim, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, conv_bias=conv_bias, scan_backend=scan_backend
        )
        self.mlp_norm = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, mlp_term = self.forward_deferred(x)
        return x + mlp_term

    def forward_deferred(
        self, x: torch.Tensor, pending: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block with its last residual sum left to the caller: (x after the SSM residual, the MLP term).
        pending: the previous block's MLP term, added to x here. A residual sum followed by a norm is one kernel
        in CUDA inference, so a stage of blocks chained this way makes no separate residual add but its last."""
        dtype = projection_dtype(x)  # each norm feeds only a projection: it returns the projection's dtype
        if pending is None:
            normed = self.ssm_norm(x, dtype)
        else:
            x, normed = self.ssm_norm.after_residual(x, pending, dtype)
        x, normed = self.mlp_norm.after_residual(x, self.drop_path(self.ssm(normed)), dtype)
        return x, self.drop_path(self.mlp(normed))


class VMambaEncoder(nn.Module):
    """One VMamba branch, used stage by stage by MambaSeg (it never runs the whole encoder at once).

    stem: (B, C_in, H, W) -> (B, dims[0], ceil(H/4), ceil(W/4)); stages[i]: the VSS blocks of stage i;
    out_norms[i]: LN2d on the stage output; downsamples[i] (i < last): stage i -> stage i+1 resolution.
    """

    def __init__(
        self,
        in_channels: int,
        dims: Sequence[int],
        depths: Sequence[int],
        *,
        d_state: int,
        ssm_ratio: float,
        dt_rank: int | str,
        conv_bias: bool,
        mlp_ratio: float,
        drop_path_rate: float,
        scan_backend: str = "auto",
    ):
        super().__init__()
        # Stochastic depth grows linearly over all blocks of the branch.
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stem = PatchEmbed(in_channels, dims[0])
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            first = sum(depths[:i])
            blocks = [
                VSSBlock(
                    dim,
                    d_state=d_state,
                    ssm_ratio=ssm_ratio,
                    dt_rank=dt_rank,
                    conv_bias=conv_bias,
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[first + j],
                    scan_backend=scan_backend,
                )
                for j in range(depth)
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.stages.apply(_init_vmamba_linear)
        self.downsamples = nn.ModuleList(Downsample(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        self.out_norms = nn.ModuleList(LayerNorm2d(dim) for dim in dims)


@torch.no_grad()
def _init_vmamba_linear(module: nn.Module) -> None:
    """VMamba's init of its block linears (trunc-normal 0.02, zero bias); stems keep PyTorch defaults,
    since MambaSeg replaces them after construction."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
