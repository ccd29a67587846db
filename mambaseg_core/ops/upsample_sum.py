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

    from mambaseg_core.ops.bilinear import bilinear_sample

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
            acc += bilinear_sample(z1_ptr + batch * h1 * w1 * E + channel, y, x, h1, w1, sy1, sx1, w1 * E, E, valid)
        if SOURCES >= 2:
            acc += bilinear_sample(z2_ptr + batch * h2 * w2 * E + channel, y, x, h2, w2, sy2, sx2, w2 * E, E, valid)
        if SOURCES >= 3:
            acc += bilinear_sample(z3_ptr + batch * h3 * w3 * E + channel, y, x, h3, w3, sy3, sx3, w3 * E, E, valid)
        tl.store(out_ptr + offsets, tl.maximum(acc, 0.0).to(out_ptr.dtype.element_ty), mask=valid)


def upsample_sum_relu(
    base: torch.Tensor, sources: Sequence[torch.Tensor], out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """ReLU(base + sum_i bilinear upsample(sources[i] to base's H x W)), channels-last, in out_dtype (default:
    base's dtype); base (B, E, H, W), sources (B, E, h_i, w_i). The Triton kernel in CUDA inference for up to
    MAX_SOURCES sources, else the reference."""
    out_dtype = out_dtype or base.dtype
    if len(sources) > MAX_SOURCES or not kernels_apply("upsample_sum_relu", base, *sources):
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
    # 16 x 128 tiles: of 20 tried, the best at both head sizes (H200: DSEC 34.6 µs, the fastest 34.3, against 37.3
    # for 32 x 64; DDD17 10.2, the fastest).
    block_p, block_c = 16, 128
    grid = (triton.cdiv(height * width, block_p), triton.cdiv(channels, block_c), batch)
    _upsample_sum_relu_kernel[grid](
        maps[0], *pointers, out, channels, height, width, *geometry,
        SOURCES=len(sources), BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return out


__all__ = ["MAX_SOURCES", "upsample_sum_relu", "upsample_sum_relu_reference"]
