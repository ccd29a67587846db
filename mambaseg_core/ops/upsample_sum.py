"""ReLU(base + the bilinear upsamplings of smaller maps to base's size): the SegFormer head's full-resolution step.

`upsample_sum_relu_reference` is F.interpolate (bilinear, align_corners=False) and adds. For CUDA inference a
Triton kernel reads every source pixel's four neighbours straight from the small channels-last maps and writes the
result once, channels-last, in the requested dtype; PyTorch writes every upsampled map at full size in float32
(interpolation runs in float32 under autocast) and then reads them all back to add them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mambaseg_core.ops.triton_support import kernels_apply, triton

MAX_SOURCES = 3


def upsample_sum_relu_reference(base: torch.Tensor, sources: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, E, H, W) and maps (B, E, h_i, w_i) -> ReLU(base + sum_i upsample(source_i to H x W))."""
    total = base
    for source in sources:
        total = total + F.interpolate(source, size=base.shape[-2:], mode="bilinear", align_corners=False)
    return torch.relu(total)


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _add_bilinear(acc, z_ptr, batch, y, x, h_in, w_in, scale_y, scale_x, E, channel, valid):
        """acc + the bilinear sample (align_corners=False, as PyTorch computes it) of the channels-last map z at
        output pixels (y, x)."""
        source_y = tl.maximum((y.to(tl.float32) + 0.5) * scale_y - 0.5, 0.0)
        source_x = tl.maximum((x.to(tl.float32) + 0.5) * scale_x - 0.5, 0.0)
        y0, x0 = source_y.to(tl.int32), source_x.to(tl.int32)  # floor: both are >= 0
        y1, x1 = tl.minimum(y0 + 1, h_in - 1), tl.minimum(x0 + 1, w_in - 1)
        ly, lx = source_y - y0, source_x - x0
        image = z_ptr + batch * h_in * w_in * E + channel
        v00 = tl.load(image + (y0 * w_in + x0) * E, mask=valid, other=0.0).to(tl.float32)
        v01 = tl.load(image + (y0 * w_in + x1) * E, mask=valid, other=0.0).to(tl.float32)
        v10 = tl.load(image + (y1 * w_in + x0) * E, mask=valid, other=0.0).to(tl.float32)
        v11 = tl.load(image + (y1 * w_in + x1) * E, mask=valid, other=0.0).to(tl.float32)
        return acc + ((1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11))

    @triton.jit
    def _upsample_sum_relu_kernel(
        base_ptr, z1_ptr, z2_ptr, z3_ptr, out_ptr, E, H, W,
        h1, w1, sy1, sx1, h2, w2, sy2, sx2, h3, w3, sy3, sx3,
        SOURCES: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_P output pixels x BLOCK_C channels of one image, every map channels-last (the channel
        # vectors of a pixel contiguous).
        batch = tl.program_id(2).to(tl.int64)
        pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
        channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
        valid = (pixel < H * W) & (channel < E)
        offsets = (batch * H * W + pixel) * E + channel
        acc = tl.load(base_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
        y, x = pixel // W, pixel % W
        if SOURCES >= 1:
            acc = _add_bilinear(acc, z1_ptr, batch, y, x, h1, w1, sy1, sx1, E, channel, valid)
        if SOURCES >= 2:
            acc = _add_bilinear(acc, z2_ptr, batch, y, x, h2, w2, sy2, sx2, E, channel, valid)
        if SOURCES >= 3:
            acc = _add_bilinear(acc, z3_ptr, batch, y, x, h3, w3, sy3, sx3, E, channel, valid)
        tl.store(out_ptr + offsets, tl.maximum(acc, 0.0).to(out_ptr.dtype.element_ty), mask=valid)


def upsample_sum_relu(
    base: torch.Tensor, sources: Sequence[torch.Tensor], out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """ReLU(base + sum_i bilinear upsample(sources[i] to base's H x W)), channels-last, in out_dtype (default:
    base's dtype); base (B, E, H, W), sources (B, E, h_i, w_i). The Triton kernel in CUDA inference for up to
    MAX_SOURCES sources, else the reference."""
    out_dtype = out_dtype or base.dtype
    if len(sources) > MAX_SOURCES or not kernels_apply(base, *sources):
        return upsample_sum_relu_reference(base, sources).to(out_dtype)
    batch, channels, height, width = base.shape
    for source in sources:
        if source.shape[:2] != (batch, channels):
            raise ValueError(f"every map must be (B={batch}, E={channels}, h, w), got {tuple(source.shape)}")
    maps = [z.contiguous(memory_format=torch.channels_last) for z in (base, *sources)]
    out = torch.empty(base.shape, dtype=out_dtype, device=base.device, memory_format=torch.channels_last)
    pointers = maps[1:] + [maps[0]] * (MAX_SOURCES - len(sources))  # unused slots: any valid map
    geometry: list[float] = []
    for z in pointers:
        h, w = z.shape[-2:]
        geometry += [h, w, h / height, w / width]
    block_p, block_c = 32, 64
    grid = (triton.cdiv(height * width, block_p), triton.cdiv(channels, block_c), batch)
    _upsample_sum_relu_kernel[grid](
        maps[0], *pointers, out, channels, height, width, *geometry,
        SOURCES=len(sources), BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return out


__all__ = ["MAX_SOURCES", "upsample_sum_relu", "upsample_sum_relu_reference"]
