"""Class ids at full resolution from low-resolution logits: the bilinear upsampling and the argmax over classes in
one pass.

`upsample_argmax_reference` is F.interpolate (bilinear, align_corners=False) then argmax over classes. For CUDA
inference a Triton kernel samples every class of an output pixel from the small map and writes only the uint8 id:
PyTorch writes the upsampled float32 logits at full size (K x H x W) and reads them back for the argmax, two
kernels at the end of the forward with nothing left to overlap them (about 70 us at DSEC's 440x640, H100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mambaseg_core.ops.triton_support import kernels_apply, pixel_strides, power_of_two_at_least, triton

MAX_CLASSES = 256  # ids are uint8


def upsample_argmax_reference(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) logits -> (B, H, W) uint8 ids of the bilinearly upsampled float32 logits (ties: lowest id)."""
    upsampled = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return upsampled.argmax(1).to(torch.uint8)


if triton is not None:
    import triton.language as tl

    from mambaseg_core.ops.bilinear import bilinear_sample

    @triton.jit
    def _upsample_argmax_kernel(
        logits_ptr, ids_ptr, K, H, W, h_in, w_in, scale_y, scale_x, stride_b, stride_k, stride_p,
        BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_P output pixels of one image, all classes.
        batch = tl.program_id(1).to(tl.int64)
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pixel = pixels[:, None]
        klass = tl.arange(0, BLOCK_K)[None, :]
        valid = (pixel < H * W) & (klass < K)
        origin = logits_ptr + batch * stride_b + klass * stride_k
        values = bilinear_sample(origin, pixel // W, pixel % W, h_in, w_in, scale_y, scale_x,
                                 w_in * stride_p, stride_p, valid)  # fmt: skip
        ids = tl.argmax(tl.where(valid, values, float("-inf")), axis=1, tie_break_left=True)
        tl.store(ids_ptr + batch * H * W + pixels, ids.to(tl.uint8), mask=pixels < H * W)


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) logits -> (B, H, W) uint8 class ids of the logits bilinearly upsampled to size = (H, W).
    The Triton kernel in CUDA inference (any layout with one pixel stride), else the reference."""
    if logits.dim() != 4 or not 0 < logits.shape[1] <= MAX_CLASSES:
        raise ValueError(f"logits must be (B, K, h, w) with 1 <= K <= {MAX_CLASSES}, got {tuple(logits.shape)}")
    strides = pixel_strides(logits)
    if strides is None or not kernels_apply("upsample_argmax", logits):
        return upsample_argmax_reference(logits, size)
    batch, classes, h_in, w_in = logits.shape
    height, width = size
    ids = torch.empty(batch, height, width, dtype=torch.uint8, device=logits.device)
    block_k = power_of_two_at_least(classes)
    block_p = max(16, 2048 // block_k)
    grid = (triton.cdiv(height * width, block_p), batch)
    _upsample_argmax_kernel[grid](
        logits, ids, classes, height, width, h_in, w_in, h_in / height, w_in / width, *strides,
        BLOCK_P=block_p, BLOCK_K=block_k, num_warps=4,
    )  # fmt: skip
    return ids


__all__ = ["MAX_CLASSES", "upsample_argmax", "upsample_argmax_reference"]
