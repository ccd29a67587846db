"""The residual sums at a stage's end (ops/stage_residuals.py): the kernel gives PyTorch's values bit for bit."""

from __future__ import annotations

import pytest
import torch

from mambaseg_core.ops.stage_residuals import stage_residuals, stage_residuals_reference


@pytest.mark.parametrize(
    ("delta_dtype", "out_dtype"),
    [(torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)],
)
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@torch.no_grad()
def test_kernel_gives_the_pytorch_sums_bit_for_bit(triton_device, delta_dtype, out_dtype, layout):
    gen = torch.Generator().manual_seed(0)
    a, delta, o = (torch.randn(2, 24, 7, 9, generator=gen) * 4 for _ in range(3))
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    a, o = (t.to(triton_device).contiguous(memory_format=memory_format) for t in (a, o))
    delta = delta.to(triton_device, delta_dtype).contiguous(memory_format=memory_format)
    f, x = stage_residuals(a, delta, o, out_dtype)
    expected_f, expected_x = stage_residuals_reference(a.cpu(), delta.cpu(), o.cpu(), out_dtype)
    assert f.dtype == torch.float32 and x.dtype == out_dtype
    assert f.stride() == a.stride() and x.stride() == a.stride()
    assert torch.equal(f.cpu(), expected_f)
    if out_dtype == torch.bfloat16 and x.device.type == "cpu":
        # Triton's interpreter narrows float32 to bfloat16 by truncation, the GPU (and PyTorch) round to nearest.
        torch.testing.assert_close(x.float(), expected_x.float(), rtol=2**-7, atol=0)
    else:
        assert torch.equal(x.cpu(), expected_x)


@torch.no_grad()
def test_mixed_layouts_take_the_pytorch_sums(triton_device):
    a = torch.randn(1, 8, 4, 5, device=triton_device).contiguous(memory_format=torch.channels_last)
    delta, o = torch.randn(1, 8, 4, 5, device=triton_device), torch.randn(1, 8, 4, 5, device=triton_device)
    f, x = stage_residuals(a, delta, o, torch.float16)  # delta and o NCHW, a channels-last: no common order
    expected_f, expected_x = stage_residuals_reference(a, delta, o, torch.float16)
    assert torch.equal(f, expected_f) and torch.equal(x, expected_x)
