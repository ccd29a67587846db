"""GELU(a per-pixel linear layer with its bias): the first projection of every VSS block's MLP.

`linear_gelu_reference` is F.linear then the exact (erf) GELU, as nn.Linear + nn.GELU() run it. For CUDA inference
in half precision a Triton matrix product does both: the bias and the GELU are applied to the float32 accumulator
and the result is rounded once. cuBLAS's epilogues offer only the tanh approximation of GELU, so PyTorch runs the
GELU as a kernel of its own: run K3's trace of a DSEC forward has 30 of them (6-13 µs each, 0.2 ms in all), every
one on its encoder's critical path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mambaseg_core.ops.triton_support import INTERPRETED, kernels_apply, triton

# Input channels are read BLOCK_K at a time with no mask: the kernel takes only multiples of this.
K_MULTIPLE = 32
# Below this many rows the row block halves, so that the small late-stage products still fill the GPU.
LARGE_M = 8192


def linear_gelu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(M, K) rows, weight (N, K), bias (N,) -> GELU(x @ weight.T + bias), (M, N)."""
    return F.gelu(F.linear(x, weight, bias))


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _linear_gelu_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, x_sm,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        FLOAT32_DOT: tl.constexpr,
    ):  # fmt: skip
        # One program: a BLOCK_M x BLOCK_N tile of y. Programs go down GROUP_M row blocks before the next column
        # block, so that a group's rows of x stay in L2 while the weight's columns stream past.
        pid = tl.program_id(0)
        blocks_m, blocks_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        first_m = (pid // (GROUP_M * blocks_n)) * GROUP_M
        group_m = min(blocks_m - first_m, GROUP_M)
        block_m = first_m + (pid % (GROUP_M * blocks_n)) % group_m
        block_n = (pid % (GROUP_M * blocks_n)) // group_m
        rows = (block_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        cols = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ks = tl.arange(0, BLOCK_K)
        row_ok, col_ok = rows < M, cols < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            a = tl.load(x_ptr + rows[:, None] * x_sm + (k + ks)[None, :], mask=row_ok[:, None], other=0.0)
            b = tl.load(w_ptr + cols[None, :] * K + (k + ks)[:, None], mask=col_ok[None, :], other=0.0)
            if FLOAT32_DOT:
                a, b = a.to(tl.float32), b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        y = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        out = y_ptr + rows[:, None] * N + cols[None, :]
        tl.store(out, y.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def uses_kernel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether linear_gelu takes the Triton kernel: fp16/bf16 rows with unit column stride and a bias, K a multiple
    of K_MULTIPLE, and ops/triton_support.kernels_apply. Float32 stays with cuBLAS: the kernel's float32 product
    would use TF32 (the float32 path is the accuracy reference)."""
    return (
        bias is not None
        and x.dim() == 2
        and x.dtype in (torch.float16, torch.bfloat16)
        and weight.dtype == x.dtype
        and x.stride(1) == 1
        and weight.is_contiguous()
        and x.shape[1] % K_MULTIPLE == 0
        and kernels_apply("linear_gelu", x, weight, bias)
    )


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """GELU(x @ weight.T + bias) for (M, K) rows x: one Triton kernel where `uses_kernel`, else the reference
    (which autocast casts as it casts F.linear)."""
    if not uses_kernel(x, weight, bias):
        return linear_gelu_reference(x, weight, bias)
    assert bias is not None
    (rows, channels), outputs = x.shape, weight.shape[0]
    y = torch.empty((rows, outputs), dtype=x.dtype, device=x.device)
    block_m, warps = (128, 8) if rows >= LARGE_M else (64, 4)
    block_n, block_k = 128, 64 if channels % 64 == 0 else 32
    grid = (triton.cdiv(rows, block_m) * triton.cdiv(outputs, block_n),)
    _linear_gelu_kernel[grid](
        x, weight, bias, y, rows, outputs, channels, x.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8,
        # Triton's interpreter multiplies bfloat16 tiles as raw integers; float32 is exact for them there.
        FLOAT32_DOT=INTERPRETED and x.dtype == torch.bfloat16, num_warps=warps, num_stages=3,
    )  # fmt: skip
    return y


__all__ = ["linear_gelu", "linear_gelu_reference", "uses_kernel"]
