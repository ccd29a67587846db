"""The work around the selective scans of SS2D and the TSSM, fused into Triton kernels for CUDA inference.

Before the scans: depthwise 3x3 convolution (padding 1) + SiLU + the scan orders, one kernel that reads the
input projection once and writes every direction's sequence (`conv_silu_cross_scan` for SS2D's four spatial
orders, `conv_silu_channel_scan` for the TSSM's two channel orders). After them: the merge of the directions +
LayerNorm2d, one kernel that gathers every direction's output and writes the normalised map, channels-last
(`cross_merge_norm`, `channel_merge_norm`). In PyTorch each side is a chain of convolution, activation, copy,
flip, add, transpose and norm kernels with a tensor-sized write between every two.

Each function's reference is that chain, built from ops/cross_scan.py (looked up at call time, so a patched
scan order reaches it) and ops/layer_norm.py; it runs wherever the kernels do not (ops/triton_support.py). The
kernels compute in float32 and round once, where the chain rounds after every op in bf16 or fp16.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.ops import cross_scan as scan_order
from mambaseg_core.ops.layer_norm import MAX_CHANNELS, pixel_block
from mambaseg_core.ops.triton_support import kernels_apply, triton

if triton is not None:
    import triton.language as tl

    from mambaseg_core.ops.layer_norm import normalize

    @triton.jit
    def _conv3x3_silu(acc, x_ptr, plane, h, w, H, W, x_sh, x_sw, w_ptr, channel, valid):
        """SiLU(depthwise 3x3 conv, padding 1) at pixels (h, w) of the planes at offsets `plane`, accumulated
        into acc (which holds the bias) in float32; channel indexes the (D, 1, 3, 3) weight (every index in
        range: the weight is read unmasked), valid says which (h, w) of acc are wanted."""
        for tap in tl.static_range(9):
            hh = h + (tap // 3 - 1)
            ww = w + (tap % 3 - 1)
            inside = valid & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            value = tl.load(x_ptr + plane + hh * x_sh + ww * x_sw, mask=inside, other=0.0).to(tl.float32)
            acc += value * tl.load(w_ptr + channel * 9 + tap).to(tl.float32)
        return acc / (1.0 + tl.exp(-acc))

    @triton.jit
    def _conv_silu_cross_scan_kernel(
        x_ptr, w_ptr, b_ptr, out_ptr, D, H, W, x_sb, x_sc, x_sh, x_sw,
        HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_C channels x a BLOCK_H x BLOCK_W pixel tile of one image, written to the 4 directions.
        # Channels are a block dimension so that channels-last input (the model's) is read along its contiguous
        # axis; Triton stages each store's layout change through shared memory.
        batch = tl.program_id(2).to(tl.int64)
        tiles_w = tl.cdiv(W, BLOCK_W)
        channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None, None]
        h = (tl.program_id(0) // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[None, :, None]
        w = (tl.program_id(0) % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, None, :]
        valid = (channel < D) & (h < H) & (w < W)
        acc = tl.zeros([BLOCK_C, BLOCK_H, BLOCK_W], dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        plane = batch * x_sb + channel * x_sc
        u = _conv3x3_silu(acc, x_ptr, plane, h, w, H, W, x_sh, x_sw, w_ptr, tl.minimum(channel, D - 1), valid)
        u = u.to(out_ptr.dtype.element_ty)
        L = H * W
        row_major, col_major = h * W + w, w * H + h
        out = out_ptr + (batch * 4 * D + channel) * L  # direction k's row at + k * D * L
        tl.store(out + row_major, u, mask=valid)
        tl.store(out + D * L + col_major, u, mask=valid)
        tl.store(out + 2 * D * L + (L - 1 - row_major), u, mask=valid)
        tl.store(out + 3 * D * L + (L - 1 - col_major), u, mask=valid)

    @triton.jit
    def _conv_silu_channel_scan_kernel(
        x_ptr, w_ptr, b_ptr, out_ptr, D, H, W, x_sb, x_sc, x_sh, x_sw,
        HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_C channels x BLOCK_P pixels of one image, written as (B, 2, P, D) rows.
        batch = tl.program_id(2).to(tl.int64)
        channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
        pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
        P = H * W
        valid = (channel < D) & (pixel < P)
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        h, w = pixel // W, pixel % W
        plane = batch * x_sb + channel * x_sc
        v = _conv3x3_silu(acc, x_ptr, plane, h, w, H, W, x_sh, x_sw, w_ptr, tl.minimum(channel, D - 1), valid)
        v = v.to(out_ptr.dtype.element_ty)
        out = out_ptr + (batch * 2 * P + pixel) * D
        tl.store(out + channel, v, mask=valid)
        tl.store(out + P * D + (D - 1 - channel), v, mask=valid)

    @triton.jit
    def _cross_merge_norm_kernel(
        ys_ptr, w_ptr, b_ptr, out_ptr, D, H, W, eps,
        BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
    ):  # fmt: skip
        # One program: all D channels of a BLOCK_H x BLOCK_W pixel tile; y = (Y0 + rev Y2) + T(Y1 + rev Y3), as
        # cross_merge sums, then the norm; stored channels-last.
        batch = tl.program_id(1).to(tl.int64)
        tiles_w = tl.cdiv(W, BLOCK_W)
        channel = tl.arange(0, BLOCK_C)[:, None, None]
        h = (tl.program_id(0) // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[None, :, None]
        w = (tl.program_id(0) % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, None, :]
        mask = (channel < D) & (h < H) & (w < W)
        L = H * W
        row_major, col_major = h * W + w, w * H + h
        ys = ys_ptr + (batch * 4 * D + channel) * L
        y = tl.load(ys + row_major, mask=mask, other=0.0) + tl.load(
            ys + 2 * D * L + (L - 1 - row_major), mask=mask, other=0.0
        )
        y += tl.load(ys + D * L + col_major, mask=mask, other=0.0) + tl.load(
            ys + 3 * D * L + (L - 1 - col_major), mask=mask, other=0.0
        )
        weight = tl.load(w_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        y = normalize(y.to(tl.float32), mask, weight, bias, D, eps)
        tl.store(out_ptr + (batch * L + row_major) * D + channel, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _channel_merge_norm_kernel(
        ys_ptr, w_ptr, b_ptr, out_ptr, D, H, W, eps,
        OFFICIAL: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: all D channels of BLOCK_P pixels; the merge of ops/cross_scan.channel_merge read as a
        # gather from the two (P, D) buffers of the image, then the norm; stored channels-last.
        batch = tl.program_id(1).to(tl.int64)
        channel = tl.arange(0, BLOCK_C)[:, None]
        pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
        P = H * W
        mask = (channel < D) & (pixel < P)
        first = ys_ptr + batch * 2 * P * D
        second = first + P * D
        if OFFICIAL:
            # Output element n = c * P + p is M[n mod DH, n div DH], M = S0 + S1 with W reversed, S_k the buffers
            # read as (D * H, W) matrices.
            n = channel * P + pixel
            r, j = n % (D * H), n // (D * H)
            y = tl.load(first + r * W + j, mask=mask, other=0.0) + tl.load(
                second + r * W + (W - 1 - j), mask=mask, other=0.0
            )
        else:
            y = tl.load(first + pixel * D + channel, mask=mask, other=0.0) + tl.load(
                second + pixel * D + (D - 1 - channel), mask=mask, other=0.0
            )
        weight = tl.load(w_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        y = normalize(y.to(tl.float32), mask, weight, bias, D, eps)
        tl.store(out_ptr + (batch * P + pixel) * D + channel, y.to(out_ptr.dtype.element_ty), mask=mask)


def _depthwise_weight(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv's weight, after checking that conv is the depthwise 3x3 convolution (stride 1, padding 1) of x."""
    channels = x.shape[1]
    geometry = (conv.in_channels, conv.out_channels, conv.groups, conv.kernel_size, conv.stride, conv.padding)
    depthwise = (channels, channels, channels, (3, 3), (1, 1), (1, 1))
    if geometry != depthwise or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError(f"expected a depthwise 3x3 convolution (stride 1, padding 1) of {channels} channels: {conv}")
    return conv.weight.contiguous()


