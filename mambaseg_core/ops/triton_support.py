"""What the Triton inference kernels of ops/ share: whether they may run, and the pixel layout they address.

The kernels replace chains of small PyTorch ops in CUDA inference only. Elsewhere the plain PyTorch form runs:
on the CPU, with autograd (the kernels have no backward), while torch.compile traces (Inductor fuses those ops
itself), and where Triton is not installed (CPU builds of torch). With TRITON_INTERPRET=1 set before this module
is imported, and RUN_ON_CPU switched on, Triton's interpreter runs the same kernels on CPU tensors (the tests do
this where Triton is installed).

`MAMBASEG_PYTORCH_OPS` (comma-separated names of FAST_PATHS) sends named inference fast paths back to their plain
PyTorch form, to isolate one when debugging or timing it: e.g. MAMBASEG_PYTORCH_OPS=norm_twice,joint_spatial_gate.
An unknown name fails at import, naming it.
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

# The inference fast paths by name: the Triton kernels of ops/ and the GEMM forms of models/layers and the head.
FAST_PATHS = frozenset(
    {
        "camera_image",  # ops/camera_image
        "channel_gate",  # ops/attention_gates
        "spatial_attention",
        "pixel_stats",
        "swapped_channel_gates",
        "joint_spatial_gate",
        "conv_silu_cross_scan",  # ops/fused_cross_scan
        "conv_silu_channel_scan",
        "cross_merge_norm",
        "channel_merge_norm",
        "layer_norm",  # ops/layer_norm: every LayerNorm2d kernel
        "norm_twice",  # ops/layer_norm: a norm's kernel also making the norm that follows it
        "upsample_sum_relu",  # ops/upsample_sum
        "upsample_argmax",  # ops/upsample_argmax
        "folded_head",  # models/segformer_head: the folded SegFormer head
        "padded_classifier",  # models/segformer_head: its classifier as a padded GEMM
        "project_and_add",  # models/layers: a residual added by the output projection's GEMM
        "linear_gelu",  # models/layers: the MLP's GELU in its first GEMM's epilogue
        "stage_residuals",  # ops/stage_residuals
        "stem_conv",  # ops/stem_conv
    }
)


def pytorch_ops_from(value: str) -> frozenset[str]:
    """The fast paths a MAMBASEG_PYTORCH_OPS value names; ValueError naming any unknown one."""
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    unknown = names - FAST_PATHS
    if unknown:
        raise ValueError(f"MAMBASEG_PYTORCH_OPS: unknown fast path(s) {sorted(unknown)}; known: {sorted(FAST_PATHS)}")
    return names


PYTORCH_OPS = pytorch_ops_from(os.environ.get("MAMBASEG_PYTORCH_OPS", ""))


def fast_path(op: str) -> bool:
    """Whether the inference fast path `op` (one of FAST_PATHS) is on, i.e. not named in MAMBASEG_PYTORCH_OPS."""
    if op not in FAST_PATHS:
        raise ValueError(f"unknown fast path {op!r}")
    return op not in PYTORCH_OPS


def kernels_run_on(op: str, device: torch.device) -> bool:
    """Whether the Triton inference kernel of `op` runs on `device`: the fast path on, a CUDA device (or RUN_ON_CPU
    in the interpreter), not under torch.compile tracing, Triton installed."""
    if triton is None or not fast_path(op) or torch.compiler.is_compiling():
        return False
    return device.type == "cuda" or (INTERPRETED and RUN_ON_CPU)


def kernels_apply(op: str, *tensors: torch.Tensor | None) -> bool:
    """Whether the Triton inference kernel of `op` takes these arguments: kernels_run_on the device of each, none
    needing a gradient."""
    present = [t for t in tensors if t is not None]
    if not present or not all(kernels_run_on(op, t.device) for t in present):
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
    "FAST_PATHS",
    "INTERPRETED",
    "PYTORCH_OPS",
    "RUN_ON_CPU",
    "fast_path",
    "kernels_apply",
    "kernels_run_on",
    "pixel_strides",
    "power_of_two_at_least",
    "pytorch_ops_from",
    "triton",
]
