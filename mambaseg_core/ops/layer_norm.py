"""LayerNorm over the channels of every pixel of a (B, C, H, W) tensor.

`layer_norm_2d_reference` is the plain PyTorch form: F.layer_norm on the channels-last view, which returns a
channels-last tensor. For CUDA inference a Triton kernel does the same in one read and one write (the reference
first copies the permuted view into a contiguous buffer): it reads NCHW or channels-last input in place and
writes the same channels-last layout as the reference, which the 1x1 convolutions and nn.Linear layers after
every norm of the model take without a layout conversion. Under autocast the output is float32, as
F.layer_norm's is there; else the input's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from mambaseg_core.ops.triton_support import fast_path, kernels_apply, pixel_strides, power_of_two_at_least, triton

# Elements of x one program holds in registers: all C channels of up to BLOCK_P pixels.
ELEMENTS_PER_PROGRAM = 8192
MAX_CHANNELS = 4096


def layer_norm_2d_reference(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), normalised over C per pixel (a channels-last strided view)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _normalise(x, mask, channels, C, w_ptr, b_ptr, eps):
        """The affine LayerNorm of the float32 tile x (BLOCK_C channels x BLOCK_P pixels) over its channels: two-pass
        mean and variance in registers; entries outside mask must be 0."""
        mean = tl.sum(x, axis=0)[None, :] / C
        centred = tl.where(mask, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0)[None, :] / C + eps)
        weight = tl.load(w_ptr + channels, mask=channels < C, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + channels, mask=channels < C, other=0.0).to(tl.float32)
        return centred * rstd * weight + bias

    @triton.jit
    def _store_norms(y, mask, channels, C, out, y_ptr, w2_ptr, b2_ptr, z_ptr, eps2, SECOND: tl.constexpr):
        """Store the normalised tile y; with SECOND also the second norm of it as stored (z = norm2(y))."""
        y = y.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + out, y, mask=mask)
        if SECOND:
            # y is 0 past C (weight and bias load as 0 there), as _normalise needs; pixels past HW are not stored.
            z = _normalise(y.to(tl.float32), mask, channels, C, w2_ptr, b2_ptr, eps2)
            tl.store(z_ptr + out, z.to(z_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _layer_norm_2d_kernel(
        x_ptr, xb_ptr, w_ptr, b_ptr, y_ptr, w2_ptr, b2_ptr, z_ptr, C, HW, x_sb, x_sc, x_sp, eps, eps2,
        X_BIAS: tl.constexpr, SECOND: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # One program: all channels of BLOCK_P consecutive pixels of one image, loaded once (X_BIAS: plus a
        # per-channel bias of x), normalised in registers, one store (SECOND: normalised again by a second norm, a
        # second store).
        batch = tl.program_id(1).to(tl.int64)
        channels = tl.arange(0, BLOCK_C)[:, None]
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
        mask = (channels < C) & (pixels < HW)
        x = tl.load(x_ptr + batch * x_sb + channels * x_sc + pixels * x_sp, mask=mask, other=0.0).to(tl.float32)
        if X_BIAS:  # 0 past C, as _normalise needs; pixels past HW are not stored
            x += tl.load(xb_ptr + channels, mask=channels < C, other=0.0).to(tl.float32)
        y = _normalise(x, mask, channels, C, w_ptr, b_ptr, eps)
        out = batch * HW * C + pixels * C + channels
        _store_norms(y, mask, channels, C, out, y_ptr, w2_ptr, b2_ptr, z_ptr, eps2, SECOND)

    @triton.jit
    def _add_layer_norm_2d_kernel(
        x_ptr, d_ptr, w_ptr, b_ptr, s_ptr, y_ptr, w2_ptr, b2_ptr, z_ptr, C, HW, x_sb, x_sc, x_sp, d_sb, d_sc, d_sp,
        eps, eps2, SECOND: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        # _layer_norm_2d_kernel of s = x + delta, with s stored too (channels-last, in its own dtype): the residual
        # sum and the norm that follows it in one read of each input.
        batch = tl.program_id(1).to(tl.int64)
        channels = tl.arange(0, BLOCK_C)[:, None]
        pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
        mask = (channels < C) & (pixels < HW)
        x = tl.load(x_ptr + batch * x_sb + channels * x_sc + pixels * x_sp, mask=mask, other=0.0)
        d = tl.load(d_ptr + batch * d_sb + channels * d_sc + pixels * d_sp, mask=mask, other=0.0)
        total = (x.to(tl.float32) + d.to(tl.float32)).to(s_ptr.dtype.element_ty)
        out = batch * HW * C + pixels * C + channels
        tl.store(s_ptr + out, total, mask=mask)
        y = _normalise(total.to(tl.float32), mask, channels, C, w_ptr, b_ptr, eps)
        _store_norms(y, mask, channels, C, out, y_ptr, w2_ptr, b2_ptr, z_ptr, eps2, SECOND)


def _default_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a normalisation returns for input x: float32 under autocast (as F.layer_norm's), else x's."""
    return torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype


