"""The residual sums at the end of a MambaSeg stage, where the DDIM's output meets the encoder's:
f = a + delta (the DDIM's output: the encoder's normalised stage output plus the DDIM's projection) and
x = o + f (the next stage's input: the stage output, the double residual), x in the downsampling convolution's
compute dtype.

`stage_residuals_reference` is PyTorch's two adds and the cast autocast makes in front of the convolution. For
CUDA inference one Triton kernel reads a, delta and o once and writes f and x, with the same float32 sums in the
same order and the same rounding of x, so the values are bit for bit PyTorch's: at DSEC's stage 0 PyTorch ran the
mixed-dtype sum a + delta as a slow unrolled kernel (10-11 µs on an H200), then o + f (6 µs) and the cast (3-5
µs), between the DDIM's last projection and the next stage's first convolution.
"""

from __future__ import annotations

import torch

from mambaseg_core.ops.triton_support import kernels_apply, triton


def stage_residuals_reference(
    a: torch.Tensor, delta: torch.Tensor, o: torch.Tensor, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, x) = (a + delta, (o + f) in out_dtype)."""
    f = a + delta
    return f, (o + f).to(out_dtype)


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _stage_residuals_kernel(a_ptr, delta_ptr, o_ptr, f_ptr, x_ptr, n, BLOCK: tl.constexpr):
        # Element for element over the tensors' common memory order.
        index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = index < n
        a = tl.load(a_ptr + index, mask=valid, other=0.0)
        delta = tl.load(delta_ptr + index, mask=valid, other=0.0)
        f = (a.to(tl.float32) + delta.to(tl.float32)).to(f_ptr.dtype.element_ty)
        tl.store(f_ptr + index, f, mask=valid)
        o = tl.load(o_ptr + index, mask=valid, other=0.0)
        x = o.to(tl.float32) + f.to(tl.float32)
        tl.store(x_ptr + index, x.to(x_ptr.dtype.element_ty), mask=valid)


def _dense_alike(*tensors: torch.Tensor) -> bool:
    """Whether the tensors have one shape and one dense memory order (NCHW or channels-last)."""
    first = tensors[0]
    dense = first.is_contiguous() or first.is_contiguous(memory_format=torch.channels_last)
    return dense and all(t.shape == first.shape and t.stride() == first.stride() for t in tensors)


def stage_residuals(
    a: torch.Tensor, delta: torch.Tensor, o: torch.Tensor, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, x) = (a + delta, (o + f) in out_dtype), f in the dtype PyTorch's sum has (a's and delta's promoted): one
    Triton kernel in CUDA inference for tensors of one shape and dense layout, else the reference."""
    f_dtype = torch.promote_types(a.dtype, delta.dtype)
    exact = torch.promote_types(o.dtype, f_dtype) == torch.float32 and f_dtype == torch.float32
    if not (exact and a.dim() == 4 and _dense_alike(a, delta, o) and kernels_apply("stage_residuals", a, delta, o)):
        return stage_residuals_reference(a, delta, o, out_dtype)
    f = torch.empty_like(a, dtype=f_dtype)
    x = torch.empty_like(a, dtype=out_dtype)
    block = 1024
    _stage_residuals_kernel[(triton.cdiv(a.numel(), block),)](a, delta, o, f, x, a.numel(), BLOCK=block)
    return f, x


__all__ = ["stage_residuals", "stage_residuals_reference"]
