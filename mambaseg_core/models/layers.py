"""Small building blocks shared by the encoder, the fusion modules and the head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Generic, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.ops.layer_norm import Norm, add_layer_norm_2d, layer_norm_2d
from mambaseg_core.ops.triton_support import fast_path

T = TypeVar("T")


class DerivedWeights(Generic[T]):
    """A value computed from parameters (a folded or transformed weight), kept for reuse until one of its
    sources changes, in place or replaced (their version counters and storage)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: T | None = None

    def get(self, sources: Sequence[torch.Tensor], compute: Callable[[], T]) -> T:
        key = tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in sources)
        if self._value is None or self._key != key:
            self._value, self._key = compute(), key
        return self._value


def _cuda_time_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    """GPU milliseconds of `repeats` calls of fn on the current stream, after one untimed call. The calls are
    queued behind a ~0.5 ms spin kernel, so that the GPU runs them back to back: timed as the host launches them, a
    few-microsecond projection would measure the host's launch overhead, not the kernel (the choices came out at
    random before)."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)  # clock cycles
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


# (equation, shapes, dtypes, device) -> column-major is faster; shared by every ProjectionLayout of the process, so
# that equal projections (the image and event paths, every engine) make the same choice.
_LAYOUT_CHOICES: dict[tuple, bool] = {}


class ProjectionLayout:
    """`torch.einsum(equation, x, weight)` for a batched projection weight (K, M, N), with the weight stored in the
    faster of two orders: as it is, or column-major in its last two dimensions (the same values, transposed
    strides). cuBLAS chooses its kernels by layout and shape, and for some of the model's projections one order is
    3-5x faster than the other (H100: DSEC TSSM0 dt_proj 114 vs 39 µs, DDD17 TSSM0 x_proj 50 vs 9 µs, and the
    reverse at other shapes), with no rule that holds across shapes, cards and libraries. So in CUDA inference each
    shape is timed once per process, outside any CUDA-graph capture and on an otherwise idle GPU (it synchronises
    the device first: the other branch's kernels would skew the timing), and the faster order kept (like
    cudnn.benchmark); autograd, torch.compile and the CPU take the weight as it is."""

    def __init__(self, equation: str, timer: Callable[[Callable[[], object]], float] = _cuda_time_ms):
        self.equation = equation
        self.timer = timer
        self._column_major: DerivedWeights[torch.Tensor] = DerivedWeights()

    @staticmethod
    def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
        grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        return x.is_cuda and not grad and not torch.compiler.is_compiling()

    def column_major(self, weight: torch.Tensor) -> torch.Tensor:
        return self._column_major.get([weight], lambda: weight.detach().mT.contiguous().mT)

    def _choose(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether column-major is faster: the best of two alternating rounds of each order."""
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        times = {False: float("inf"), True: float("inf")}
        stored = {False: weight, True: self.column_major(weight)}
        for _ in range(2):
            for column in (False, True):
                times[column] = min(times[column], self.timer(partial(torch.einsum, self.equation, x, stored[column])))
        return times[True] < times[False]

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if not self.applies(x, weight):
            return torch.einsum(self.equation, x, weight)
        key = (self.equation, tuple(x.shape), tuple(weight.shape), x.dtype, weight.dtype, projection_dtype(x), x.device)
        column = _LAYOUT_CHOICES.get(key)
        if column is None:
            if x.is_cuda and torch.cuda.is_current_stream_capturing():  # no timing (it synchronises) in a capture
                return torch.einsum(self.equation, x, weight)
            column = _LAYOUT_CHOICES[key] = self._choose(x, weight)
            if not column:
                self._column_major = DerivedWeights()  # the copy made for the timing is not needed
        return torch.einsum(self.equation, x, self.column_major(weight) if column else weight)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of every pixel of a (B, C, H, W) tensor (eps 1e-5, affine); a Triton kernel in
    CUDA inference (ops/layer_norm.py)."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """out_dtype: the result's dtype, where a projection follows (see projection_dtype); by default float32
        under autocast, else x's."""
        return layer_norm_2d(x, self.weight, self.bias, self.eps, out_dtype)

    def after_residual(
        self, x: torch.Tensor, delta: torch.Tensor, out_dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + delta, self(x + delta, out_dtype)), fused into one kernel in CUDA inference."""
        return add_layer_norm_2d(x, delta, self.weight, self.bias, self.eps, out_dtype)

    def params(self) -> Norm:
        """The norm's parameters, for ops/layer_norm.norm_twice."""
        return Norm(self.weight, self.bias, self.eps)


def projection_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer or convolution computes in for input x: the autocast dtype where autocast is on,
    else x's. A norm that feeds one can return this dtype directly: the cast autocast would make, made earlier."""
    device = x.device.type
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    return torch.get_autocast_dtype(device) if autocast else x.dtype


