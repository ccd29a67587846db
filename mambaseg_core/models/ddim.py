"""DDIM fusion (one per stage): CTIM (cross-temporal, a Mamba over the channel axis) + CSIM (cross-spatial).

Reproduces the official code, oddities included (spec §4, §9): odd channels are swapped between the
modalities before the CTIM, the shared SE gate of one modality is computed from the other, the TSSM
merge is the official scrambled permutation (unless `channel_merge="intended"`), and the CSIM gate
maps are applied crosswise. B = batch, C = channels, D = 2C inner channels, P = H*W tokens.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn as nn

from mambaseg_core.models.branches import run_branches
from mambaseg_core.models.layers import LayerNorm2d, conv1x1, per_pixel_linear, project_and_add, projection_dtype
from mambaseg_core.models.ssm import DirectionalSSM
from mambaseg_core.models.vmamba import SS2D, resolve_dt_rank
from mambaseg_core.ops import cross_scan as scan_order
from mambaseg_core.ops import fused_cross_scan
from mambaseg_core.ops.attention_gates import (
    channel_gate,
    joint_spatial_gate,
    spatial_attention,
    swapped_channel_gates,
)

# Where a cross-modal module's two paths write their results (inference), or None: fresh tensors.
Outputs = tuple[torch.Tensor | None, torch.Tensor | None]


class CrossChannelGate(nn.Module):
    """CTIM's front: odd channels exchanged between the modalities, then each modality gated by the squeeze-excitation
    gate sigma(W2 ReLU(W1 GAP(.))) of the other (one gate, shared): (B, C, H, W) x 2 -> (B, C, H, W) x 2; reduction
    4, no biases. Four Triton kernels in CUDA inference (ops/attention_gates.swapped_channel_gates)."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(dim, dim // reduction, 1, bias=False)
        self.expand = nn.Conv2d(dim // reduction, dim, 1, bias=False)

    def forward(
        self, image: torch.Tensor, events: torch.Tensor, out_dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(gated image, gated events) in out_dtype (the projections' dtype: their paths then need no cast)."""
        return swapped_channel_gates(image, events, self.reduce, self.expand, out_dtype)


class ChannelAttention(nn.Module):
    """CBAM channel attention applied: x * sigma(M(GAP x) + M(GMP x)), (B, C, H, W) -> (B, C, H, W); reduction 16."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        self.reduce = nn.Conv2d(dim, dim // reduction, 1, bias=False)
        self.expand = nn.Conv2d(dim // reduction, dim, 1, bias=False)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The gated x, written into `out` if given (inference only)."""
        gate = channel_gate(x, self.reduce, self.expand, with_max=True)
        if out is None:
            return x * gate
        if torch.compiler.is_compiling():
            return out.copy_(x * gate)
        return torch.mul(x, gate, out=out)


class SpatialAttention(nn.Module):
    """CBAM spatial attention applied: x * sigma(conv7x7([mean_c x, max_c x])), (B, C, H, W) -> (B, C, H, W).
    Two Triton kernels in CUDA inference (ops/attention_gates.spatial_attention)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The gated x, written into `out` if given (inference only)."""
        return spatial_attention(x, self.conv, out)


class JointSpatialGate(nn.Module):
    """Both modalities gated by two spatial maps from both modalities' channel statistics:
    (B, C, H, W) x 2 -> (B, C, H, W) x 2.

    m = sigma(Conv1x1(16->2)(ReLU(Conv1x1(4->16)([mean n_I, max n_I, mean n_E, max n_E])))), then (n_I * m_1,
    n_E * m_0). Official naming swap: map 0 is called "att_img" there but gates the events; map 1 gates the image.
    One Triton kernel in CUDA inference (ops/attention_gates.joint_spatial_gate).
    """

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.hidden = nn.Conv2d(4, hidden, 1)
        self.out = nn.Conv2d(hidden, 2, 1)

    def forward(
        self, image: torch.Tensor, events: torch.Tensor, out_dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(gated image, gated events) in out_dtype (the projections' dtype: their paths then need no cast)."""
        return joint_spatial_gate(image, events, self.hidden, self.out, out_dtype)


class TSSM(nn.Module):
    """Temporal SSM ("vc_noz"): a bidirectional Mamba whose sequence is the channel axis.

    (B, C, H, W) -> Linear(C->D) -> SiLU(dwconv3x3) -> channel_scan (B, 2, P, D) -> 2 selective scans with
    P-dimensional tokens (so every weight is sized by P: the model is resolution-locked) -> channel merge
    (B, D, H, W) -> LN2d -> Linear(D->C). in_proj/out_proj are true nn.Linear layers as in the official code.
    The steps around the scans are fused ops (ops/fused_cross_scan.py): one kernel each side in CUDA inference.
    """

    def __init__(
        self,
        dim: int,
        tokens: int,
        *,
        d_state: int,
        ssm_ratio: float,
        conv_bias: bool,
        channel_merge: scan_order.ChannelMerge = "official",
        scan_backend: str = "auto",
    ):
        super().__init__()
        if channel_merge not in scan_order.CHANNEL_MERGES:
            raise ValueError(f"channel_merge must be one of {list(scan_order.CHANNEL_MERGES)}, got {channel_merge!r}")
        inner = int(ssm_ratio * dim)
        self.tokens = tokens
        self.channel_merge = channel_merge
        self.in_proj = nn.Linear(dim, inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, kernel_size=3, padding=1, groups=inner, bias=conv_bias)
        # dt rank is ceil(P/16) here: the official code applies "auto" to the token count, not to C.
        self.scan = DirectionalSSM(2, tokens, d_state, resolve_dt_rank("auto", tokens), backend=scan_backend)
        self.out_norm = LayerNorm2d(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """TSSM(x), plus `residual` if given (added by the output projection's GEMM in CUDA inference)."""
        height, width = x.shape[-2:]
        if height * width != self.tokens:
            raise ValueError(
                f"TSSM input has {height}x{width}={height * width} tokens, but its weights are sized for "
                f"{self.tokens}: the model only accepts its configured image_size"
            )
        ys = self.scan(fused_cross_scan.conv_silu_channel_scan(per_pixel_linear(self.in_proj, x), self.conv))
        y = fused_cross_scan.channel_merge_norm(
            ys, height, width, self.channel_merge, self.out_norm, projection_dtype(x)
        )
        project = partial(per_pixel_linear, self.out_proj)
        return project(y) if residual is None else project_and_add(project, self.out_proj.weight, y, residual)


class _TwoPaths(nn.Module):
    """A cross-modal module whose image and event paths run as two branches (models/branches.py) after a shared
    gate. Each path is x' = mixer(x) + skip(x), then x' * attention(x'), with the modules `<modality>_<MIXER>`,
    `<modality>_skip` and `<modality>_attention` (the official state-dict names) of each subclass. In inference the
    paths may write their results into given tensors (`outs`: the halves of the DDIM's concatenations)."""

    MIXER = ""

    def _path(self, modality: str, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        # Cast once for both projections (autocast would cast x for each of them).
        x = x.to(projection_dtype(x))
        # The skip term is added by the mixer's output projection (one GEMM in CUDA inference).
        x = getattr(self, f"{modality}_{self.MIXER}")(x, residual=conv1x1(getattr(self, f"{modality}_skip"), x))
        return getattr(self, f"{modality}_attention")(x, out)

    def _image_path(self, image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return self._path("image", image, out)

    def _event_path(self, events: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return self._path("event", events, out)

    def _run_paths(
        self, image: torch.Tensor, events: torch.Tensor, outs: Outputs = (None, None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return run_branches(partial(self._image_path, image, outs[0]), partial(self._event_path, events, outs[1]))

    def compile_paths(self, **compile_kwargs: Any) -> None:
        """torch.compile each modality's path on its own (what runs inside one branch)."""
        self._image_path = torch.compile(self._image_path, **compile_kwargs)  # type: ignore[method-assign]
        self._event_path = torch.compile(self._event_path, **compile_kwargs)  # type: ignore[method-assign]


class CTIM(_TwoPaths):
    """Cross-temporal interaction: (n_I, n_E) (B, C, H, W) x 2 -> (c_I, c_E) (B, C, H, W) x 2."""

    MIXER = "tssm"

    def __init__(self, dim: int, tokens: int, **tssm_kwargs):
        super().__init__()
        self.channel_gate = CrossChannelGate(dim)
        self.image_tssm = TSSM(dim, tokens, **tssm_kwargs)
        self.event_tssm = TSSM(dim, tokens, **tssm_kwargs)
        self.image_skip = nn.Conv2d(dim, dim, 1)
        self.event_skip = nn.Conv2d(dim, dim, 1)
        self.image_attention = ChannelAttention(dim)
        self.event_attention = ChannelAttention(dim)

    def forward(
        self, image: torch.Tensor, events: torch.Tensor, outs: Outputs = (None, None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, events = self.channel_gate(image, events, projection_dtype(image))
        return self._run_paths(image, events, outs)


class CSIM(_TwoPaths):
    """Cross-spatial interaction: (n_I, n_E) (B, C, H, W) x 2 -> (q_I, q_E) (B, C, H, W) x 2."""

    MIXER = "ss2d"

    def __init__(self, dim: int, **ss2d_kwargs):
        super().__init__()
        self.spatial_gate = JointSpatialGate()
        self.image_ss2d = SS2D(dim, **ss2d_kwargs)
        self.event_ss2d = SS2D(dim, **ss2d_kwargs)
        self.image_skip = nn.Conv2d(dim, dim, 1)
        self.event_skip = nn.Conv2d(dim, dim, 1)
        self.image_attention = SpatialAttention()
        self.event_attention = SpatialAttention()

    def forward(
        self, image: torch.Tensor, events: torch.Tensor, outs: Outputs = (None, None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, events = self.spatial_gate(image, events, projection_dtype(image))
        return self._run_paths(image, events, outs)


class DDIM(nn.Module):
    """Dual-dimensional interaction: (a_I, a_E) -> (f_I, f_E), all (B, C, H, W).

    n = LN2d(a) per modality; f = a + Conv1x1(2C->C)([CTIM(n), CSIM(n)]). The residual is on the DDIM
    input a (the encoder's out-norm output), which is what makes MambaSeg's next-stage input o + LN(o) + delta.
    DDIM's drop path is 0 in the official model, so there is none here.
    """

    def __init__(
        self,
        dim: int,
        tokens: int,
        *,
        d_state: int,
        ssm_ratio: float,
        conv_bias: bool,
        channel_merge: scan_order.ChannelMerge = "official",
        scan_backend: str = "auto",
    ):
        super().__init__()
        ssm_kwargs: dict[str, Any] = dict(
            d_state=d_state, ssm_ratio=ssm_ratio, conv_bias=conv_bias, scan_backend=scan_backend
        )
        self.image_norm = LayerNorm2d(dim)
        self.event_norm = LayerNorm2d(dim)
        self.ctim = CTIM(dim, tokens, channel_merge=channel_merge, **ssm_kwargs)
        self.csim = CSIM(dim, **ssm_kwargs)
        self.image_out = nn.Conv2d(2 * dim, dim, 1)
        self.event_out = nn.Conv2d(2 * dim, dim, 1)

    def forward(
        self,
        image: torch.Tensor,
        events: torch.Tensor,
        image_norm: torch.Tensor | None = None,
        event_norm: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_I, f_E); image_norm and event_norm: the norms n = LN2d(a) if already made (MambaSeg makes them in its
        encoders' last kernel, ops/layer_norm.norm_twice)."""
        image_delta, event_delta = self.forward_deferred(image, events, image_norm, event_norm)
        return image + image_delta, events + event_delta

    def forward_deferred(
        self,
        image: torch.Tensor,
        events: torch.Tensor,
        image_norm: torch.Tensor | None = None,
        event_norm: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` with its residual sums left to the caller: (delta_I, delta_E) with f = a + delta, so that the
        caller makes them together with the sums that follow (ops/stage_residuals)."""
        image_norm = self.image_norm(image) if image_norm is None else image_norm
        event_norm = self.event_norm(events) if event_norm is None else event_norm
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            (image_temporal, event_temporal), (image_spatial, event_spatial) = run_branches(
                partial(self.ctim.__call__, image_norm, event_norm),
                partial(self.csim.__call__, image_norm, event_norm),
            )
            joined = [torch.cat([image_temporal, image_spatial], 1), torch.cat([event_temporal, event_spatial], 1)]
        else:
            # Inference: the four paths write into the halves of the two concatenations (no concatenating copies).
            batch, channels, height, width = image.shape
            joined = [
                torch.empty(
                    (batch, 2 * channels, height, width),
                    dtype=projection_dtype(image),
                    device=image.device,
                    memory_format=torch.channels_last,
                )
                for _ in range(2)
            ]
            run_branches(
                partial(self.ctim.__call__, image_norm, event_norm, (joined[0][:, :channels], joined[1][:, :channels])),
                partial(self.csim.__call__, image_norm, event_norm, (joined[0][:, channels:], joined[1][:, channels:])),
            )
        return run_branches(partial(conv1x1, self.image_out, joined[0]), partial(conv1x1, self.event_out, joined[1]))
