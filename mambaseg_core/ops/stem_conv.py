"""The first step of a VMamba stem: a 3x3 stride-2 convolution of the few input channels (RGB, gray or the voxel
grid's time bins), its bias, LayerNorm2d over its output channels and the exact GELU, in one pass.

`stem_conv_reference` is the module chain (conv, norm, GELU). In CUDA inference one Triton kernel computes it: each
program gathers the 3x3 windows of its output pixels (the im2col tile, C_in*9 wide), multiplies them with the weight
on the tensor cores, and normalises, activates and stores the output channels of those pixels, channels-last. cuDNN
runs a convolution of 1-10 input channels without tensor cores and PyTorch adds its bias in a separate pass: on an
H200 the DSEC image stem's conv1 took 50 µs, then 12 µs for the bias and 12 for the norm and GELU, with the input's
cast to half precision in front; all of it on the critical path at the start of every forward.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.ops.triton_support import kernels_apply, power_of_two_at_least, triton

MAX_WINDOW = 256  # C_in * 9 at most: the im2col tile stays in registers
MAX_CHANNELS = 256  # output channels at most


def stem_conv_reference(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module, out_dtype: torch.dtype) -> torch.Tensor:
    """GELU(norm(conv(x))) with the norm's result in out_dtype (LayerNorm2d's `out_dtype`)."""
    return F.gelu(norm(conv(x), out_dtype))


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _stem_conv_kernel(
        x_ptr, w_ptr, bias_ptr, nw_ptr, nb_ptr, out_ptr, C_in, H, W, C_out, OH, OW,
        x_sb, x_sc, x_sh, x_sw, w_so, w_si, w_sh, w_sw, eps,
        IEEE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        # One program: BLOCK_P output pixels of one image, all output channels. k = (ci, kh, kw) in C_in x 3 x 3.
        batch = tl.program_id(1).to(tl.int64)
        pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
        k = tl.arange(0, BLOCK_K)[None, :]
        ci, kh, kw = k // 9, (k % 9) // 3, k % 3
        ih, iw = (pixel // OW) * 2 - 1 + kh, (pixel % OW) * 2 - 1 + kw  # stride 2, padding 1
        inside = (pixel < OH * OW) & (k < C_in * 9) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        window = tl.load(x_ptr + batch * x_sb + ci * x_sc + ih * x_sh + iw * x_sw, mask=inside, other=0.0)
        k_col = tl.arange(0, BLOCK_K)[:, None]
        channel = tl.arange(0, BLOCK_C)[None, :]
        weight = tl.load(
            w_ptr + channel * w_so + (k_col // 9) * w_si + ((k_col % 9) // 3) * w_sh + (k_col % 3) * w_sw,
            mask=(k_col < C_in * 9) & (channel < C_out),
            other=0.0,
        )
        if IEEE:  # float32 weights: the accuracy reference, no TF32
            y = tl.dot(window.to(tl.float32), weight.to(tl.float32), input_precision="ieee")
        else:  # the input cast to the weights' half precision, as autocast does for the convolution
            y = tl.dot(window.to(weight.dtype), weight)
        valid = channel < C_out
        y += tl.load(bias_ptr + channel, mask=valid, other=0.0).to(tl.float32)
        mean = tl.sum(tl.where(valid, y, 0.0), axis=1)[:, None] / C_out
        centred = tl.where(valid, y - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1)[:, None] / C_out + eps)
        normed = centred * rstd * tl.load(nw_ptr + channel, mask=valid, other=0.0).to(tl.float32)
        normed += tl.load(nb_ptr + channel, mask=valid, other=0.0).to(tl.float32)
        activated = 0.5 * normed * (1.0 + tl.math.erf(normed * 0.7071067811865476))
        out = out_ptr + batch * OH * OW * C_out + pixel * C_out + channel
        tl.store(out, activated.to(out_ptr.dtype.element_ty), mask=(pixel < OH * OW) & valid)


def _kernel_fits(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> bool:
    geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode)
    return (
        x.dim() == 4
        and geometry == ((3, 3), (2, 2), (1, 1), (1, 1), 1, "zeros")
        and conv.bias is not None
        and conv.in_channels * 9 <= MAX_WINDOW
        and conv.out_channels <= MAX_CHANNELS
        and isinstance(norm, nn.LayerNorm)
        and norm.weight is not None
        and norm.bias is not None
        and kernels_apply("stem_conv", x, conv.weight, conv.bias, norm.weight, norm.bias)
    )


def stem_conv(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module, out_dtype: torch.dtype) -> torch.Tensor:
    """GELU(norm(conv(x))) for a 3x3 stride-2 padding-1 convolution with bias and a LayerNorm2d `norm` of its
    channels: (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2)) channels-last in out_dtype. The Triton kernel in
    CUDA inference (half-precision weights: the input is cast to them, as under autocast; float32 weights: IEEE
    float32 products), else the reference chain."""
    if not _kernel_fits(x, conv, norm):
        return stem_conv_reference(x, conv, norm, out_dtype)
    batch, _, height, width = x.shape
    out_h, out_w = (height + 1) // 2, (width + 1) // 2
    weight = conv.weight
    out = torch.empty(batch, out_h, out_w, conv.out_channels, dtype=out_dtype, device=x.device)
    block_p = 64
    grid = (triton.cdiv(out_h * out_w, block_p), batch)
    _stem_conv_kernel[grid](
        x, weight, conv.bias, norm.weight, norm.bias, out, conv.in_channels, height, width, conv.out_channels,
        out_h, out_w, *x.stride(), *weight.stride(), norm.eps,
        IEEE=weight.dtype == torch.float32, BLOCK_P=block_p,
        BLOCK_K=max(16, power_of_two_at_least(conv.in_channels * 9)),
        BLOCK_C=max(16, power_of_two_at_least(conv.out_channels)),
    )  # fmt: skip
    return out.permute(0, 3, 1, 2)


__all__ = ["MAX_CHANNELS", "MAX_WINDOW", "stem_conv", "stem_conv_reference"]
