"""What the Triton inference kernels of ops/ share: whether they may run, and the pixel layout they address.

The kernels replace chains of small PyTorch ops in CUDA inference only. Elsewhere the plain PyTorch form runs:
on the CPU, with autograd (the kernels have no backward), while torch.compile traces (Inductor fuses those ops
itself), and where Triton is not installed (CPU builds of torch). With TRITON_INTERPRET=1 set before this module
is imported, and RUN_ON_CPU switched on, Triton's interpreter runs the same kernels on CPU tensors (the tests do
this where Triton is installed).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
except ImportError:
    triton = None

INTERPRETED = triton is not None and os.environ.get("TRITON_INTERPRET", "0") == "1"
RUN_ON_CPU = False  # with INTERPRETED: take the kernels for CPU tensors too (tests only; the interpreter is slow)


def kernels_apply(*tensors: torch.Tensor | None) -> bool:
    """Whether the Triton inference kernels take these arguments: all on a CUDA device (or RUN_ON_CPU in the
    interpreter), none needing a gradient, not under torch.compile tracing, Triton installed."""
    if triton is None or torch.compiler.is_compiling():
        return False
    present = [t for t in tensors if t is not None]
    if not all(t.is_cuda for t in present) and not (INTERPRETED and RUN_ON_CPU):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in present))


def pixel_strides(x: torch.Tensor) -> tuple[int, int, int] | None:
    """(batch, channel, pixel) strides of a (B, C, H, W) tensor whose pixel h * W + w sits at that index times one
    stride (NCHW- or channels-last-contiguous, and many views); None when no single pixel stride exists."""
    _, _, height, width = x.shape
    stride_b, stride_c, stride_h, stride_w = x.stride()
    if width == 1:
        return stride_b, stride_c, stride_h
    if height == 1 or stride_h == width * stride_w:
        return stride_b, stride_c, stride_w
    return None


def power_of_two_at_least(n: int) -> int:
    """Triton block sizes are powers of two."""
    return 1 << max(0, n - 1).bit_length()


__all__ = [
    "INTERPRETED",
    "RUN_ON_CPU",
    "kernels_apply",
    "pixel_strides",
    "power_of_two_at_least",
    "triton",
]
