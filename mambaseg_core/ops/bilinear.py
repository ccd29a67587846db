"""Bilinear sampling as PyTorch's F.interpolate(mode="bilinear", align_corners=False) computes it, for the Triton
kernels that upsample on the fly (ops/upsample_sum.py, ops/upsample_argmax.py): they read a small map's four
neighbours of every output pixel instead of writing the upsampled map out at full size."""

from __future__ import annotations

from mambaseg_core.ops.triton_support import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def bilinear_sample(origin, y, x, h_in, w_in, scale_y, scale_x, row_stride, pixel_stride, valid):
        """The float32 bilinear sample at output pixels (y, x) of maps whose pixel (0, 0) is at the pointers
        `origin` (one per map, e.g. per channel), pixel (i, j) at origin + i * row_stride + j * pixel_stride;
        scale_*: input size / output size. Masked-out entries read 0."""
        source_y = tl.maximum((y.to(tl.float32) + 0.5) * scale_y - 0.5, 0.0)
        source_x = tl.maximum((x.to(tl.float32) + 0.5) * scale_x - 0.5, 0.0)
        y0, x0 = source_y.to(tl.int32), source_x.to(tl.int32)  # floor: both are >= 0
        y1, x1 = tl.minimum(y0 + 1, h_in - 1), tl.minimum(x0 + 1, w_in - 1)
        ly, lx = source_y - y0, source_x - x0
        v00 = tl.load(origin + y0 * row_stride + x0 * pixel_stride, mask=valid, other=0.0).to(tl.float32)
        v01 = tl.load(origin + y0 * row_stride + x1 * pixel_stride, mask=valid, other=0.0).to(tl.float32)
        v10 = tl.load(origin + y1 * row_stride + x0 * pixel_stride, mask=valid, other=0.0).to(tl.float32)
        v11 = tl.load(origin + y1 * row_stride + x1 * pixel_stride, mask=valid, other=0.0).to(tl.float32)
        return (1.0 - ly) * ((1.0 - lx) * v00 + lx * v01) + ly * ((1.0 - lx) * v10 + lx * v11)