def uses_kernel(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> bool:
    """Whether layer_norm_2d takes the Triton kernel for these arguments (ops/triton_support.kernels_apply, and an
    affine norm of a 4-D tensor of at most MAX_CHANNELS channels)."""
    return (
        x.dim() == 4
        and weight is not None
        and bias is not None
        and x.shape[1] <= MAX_CHANNELS
        and kernels_apply("layer_norm", x, weight, bias)
    )


class Norm(NamedTuple):
    """An affine LayerNorm2d's parameters, for a norm applied after another (`norm_twice`)."""

    weight: torch.Tensor
    bias: torch.Tensor
    eps: float


def _second_norm_args(y: torch.Tensor, then: Norm | None) -> tuple[torch.Tensor | None, tuple]:
    """The second norm's output tensor (in y's layout, the dtype layer_norm_2d would give for y) and kernel
    arguments (y's own buffers where there is none: the kernel does not touch them then)."""
    if then is None:
        return None, (y.new_empty(0), y.new_empty(0), y, 1e-5)
    z = torch.empty_like(y, dtype=_default_dtype(y))
    return z, (then.weight, then.bias, z, then.eps)


def _block(channels: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): all channels, and as many pixels (at most 64) as fit the register budget."""
    block_c = power_of_two_at_least(channels)
    return block_c, max(1, min(64, ELEMENTS_PER_PROGRAM // block_c))


def _layer_norm_2d(
    x: torch.Tensor,
    norm: Norm,
    out_dtype: torch.dtype | None,
    then: Norm | None,
    x_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kernel's layer_norm_2d of x (plus x_bias, per channel, if given), and with `then` the second norm of its
    result (else None)."""
    strides = pixel_strides(x)
    if strides is None:  # no single pixel stride: read an NCHW copy
        x = x.contiguous()
        strides = (x.stride(0), x.stride(1), 1)
    batch, channels, height, width = x.shape
    y = torch.empty(x.shape, dtype=out_dtype or _default_dtype(x), device=x.device, memory_format=torch.channels_last)
    z, second = _second_norm_args(y, then)
    block_c, block_p = _block(channels)
    _layer_norm_2d_kernel[(triton.cdiv(height * width, block_p), batch)](
        x, x if x_bias is None else x_bias, norm.weight, norm.bias, y, *second[:3], channels, height * width,
        *strides, norm.eps, second[3], X_BIAS=x_bias is not None, SECOND=then is not None, BLOCK_C=block_c,
        BLOCK_P=block_p, num_warps=8,
    )  # fmt: skip
    return y, z


def layer_norm_2d(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """LayerNorm over dim 1 of (B, C, H, W): the Triton kernel where `uses_kernel`, else the reference; both
    return a channels-last tensor, in out_dtype if given (the kernel rounds its float32 result once)."""
    if not uses_kernel(x, weight, bias):
        y = layer_norm_2d_reference(x, weight, bias, eps)
        return y if out_dtype is None else y.to(out_dtype)
    assert weight is not None and bias is not None
    return _layer_norm_2d(x, Norm(weight, bias, eps), out_dtype, None)[0]


def bias_layer_norm_2d(
    x: torch.Tensor, x_bias: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """layer_norm_2d(x + x_bias) for a per-channel x_bias (C,): a convolution's bias added by the norm's kernel where
    `uses_kernel` (the sum not rounded to x's dtype before the norm), else the two PyTorch steps."""
    if not (uses_kernel(x, weight, bias) and kernels_apply("layer_norm", x_bias)):
        return layer_norm_2d(x + x_bias[:, None, None], weight, bias, eps)
    assert weight is not None and bias is not None
    return _layer_norm_2d(x, Norm(weight, bias, eps), None, None, x_bias)[0]


def add_layer_norm_2d(
    x: torch.Tensor,
    delta: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, layer_norm_2d(s)) for the residual sum s = x + delta (promoted dtype, channels-last), in one kernel
    where `uses_kernel` and both inputs have a single pixel stride; else the two PyTorch steps."""
    total, y, _ = _add_layer_norm_2d(x, delta, weight, bias, eps, out_dtype, None)
    return total, y


def _add_layer_norm_2d(
    x: torch.Tensor,
    delta: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    out_dtype: torch.dtype | None,
    then: Norm | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """add_layer_norm_2d, and with `then` the kernel's second norm of its normalised result (None where the kernel
    does not apply: norm_twice makes it then)."""
    usable = uses_kernel(x, weight, bias) and kernels_apply("layer_norm", delta) and x.shape == delta.shape
    x_strides, delta_strides = (pixel_strides(x), pixel_strides(delta)) if usable else (None, None)
    if x_strides is None or delta_strides is None:
        total = x + delta
        return total, layer_norm_2d(total, weight, bias, eps, out_dtype), None
    batch, channels, height, width = x.shape
    sum_dtype = torch.promote_types(x.dtype, delta.dtype)
    total = torch.empty(x.shape, dtype=sum_dtype, device=x.device, memory_format=torch.channels_last)
    out_dtype = out_dtype or (torch.float32 if torch.is_autocast_enabled(x.device.type) else sum_dtype)
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device, memory_format=torch.channels_last)
    z, second = _second_norm_args(y, then)
    block_c, block_p = _block(channels)
    _add_layer_norm_2d_kernel[(triton.cdiv(height * width, block_p), batch)](
        x, delta, weight, bias, total, y, *second[:3], channels, height * width, *x_strides, *delta_strides, eps,
        second[3], SECOND=then is not None, BLOCK_C=block_c, BLOCK_P=block_p, num_warps=8,
    )  # fmt: skip
    return total, y, z


def norm_twice(
    x: torch.Tensor, delta: torch.Tensor | None, first: Norm, second: Norm
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, y, z): s = x + delta (x without delta), y = first(s), z = second(y), each norm in the dtype
    layer_norm_2d gives by default; one kernel where it applies (a norm that feeds straight into another, as the
    encoders' out-norms feed the DDIM's norms), else the PyTorch steps."""
    then = second if fast_path("norm_twice") else None  # else the kernel of each norm on its own
    if delta is not None:
        total, y, z = _add_layer_norm_2d(x, delta, first.weight, first.bias, first.eps, None, then)
    elif uses_kernel(x, first.weight, first.bias):
        total, (y, z) = x, _layer_norm_2d(x, first, None, then)
    else:
        total, y, z = x, layer_norm_2d(x, first.weight, first.bias, first.eps), None
    if z is None:
        z = layer_norm_2d(y, second.weight, second.bias, second.eps)
    return total, y, z


__all__ = [
    "Norm",
    "add_layer_norm_2d",
    "bias_layer_norm_2d",
    "layer_norm_2d",
    "layer_norm_2d_reference",
    "norm_twice",
    "uses_kernel",
]
