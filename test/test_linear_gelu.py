"""GELU(per-pixel linear): the Triton kernel (CUDA inference, half precision) against the float64 formula."""

from __future__ import annotations

import pytest
import torch

from mambaseg_core.models.layers import Linear2d, linear_gelu
from mambaseg_core.ops import linear_gelu as op


def case(rows: int, k: int, n: int, device: str, dtype: torch.dtype = torch.float16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=gen).to(device, dtype)
    weight = (torch.randn(n, k, generator=gen) / k**0.5).to(device, dtype)
    bias = torch.randn(n, generator=gen).to(device, dtype)
    return x, weight, bias


def by_formula(x, weight, bias) -> torch.Tensor:
    return torch.nn.functional.gelu(x.double() @ weight.double().t() + bias.double())


@torch.no_grad()
@pytest.mark.parametrize(
    ("rows", "k", "n"),
    [
        (300, 96, 384),  # the stage-0 width, rows not a multiple of the row block
        (1000, 64, 200),  # columns not a multiple of the column block
        (8200, 32, 128),  # the large-row configuration
    ],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_matches_the_formula_rounded_once(triton_device, rows, k, n, dtype):
    x, weight, bias = case(rows, k, n, triton_device, dtype, seed=rows)
    assert op.uses_kernel(x, weight, bias)
    y = op.linear_gelu(x, weight, bias)
    assert y.shape == (rows, n) and y.dtype == dtype
    expected = by_formula(x, weight, bias)
    # One rounding of the result (half an ulp: ~5e-4 relative in fp16, ~4e-3 in bf16), plus float32 accumulation.
    tolerance = 1e-3 if dtype == torch.float16 else 8e-3
    torch.testing.assert_close(y.double(), expected, rtol=tolerance, atol=tolerance)


def test_other_arguments_take_the_reference():
    x, weight, bias = case(10, 96, 40, "cpu")
    assert not op.uses_kernel(x, weight, bias)  # on the CPU without the interpreter
    x32, w32, b32 = x.float(), weight.float(), bias.float()
    assert not op.uses_kernel(x32, w32, None)
    torch.testing.assert_close(op.linear_gelu(x32, w32, b32).double(), by_formula(x32, w32, b32), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_what_the_kernel_does_not_take(triton_device):
    x, weight, bias = case(64, 96, 40, triton_device)
    assert op.uses_kernel(x, weight, bias)
    assert not op.uses_kernel(x.float(), weight.float(), bias.float())  # float32: cuBLAS, no TF32
    assert not op.uses_kernel(x, weight, None)
    assert not op.uses_kernel(x[:, :72], weight[:, :72].contiguous(), bias)  # K not a multiple of 32
    assert not op.uses_kernel(x.t().contiguous().t(), weight, bias)  # columns not contiguous


@torch.no_grad()
def test_per_pixel_form_on_a_channels_last_map_equals_the_module_then_gelu(triton_device):
    torch.manual_seed(0)
    linear = Linear2d(64, 256).to(triton_device, torch.float16)
    x = torch.randn(2, 64, 5, 7, device=triton_device, dtype=torch.float16).contiguous(
        memory_format=torch.channels_last
    )
    y = linear_gelu(linear, x)
    assert y.shape == (2, 256, 5, 7) and y.is_contiguous(memory_format=torch.channels_last)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 64)
    expected = by_formula(rows, linear.weight, linear.bias).view(2, 5, 7, 256).permute(0, 3, 1, 2)
    torch.testing.assert_close(y.double(), expected, rtol=1e-3, atol=1e-3)