class Linear2d(nn.Linear):
    """A per-pixel linear layer on (B, C_in, H, W) -> (B, C_out, H, W), applied as a 1x1 conv.

    It keeps nn.Linear's 2-D (C_out, C_in) weight, as the official VMamba checkpoints store it.
    It is deliberately a subclass, not nn.Linear itself: the paper's thop count skips it (spec §9.1).
    A channels-last input (what LayerNorm2d returns) is one matrix product over its (B*H*W, C_in) view, with the
    bias added inside the GEMM and a channels-last result; the 1x1 convolution adds the bias in a separate pass.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _channels_last_linear(x, self.weight, self.bias)
        return y if y is not None else F.conv2d(x, self.weight[:, :, None, None], self.bias)


def _is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor stored channels-last (and not also NCHW-contiguous): its pixel rows are one (B*H*W, C) matrix."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _pixel_rows(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _channels_last_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """F.linear over the (B*H*W, C_in) pixel rows of a channels-last (B, C_in, H, W) x, the bias inside the GEMM,
    as a channels-last (B, C_out, H, W); None for any other layout."""
    if not _is_channels_last(x):
        return None
    batch, _, height, width = x.shape
    y = F.linear(_pixel_rows(x), weight, bias)
    return y.view(batch, height, width, -1).permute(0, 3, 1, 2)


def project_and_add(
    project: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor, x: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """residual + project(x) for `project` the bias-free per-pixel projection with `weight` (C_out, C_in). On a CUDA
    device, for channels-last x and residual, one GEMM that adds into the residual in place (addmm_: the sum rounded
    once, no separate add kernel, and no copy of the residual, which out-of-place addmm makes first), so `residual`
    must be the caller's own (a skip projection's fresh output); elsewhere project(x) + residual (the module itself
    runs: the CPU reference path, and mambaseg-info's MAC count, which hooks it)."""
    batch, _, height, width = x.shape
    fits = residual.shape == (batch, weight.shape[0], height, width)
    if x.is_cuda and fits and _is_channels_last(x) and _is_channels_last(residual) and fast_path("project_and_add"):
        _pixel_rows(residual).addmm_(_pixel_rows(x), weight.t())
        return residual
    return project(x) + residual


def linear_gelu(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """GELU(linear(x)) for a per-pixel linear layer (Linear2d) on (B, C_in, H, W). In half-precision CUDA inference,
    for a channels-last x: one cuBLASLt GEMM with the bias and the GELU in its epilogue, which is the tanh form of the
    GELU (within 5e-4 of the exact one, about a half-precision rounding of the output; fp32 keeps the exact GELU, the
    accuracy reference). The separate GELU pass it replaces read and wrote the 4C-wide hidden activations in each MLP
    (H200, DSEC stage 0: GEMM + GELU 20.5 µs -> 14.3; a Triton GEMM with the exact GELU took 15.8 there and lost to
    cuBLAS at the later stages)."""
    half = x.dtype in (torch.float16, torch.bfloat16) and linear.weight.dtype == x.dtype
    inference = not torch.is_grad_enabled() and not torch.compiler.is_compiling()  # Inductor fuses the GELU itself
    if (
        x.is_cuda
        and half
        and inference
        and linear.bias is not None
        and _is_channels_last(x)
        and fast_path("linear_gelu")
    ):
        batch, _, height, width = x.shape
        y = torch._addmm_activation(linear.bias, _pixel_rows(x), linear.weight.t(), use_gelu=True)
        return y.view(batch, height, width, -1).permute(0, 3, 1, 2)
    return F.gelu(linear(x))


def conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x) for a 1x1 convolution (stride 1, no groups). On a CUDA device a channels-last x is one matrix product
    with the bias inside the GEMM, as in Linear2d: PyTorch adds a cuDNN convolution's bias in a separate broadcast
    pass (the DDIM's skip and output convolutions: 6 of those per stage). Elsewhere the module itself runs (the CPU
    reference path, and mambaseg-info's MAC count, which hooks the module)."""
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1:
        raise ValueError(f"conv1x1 needs a 1x1 convolution with stride 1, no padding and one group, got {conv}")
    y = _channels_last_linear(x, conv.weight.flatten(1), conv.bias) if x.is_cuda else None
    return y if y is not None else conv(x)


def per_pixel_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Apply a plain nn.Linear to every pixel of (B, C_in, H, W), giving (B, C_out, H, W).

    Used where the official model has a true nn.Linear on flattened tokens (TSSM, SegFormer head),
    so that the module type, and thus the thop-style count, stays the official one.
    """
    return linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample with probability `drop_prob` in training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
