"""The work around the selective scans of SS2D and the TSSM, fused into Triton kernels for CUDA inference.

Before the scans: depthwise 3x3 convolution (padding 1) + SiLU + the scan orders, one kernel that reads the
input projection once and writes every direction's sequence (`conv_silu_cross_scan` for SS2D's four spatial
orders, `conv_silu_channel_scan` for the TSSM's two channel orders). After them: the merge of the directions into
one float32 NCHW map (one kernel), then the LayerNorm2d kernel, which writes channels-last in the dtype of the
projection that follows (`cross_merge_norm`, `channel_merge_norm`). In PyTorch each side is a chain of
convolution, activation, copy, flip, add, transpose and norm kernels with a tensor-sized write between every two.

The spatial sequences are stored at a row stride padded to a multiple of SEQUENCE_ALIGN, zeros past H*W: the SSM's
projections are batched GEMMs along the sequence, and cuBLAS runs half-precision GEMMs whose leading dimension is
not a multiple of 16 bytes on slow fallback kernels (every DDD17 stage: L = 4350, 1100, 286, 77). The scan is
causal, so the extra steps after H*W change no output before them, and the merge reads only the first H*W.

Every kernel works on 2-D tiles whose loads and stores run along a contiguous axis, forwards or backwards (the
reversed directions); a change of axis between load and store is one transpose through shared memory, which
Triton stages. Tuned on the H100 at the model's shapes: tiles of all channels x a pixel square, merging and
normalising in one kernel, were 4-7x slower (Triton's 3-D layout conversions), and the cross-scan kernel shares
one convolution between a direction and its reverse (a flip in registers) only on long sequences.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.ops import cross_scan as scan_order
from mambaseg_core.ops.triton_support import kernels_apply, power_of_two_at_least, triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _conv3x3_silu(acc, x_ptr, plane, h, w, H, W, x_sh, x_sw, w_ptr, channel, valid):
        """SiLU(depthwise 3x3 conv, padding 1) at pixels (h, w) of the planes at offsets `plane`, accumulated
        into acc (which holds the bias) in float32; channel indexes the (D, 1, 3, 3) weight (every index in
        range: the weight is read unmasked), valid says which (h, w) of acc are wanted."""
        # One address per element, the taps scalar offsets from it: fewer integer instructions a tap (H200: the
        # channel-scan kernel 4-14 % faster, the cross-scan one 0-3 %). Taps are added in the weight's order.
        center = x_ptr + plane + h * x_sh + w * x_sw
        for dh in tl.static_range(3):
            row_inside = valid & (h >= 1 - dh) & (h < H + 1 - dh)
            for dw in tl.static_range(3):
                inside = row_inside & (w >= 1 - dw) & (w < W + 1 - dw)
                value = tl.load(center + ((dh - 1) * x_sh + (dw - 1) * x_sw), mask=inside, other=0.0)
                acc += value.to(tl.float32) * tl.load(w_ptr + channel * 9 + (dh * 3 + dw)).to(tl.float32)
        return acc / (1.0 + tl.exp(-acc))

    @triton.jit
    def _conv_silu_cross_scan_kernel(
        x_ptr, w_ptr, b_ptr, out_ptr, D, H, W, LP, x_sb, x_sc, x_sh, x_sw,
        HAS_BIAS: tl.constexpr, ORDERS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_C channels x BLOCK_S consecutive sequence positions s of one direction k of one image,
        # k = program_id(1) % ORDERS. ORDERS = 4: every direction computes its own tile (pixel q = s, or L - 1 - s
        # for the reversed ones). ORDERS = 2: directions 0 and 1 only, each tile also stored, flipped in registers,
        # as the mirrored block of its reversed direction: half the convolution work, but the flip costs more
        # than it saves on short sequences (H100: 2x slower at L = 1120, 1.6x faster at L = 17,600; H200: 1.4-1.5x
        # faster at L = 4400).
        # Rows are LP >= L apart; positions L..LP-1 (the padding) get zeros.
        batch = tl.program_id(2).to(tl.int64)
        k = tl.program_id(1) % ORDERS
        column_major, reverse = k % 2, k // 2
        channel = (tl.program_id(1) // ORDERS) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
        L = H * W
        s0 = tl.program_id(0) * BLOCK_S
        s = s0 + tl.arange(0, BLOCK_S)[None, :]
        q = tl.where(reverse == 1, L - 1 - s, s)
        # q = h * W + w in the row-major orders, w * H + h in the column-major ones: one division either way.
        inner = tl.where(column_major == 0, W, H)
        outer_index = q // inner
        inner_index = q - outer_index * inner
        h = tl.where(column_major == 0, outer_index, inner_index)
        w = tl.where(column_major == 0, inner_index, outer_index)
        valid = (channel < D) & (s < L)
        acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        plane = batch * x_sb + channel * x_sc
        u = _conv3x3_silu(acc, x_ptr, plane, h, w, H, W, x_sh, x_sw, w_ptr, tl.minimum(channel, D - 1), valid)
        u = tl.where(s < L, u, 0.0).to(out_ptr.dtype.element_ty)
        out = out_ptr + ((batch * 4 + k) * D + channel) * LP  # direction k's row at + k * D * LP
        in_row = (channel < D) & (s < LP)
        tl.store(out + s, u, mask=in_row)
        if ORDERS == 2:
            # The reversed direction: s lands on L - 1 - s, so the tile fills [L - s0 - BLOCK_S, L - s0) backwards;
            # its padding is stored where the forward direction's is.
            mirrored = (L - s0 - BLOCK_S) + tl.arange(0, BLOCK_S)[None, :]
            tl.store(out + 2 * D * LP + mirrored, tl.flip(u, 1), mask=(channel < D) & (mirrored >= 0))
            tl.store(out + 2 * D * LP + s, tl.zeros_like(u), mask=in_row & (s >= L))

    @triton.jit
    def _conv_silu_channel_scan_kernel(
        x_ptr, w_ptr, b_ptr, out_ptr, D, H, W, x_sb, x_sc, x_sh, x_sw,
        HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_C channels x BLOCK_P pixels of one image, written as rows of (B, 2, P, D).
        batch = tl.program_id(2).to(tl.int64)
        c0 = tl.program_id(1) * BLOCK_C
        channel = c0 + tl.arange(0, BLOCK_C)[:, None]
        pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
        P = H * W
        valid = (channel < D) & (pixel < P)
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + channel, mask=channel < D, other=0.0).to(tl.float32)
        plane = batch * x_sb + channel * x_sc
        h = pixel // W
        w = pixel - h * W
        v = _conv3x3_silu(acc, x_ptr, plane, h, w, H, W, x_sh, x_sw, w_ptr, tl.minimum(channel, D - 1), valid)
        v = v.to(out_ptr.dtype.element_ty)
        out = out_ptr + (batch * 2 * P + pixel) * D
        tl.store(out + channel, v, mask=valid)
        # Direction 1 holds channel c at D - 1 - c: the tile fills [D - c0 - BLOCK_C, D - c0) backwards.
        mirrored = (D - c0 - BLOCK_C) + tl.arange(0, BLOCK_C)[:, None]
        tl.store(out + P * D + mirrored, tl.flip(v, 0), mask=(mirrored >= 0) & (pixel < P))

    @triton.jit
    def _cross_merge_kernel(ys_ptr, out_ptr, D, H, W, LP, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
        # One program: a BLOCK_H x BLOCK_W pixel tile of one (batch, channel) plane; ys rows are LP apart.
        # m = (Y0 + rev Y2) + T(Y1 + rev Y3), summed in cross_merge's order. The reversed rows are read at
        # decreasing addresses, still whole sectors per warp (flipping forward reads measured no faster).
        plane = tl.program_id(1).to(tl.int64)  # batch * D + channel
        tiles_w = tl.cdiv(W, BLOCK_W)
        h = (tl.program_id(0) // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
        w = (tl.program_id(0) % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
        inside = (h < H) & (w < W)
        L = H * W
        ys = ys_ptr + ((plane // D) * 4 * D + plane % D) * LP  # direction k's row at + k * D * LP
        row_major, col_major = h * W + w, w * H + h
        # ys in float32 or half precision; the sum in float32.
        merged = tl.load(ys + row_major, mask=inside, other=0.0).to(tl.float32) + tl.load(
            ys + 2 * D * LP + (L - 1 - row_major), mask=inside, other=0.0
        ).to(tl.float32)
        merged += tl.load(ys + D * LP + col_major, mask=inside, other=0.0).to(tl.float32) + tl.load(
            ys + 3 * D * LP + (L - 1 - col_major), mask=inside, other=0.0
        ).to(tl.float32)
        tl.store(out_ptr + plane * L + row_major, merged, mask=inside)

    @triton.jit
    def _channel_merge_official_kernel(ys_ptr, out_ptr, D, H, W, BLOCK_R: tl.constexpr, BLOCK_J: tl.constexpr):
        # One program: a BLOCK_R x BLOCK_J tile of M = S0 + S1 with its W columns reversed, S_k the (P, D) buffer
        # of direction k read as a (D * H, W) matrix; output element n takes M[n mod DH, n div DH], so M[r, j]
        # lands at j * DH + r (ops/cross_scan.channel_merge).
        batch = tl.program_id(1).to(tl.int64)
        DH = D * H
        r = tl.program_id(0) // tl.cdiv(W, BLOCK_J) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        j0 = tl.program_id(0) % tl.cdiv(W, BLOCK_J) * BLOCK_J
        columns = tl.arange(0, BLOCK_J)[None, :]
        j = j0 + columns
        s0 = ys_ptr + batch * 2 * DH * W
        s1 = s0 + DH * W
        m = tl.load(s0 + r * W + j, mask=(r < DH) & (j < W), other=0.0)
        j_back = j0 + BLOCK_J - 1 - columns
        m += tl.flip(tl.load(s1 + r * W + (W - j0 - BLOCK_J) + columns, mask=(r < DH) & (j_back < W), other=0.0), 1)
        tl.store(out_ptr + batch * DH * W + j * DH + r, m, mask=(r < DH) & (j < W))

    @triton.jit
    def _channel_merge_intended_kernel(ys_ptr, out_ptr, D, P, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BLOCK_P pixels x BLOCK_C channels; m[c, p] = Y0[p, c] + Y1[p, D - 1 - c].
        batch = tl.program_id(2).to(tl.int64)
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
        c0 = tl.program_id(1) * BLOCK_C
        columns = tl.arange(0, BLOCK_C)[None, :]
        c = c0 + columns
        y0 = ys_ptr + batch * 2 * P * D
        m = tl.load(y0 + p * D + c, mask=(p < P) & (c < D), other=0.0)
        mirrored = (D - c0 - BLOCK_C) + columns
        m += tl.flip(tl.load(y0 + P * D + p * D + mirrored, mask=(p < P) & (mirrored >= 0), other=0.0), 1)
        tl.store(out_ptr + batch * D * P + c * P + p, m, mask=(p < P) & (c < D))


# Sequences longer than this take the two-order cross-scan kernel (flipped stores), shorter ones four orders.
# H200 sweep (docs/benchmarks.md, session 20), fp16, µs: at L = 4400 two orders 8.0 / 12.9 against four 11.3 / 19.5
# (D = 192 / 384); at L = 1120 four orders stay the faster with these tiles (7.2 / 11.5 against 10.8 / 16.8).
FLIPPED_STORES_ABOVE = 2048
# The kernels' spatial sequences are padded to a multiple of this many steps (module docstring).
SEQUENCE_ALIGN = 8


def padded_length(length: int) -> int:
    """The stored length of a sequence of `length` steps in the kernels' layout."""
    return -(-length // SEQUENCE_ALIGN) * SEQUENCE_ALIGN


def _tile(extent: int, largest: int) -> int:
    """A tile side: `largest`, or the power of two covering a shorter extent (less masked work)."""
    return min(largest, power_of_two_at_least(extent))


def _depthwise_weight(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv's weight, after checking that conv is the depthwise 3x3 convolution (stride 1, padding 1) of x."""
    channels = x.shape[1]
    geometry = (conv.in_channels, conv.out_channels, conv.groups, conv.kernel_size, conv.stride, conv.padding)
    depthwise = (channels, channels, channels, (3, 3), (1, 1), (1, 1))
    if geometry != depthwise or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError(f"expected a depthwise 3x3 convolution (stride 1, padding 1) of {channels} channels: {conv}")
    return conv.weight.contiguous()


def conv_silu_cross_scan(x: torch.Tensor, conv: nn.Conv2d, block: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, L'): cross_scan(SiLU(conv(x))) for conv a depthwise 3x3 convolution, then zeros:
    L' = H*W in the reference chain, padded_length(H*W) from the kernel (module docstring). `block` (channels,
    sequence positions per program) overrides the kernel's tile, for tuning."""
    weight = _depthwise_weight(x, conv)
    if not kernels_apply("conv_silu_cross_scan", x, weight, conv.bias):
        return scan_order.cross_scan(F.silu(conv(x)))
    batch, channels, height, width = x.shape
    length = height * width
    stored = padded_length(length)
    out = torch.empty(batch, 4, channels, stored, dtype=x.dtype, device=x.device)
    orders = 2 if length > FLIPPED_STORES_ABOVE else 4
    block_c, block_s = block or ((_tile(channels, 32), _tile(length, 64)) if orders == 2 else (_tile(channels, 64), 32))
    grid = (triton.cdiv(stored, block_s), orders * triton.cdiv(channels, block_c), batch)
    bias = conv.bias if conv.bias is not None else weight
    _conv_silu_cross_scan_kernel[grid](
        x, weight, bias, out, channels, height, width, stored, *x.stride(),
        HAS_BIAS=conv.bias is not None, ORDERS=orders, BLOCK_C=block_c, BLOCK_S=block_s, num_warps=4,
    )  # fmt: skip
    return out


def conv_silu_channel_scan(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """(B, D, H, W) -> (B, 2, H*W, D): channel_scan(SiLU(conv(x))) for conv a depthwise 3x3 convolution."""
    weight = _depthwise_weight(x, conv)
    if not kernels_apply("conv_silu_channel_scan", x, weight, conv.bias):
        return scan_order.channel_scan(F.silu(conv(x)))
    batch, channels, height, width = x.shape
    out = torch.empty(batch, 2, height * width, channels, dtype=x.dtype, device=x.device)
    block_c, block_p = _tile(channels, 32), _tile(height * width, 64)
    grid = (triton.cdiv(height * width, block_p), triton.cdiv(channels, block_c), batch)
    bias = conv.bias if conv.bias is not None else weight
    _conv_silu_channel_scan_kernel[grid](
        x, weight, bias, out, channels, height, width, *x.stride(),
        HAS_BIAS=conv.bias is not None, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )  # fmt: skip
    return out


def cross_merge_norm(
    ys: torch.Tensor,
    height: int,
    width: int,
    norm: nn.LayerNorm,
    out_dtype: torch.dtype,
    block: tuple[int, int] | None = None,
) -> torch.Tensor:
    """(B, 4, D, L') -> (B, D, H, W) channels-last in out_dtype: norm(cross_merge(ys[..., :H*W])) for norm a
    LayerNorm2d, the merge in float32 (ys float32 or half precision); L' is H*W or padded_length(H*W), as
    conv_silu_cross_scan makes it. `block` (rows, columns of the
    merge kernel's pixel tile) overrides its tile, for tuning."""
    batch, _, channels, stored = ys.shape
    length = height * width
    if ys.shape[:2] != (batch, 4) or stored not in (length, padded_length(length)):
        raise ValueError(f"ys must be (B, 4, D, L) with L = {length} or {padded_length(length)}, got {tuple(ys.shape)}")
    if not kernels_apply("cross_merge_norm", ys, norm.weight, norm.bias):
        return norm(scan_order.cross_merge(ys[..., :length].float(), height, width)).to(out_dtype)
    merged = torch.empty(batch, channels, height, width, dtype=torch.float32, device=ys.device)
    block_h, block_w = block or (_tile(height, 16), _tile(width, 32))
    grid = (triton.cdiv(height, block_h) * triton.cdiv(width, block_w), batch * channels)
    _cross_merge_kernel[grid](
        ys.contiguous(), merged, channels, height, width, stored, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=4
    )
    return norm(merged, out_dtype)


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
    if not kernels_apply("channel_merge_norm", ys, norm.weight, norm.bias):
        return norm(scan_order.channel_merge(ys, height, width, mode)).to(out_dtype)
    pixels = height * width
    if ys.shape != (batch, 2, pixels, channels):
        raise ValueError(f"ys must be (B, 2, P={pixels}, D), got {tuple(ys.shape)}")
    ys = ys.contiguous()
    merged = torch.empty(batch, channels, height, width, dtype=ys.dtype, device=ys.device)
    if mode == "official":
        block_r, block_j = _tile(channels * height, 32), _tile(width, 32)
        tiles = triton.cdiv(channels * height, block_r) * triton.cdiv(width, block_j)
        _channel_merge_official_kernel[(tiles, batch)](
            ys, merged, channels, height, width, BLOCK_R=block_r, BLOCK_J=block_j, num_warps=4
        )
    elif mode == "intended":
        block_p, block_c = _tile(pixels, 32), _tile(channels, 32)
        grid = (triton.cdiv(pixels, block_p), triton.cdiv(channels, block_c), batch)
        _channel_merge_intended_kernel[grid](
            ys, merged, channels, pixels, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4
        )
    else:
        raise ValueError(f"unknown channel merge {mode!r}; choose one of {list(scan_order.CHANNEL_MERGES)}")
    return norm(merged, out_dtype)


__all__ = ["channel_merge_norm", "conv_silu_channel_scan", "conv_silu_cross_scan", "cross_merge_norm"]
