"""LayerNorm over the channels of every pixel of a (B, C, H, W) tensor.

`layer_norm_2d_reference` is the plain PyTorch form (F.layer_norm on the channels-last view; with autograd, on
every device). For CUDA inference a Triton kernel normalises the NCHW tensor in place of it: it reads every
element once and writes the result once, in NCHW, where the reference path first copies the permuted view into a
contiguous buffer and returns a channels-last tensor (the DSEC graph spent 126 layer-norm and as many copy kernels
on this). Under autocast the output is float32, as F.layer_norm's is there; else the input's dtype.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

# Elements of x one program holds in registers: all C channels of BLOCK_P pixels.
_ELEMENTS_PER_PROGRAM = 8192
_MAX_CHANNELS = 4096


def layer_norm_2d_reference(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), normalised over C per pixel (a channels-last strided view)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)


@functools.cache
def _triton_kernel():
    """The Triton kernel, or None where Triton is not installed (CPU builds of torch)."""
    if importlib.util.find_spec("triton") is None:
        return None
    import triton
    import triton.language as tl

    @triton.jit
    def layer_norm_2d_kernel(x_ptr, w_ptr, b_ptr, y_ptr, C, HW, eps, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        # One program: all channels of BLOCK_P consecutive pixels of one image, loaded once (coalesced along the
        # pixels, the contiguous axis), two-pass mean and variance in registers, one store.
        batch = tl.program_id(1).to(tl.int64)
        channels = tl.arange(0, BLOCK_C)
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        channel_ok = channels < C
        mask = channel_ok[:, None] & (pixels < HW)[None, :]
        offsets = batch * C * HW + channels[:, None] * HW + pixels[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / C
        centred = tl.where(mask, x - mean[None, :], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / C + eps)
        w = tl.load(w_ptr + channels, mask=channel_ok, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + channels, mask=channel_ok, other=0.0).to(tl.float32)
        y = centred * rstd[None, :] * w[:, None] + b[:, None]
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)

    return layer_norm_2d_kernel


def uses_kernel(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> bool:
    """Whether layer_norm_2d takes the Triton kernel for these arguments: CUDA, no autograd, affine, not while
    torch.compile traces (Inductor fuses the norm with its neighbours itself), Triton installed."""
    return (
        x.is_cuda
        and x.dim() == 4
        and weight is not None
        and bias is not None
        and x.shape[1] <= _MAX_CHANNELS
        and not torch.compiler.is_compiling()
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad))
        and _triton_kernel() is not None
    )


def layer_norm_2d(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm over dim 1 of (B, C, H, W): the Triton kernel where `uses_kernel`, else the reference."""
    if not uses_kernel(x, weight, bias):
        return layer_norm_2d_reference(x, weight, bias, eps)
    batch, channels, height, width = x.shape
    x = x.contiguous()
    out_dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    block_c = 1 << (channels - 1).bit_length()  # the next power of two: Triton blocks are powers of two
    block_p = max(1, min(64, _ELEMENTS_PER_PROGRAM // block_c))
    grid = ((height * width + block_p - 1) // block_p, batch)
    _triton_kernel()[grid](
        x, weight, bias, y, channels, height * width, eps, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=8
    )
    return y


__all__ = ["layer_norm_2d", "layer_norm_2d_reference", "uses_kernel"]