def conv_silu_cross_scan(x: torch.Tensor, conv: nn.Conv2d, block: tuple[int, int, int] | None = None) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): cross_scan(SiLU(conv(x))) for conv a depthwise 3x3 convolution. `block`
    (channels, rows, columns per program) overrides the kernel's tile, for tuning."""
    weight = _depthwise_weight(x, conv)
    if not kernels_apply(x, weight, conv.bias):
        return scan_order.cross_scan(F.silu(conv(x)))
    batch, channels, height, width = x.shape
    out = torch.empty(batch, 4, channels, height * width, dtype=x.dtype, device=x.device)
    # Channels-last input: enough channels per program for full sectors; NCHW: whole rows of a few planes.
    block_c, block_h, block_w = block or ((32, 8, 16) if x.stride(1) == 1 else (2, 16, 32))
    tiles = triton.cdiv(height, block_h) * triton.cdiv(width, block_w)
    bias = conv.bias if conv.bias is not None else weight
    _conv_silu_cross_scan_kernel[(tiles, triton.cdiv(channels, block_c), batch)](
        x, weight, bias, out, channels, height, width, *x.stride(),
        HAS_BIAS=conv.bias is not None, BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=4,
    )  # fmt: skip
    return out


def conv_silu_channel_scan(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """(B, D, H, W) -> (B, 2, H*W, D): channel_scan(SiLU(conv(x))) for conv a depthwise 3x3 convolution."""
    weight = _depthwise_weight(x, conv)
    if not kernels_apply(x, weight, conv.bias):
        return scan_order.channel_scan(F.silu(conv(x)))
    batch, channels, height, width = x.shape
    out = torch.empty(batch, 2, height * width, channels, dtype=x.dtype, device=x.device)
    block_c, block_p = 32, 64
    grid = (triton.cdiv(height * width, block_p), triton.cdiv(channels, block_c), batch)
    bias = conv.bias if conv.bias is not None else weight
    _conv_silu_channel_scan_kernel[grid](
        x, weight, bias, out, channels, height, width, *x.stride(),
        HAS_BIAS=conv.bias is not None, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )  # fmt: skip
    return out


def _merge_kernel_applies(ys: torch.Tensor, channels: int, norm: nn.LayerNorm) -> bool:
    return channels <= MAX_CHANNELS and norm.weight is not None and kernels_apply(ys, norm.weight, norm.bias)


def _merged_output(ys: torch.Tensor, channels: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    shape = (ys.shape[0], channels, height, width)
    return torch.empty(shape, dtype=dtype, device=ys.device, memory_format=torch.channels_last)


def cross_merge_norm(
    ys: torch.Tensor,
    height: int,
    width: int,
    norm: nn.LayerNorm,
    out_dtype: torch.dtype,
    block: tuple[int, int] | None = None,
) -> torch.Tensor:
    """(B, 4, D, L) -> (B, D, H, W) channels-last in out_dtype: norm(cross_merge(ys)) for norm a LayerNorm2d.
    `block` (rows, columns of the pixel tile per program) overrides the kernel's tile, for tuning."""
    batch, _, channels, _ = ys.shape
    if not _merge_kernel_applies(ys, channels, norm):
        return norm(scan_order.cross_merge(ys, height, width)).to(out_dtype)
    if ys.shape != (batch, 4, channels, height * width):
        raise ValueError(f"ys must be (B, 4, D, L={height * width}), got {tuple(ys.shape)}")
    out = _merged_output(ys, channels, height, width, out_dtype)
    block_c, pixels = pixel_block(channels)
    block_h, block_w = block or (pixels // min(pixels, 8), min(pixels, 8))
    grid = (triton.cdiv(height, block_h) * triton.cdiv(width, block_w), batch)
    _cross_merge_norm_kernel[grid](
        ys.contiguous(), norm.weight, norm.bias, out, channels, height, width, norm.eps,
        BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=8,
    )  # fmt: skip
    return out


def channel_merge_norm(
    ys: torch.Tensor,
    height: int,
    width: int,
    mode: scan_order.ChannelMerge,
    norm: nn.LayerNorm,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """(B, 2, P, D) -> (B, D, H, W) channels-last in out_dtype: norm(channel_merge(ys, mode)) for norm a
    LayerNorm2d."""
    batch, _, _, channels = ys.shape
    if not _merge_kernel_applies(ys, channels, norm):
        return norm(scan_order.channel_merge(ys, height, width, mode)).to(out_dtype)
    if ys.shape != (batch, 2, height * width, channels):
        raise ValueError(f"ys must be (B, 2, P={height * width}, D), got {tuple(ys.shape)}")
    if mode not in scan_order.CHANNEL_MERGES:
        raise ValueError(f"unknown channel merge {mode!r}; choose one of {list(scan_order.CHANNEL_MERGES)}")
    out = _merged_output(ys, channels, height, width, out_dtype)
    block_c, block_p = pixel_block(channels)
    grid = (triton.cdiv(height * width, block_p), batch)
    _channel_merge_norm_kernel[grid](
        ys.contiguous(), norm.weight, norm.bias, out, channels, height, width, norm.eps,
        OFFICIAL=mode == "official", BLOCK_C=block_c, BLOCK_P=block_p, num_warps=8,
    )  # fmt: skip
    return out


__all__ = ["channel_merge_norm", "conv_silu_channel_scan", "conv_silu_cross_scan", "cross_merge_norm"]
