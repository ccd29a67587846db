"""The fused scan-order kernels (ops/fused_cross_scan.py) and the LayerNorm2d kernel against their PyTorch chains.

Each case runs on the GPU (marked cuda) and, without one, in Triton's interpreter on CPU tensors where Triton is
installed: the same kernel code, so a wrong index or mask fails here without a GPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.models.layers import LayerNorm2d
from mambaseg_core.ops import cross_scan as scan_order
from mambaseg_core.ops import fused_cross_scan as fused
from mambaseg_core.ops import triton_support
from mambaseg_core.ops.layer_norm import (
    add_layer_norm_2d,
    layer_norm_2d,
    layer_norm_2d_reference,
    norm_twice,
    uses_kernel,
)


def tolerance(dtype: torch.dtype) -> dict:
    # The kernels round once from float32; the reference chain rounds after every op in half precision.
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


def depthwise(channels: int, bias: bool, device: str, dtype: torch.dtype) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=bias)
    return conv.to(device=device, dtype=dtype)


def norm_of(channels: int, device: str) -> LayerNorm2d:
    norm = LayerNorm2d(channels).to(device)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    nn.init.normal_(norm.bias)
    return norm


def as_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x in NCHW, channels-last, or a view with no single pixel stride (the kernels' strided loads)."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "cropped":
        padded = F.pad(x, (0, 3))
        return padded[..., : x.shape[-1]]
    return x


def check_conv_silu_scan(fused_op, scan, device, dtype, layout, channels, height, width, bias, stored=None) -> None:
    """fused_op(x, conv) against scan(SiLU(conv(x))) computed in float32, followed by zeros up to `stored` steps."""
    conv = depthwise(channels, bias, device, dtype)
    x = as_layout(torch.randn(2, channels, height, width, device=device).to(dtype), layout)
    expected = scan(F.silu(conv(x).float()))
    if stored is not None:
        expected = F.pad(expected, (0, stored - expected.shape[-1]))
    assert triton_support.kernels_apply("conv_silu_cross_scan", x, conv.weight)
    out = fused_op(x, conv)
    assert out.shape == expected.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
@pytest.mark.parametrize(
    ("channels", "height", "width", "bias"), [(6, 19, 37, True), (40, 3, 2, False), (5, 4, 6, True)]
)
@torch.no_grad()
def test_conv_silu_cross_scan(triton_device, dtype, layout, channels, height, width, bias):
    """Sequences of 703 and 6 steps are stored as 704 and 8, zeros after the last step; 24 steps need no padding."""
    stored = fused.padded_length(height * width)
    assert stored % fused.SEQUENCE_ALIGN == 0 and 0 <= stored - height * width < fused.SEQUENCE_ALIGN
    check_conv_silu_scan(
        fused.conv_silu_cross_scan, scan_order.cross_scan, triton_device, dtype, layout, channels, height, width, bias,
        stored,
    )  # fmt: skip


@torch.no_grad()
def test_conv_silu_cross_scan_of_long_sequences_shares_the_convolution(triton_device):
    """Above FLIPPED_STORES_ABOVE steps a tile is stored forwards and, flipped, into the reversed direction."""
    device = triton_device
    height, width = 43, 49  # 2107 steps, stored as 2112: the reversed rows' padding is written too
    assert height * width > fused.FLIPPED_STORES_ABOVE
    assert fused.padded_length(height * width) == 2112
    conv = depthwise(3, True, device, torch.bfloat16)
    x = as_layout(torch.randn(2, 3, height, width, device=device).to(torch.bfloat16), "channels_last")
    expected = F.pad(scan_order.cross_scan(F.silu(conv(x).float())), (0, 5))
    torch.testing.assert_close(fused.conv_silu_cross_scan(x, conv).float(), expected, **tolerance(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize(("channels", "height", "width", "bias"), [(40, 7, 13, True), (3, 2, 5, False)])
@torch.no_grad()
def test_conv_silu_channel_scan(triton_device, dtype, layout, channels, height, width, bias):
    check_conv_silu_scan(
        fused.conv_silu_channel_scan,
        scan_order.channel_scan,
        triton_device,
        dtype,
        layout,
        channels,
        height,
        width,
        bias,
    )


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("channels", "height", "width"), [(24, 11, 17), (300, 3, 4), (7, 1, 9), (3, 37, 35)])
@torch.no_grad()
def test_cross_merge_norm(triton_device, out_dtype, channels, height, width):
    device = triton_device
    norm = norm_of(channels, device)
    length = height * width
    ys = torch.randn(2, 4, channels, length, device=device)
    expected = layer_norm_2d_reference(scan_order.cross_merge(ys, height, width), norm.weight, norm.bias, norm.eps)
    # The padded layout of conv_silu_cross_scan, with NaN in the padding: it must never be read.
    padded = F.pad(ys, (0, fused.padded_length(length) - length), value=float("nan"))
    for stored in (ys, padded):
        y = fused.cross_merge_norm(stored, height, width, norm, out_dtype)
        assert y.shape == (2, channels, height, width) and y.dtype == out_dtype
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y.float(), expected, **tolerance(out_dtype))
    with pytest.raises(ValueError, match="ys must be"):
        fused.cross_merge_norm(F.pad(ys, (0, fused.SEQUENCE_ALIGN)), height, width, norm, out_dtype)


@pytest.mark.parametrize("ys_dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_cross_merge_norm_of_half_precision_scans(triton_device, ys_dtype):
    """SS2D's scans may hand over y in half precision (models/ssm.py): merged in float32, it gives exactly what the
    same values in float32 give, padded or not."""
    device, channels, height, width = triton_device, 24, 11, 17
    norm = norm_of(channels, device)
    ys = torch.randn(1, 4, channels, fused.padded_length(height * width), device=device).to(ys_dtype)
    y = fused.cross_merge_norm(ys, height, width, norm, torch.float16)
    assert y.dtype == torch.float16
    assert torch.equal(y, fused.cross_merge_norm(ys.float(), height, width, norm, torch.float16))


@pytest.mark.parametrize("mode", ["official", "intended"])
@pytest.mark.parametrize(("channels", "height", "width"), [(16, 5, 7), (130, 2, 3), (3, 2, 40)])
@torch.no_grad()
def test_channel_merge_norm(triton_device, mode, channels, height, width):
    device = triton_device
    norm = norm_of(channels, device)
    ys = torch.randn(2, 2, height * width, channels, device=device)
    merged = scan_order.channel_merge(ys, height, width, mode)
    expected = layer_norm_2d_reference(merged, norm.weight, norm.bias, norm.eps)
    y = fused.channel_merge_norm(ys, height, width, mode, norm, torch.float32)
    assert y.shape == (2, channels, height, width) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, expected, **tolerance(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
@pytest.mark.parametrize(("channels", "height", "width"), [(48, 9, 11), (768, 2, 3)])
@torch.no_grad()
def test_layer_norm_kernel_reads_any_layout_and_writes_channels_last(
    triton_device, dtype, layout, channels, height, width
):
    device = triton_device
    norm = norm_of(channels, device)
    x = as_layout((torch.randn(2, channels, height, width, device=device) * 3 + 1).to(dtype), layout)
    assert uses_kernel(x, norm.weight, norm.bias)
    y = layer_norm_2d(x, norm.weight, norm.bias, norm.eps)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    expected = layer_norm_2d_reference(x.double(), norm.weight.double(), norm.bias.double(), norm.eps)
    torch.testing.assert_close(y.double(), expected, **tolerance(dtype))


@pytest.mark.parametrize(("x_dtype", "delta_dtype"), [(torch.float32, torch.float32), (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
@pytest.mark.parametrize(("channels", "height", "width"), [(48, 9, 11), (300, 2, 3)])
@torch.no_grad()
def test_add_layer_norm_kernel_returns_the_residual_sum_and_its_norm(
    triton_device, x_dtype, delta_dtype, layout, channels, height, width
):
    """A float32 residual stream plus a branch output (float32 or half) -> their sum (promoted) and its norm."""
    device = triton_device
    norm = norm_of(channels, device)
    x = as_layout((torch.randn(2, channels, height, width, device=device) * 3 + 1).to(x_dtype), layout)
    delta = (
        torch.randn(2, channels, height, width, device=device)
        .to(delta_dtype)
        .contiguous(memory_format=torch.channels_last)
    )
    total, y = add_layer_norm_2d(x, delta, norm.weight, norm.bias, norm.eps, torch.bfloat16)
    expected_total = x + delta
    assert total.dtype == expected_total.dtype == torch.float32 and y.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last)
    # The kernel writes the sum channels-last; a map with no single pixel stride takes the PyTorch add instead.
    assert total.is_contiguous(memory_format=torch.channels_last) == (layout != "cropped")
    torch.testing.assert_close(total, expected_total, rtol=0, atol=0)
    expected = layer_norm_2d_reference(expected_total.double(), norm.weight.double(), norm.bias.double(), norm.eps)
    torch.testing.assert_close(y.double(), expected, **tolerance(torch.bfloat16))


@pytest.mark.parametrize("with_delta", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize(("channels", "height", "width"), [(48, 9, 11), (300, 2, 3)])
@torch.no_grad()
def test_norm_twice_returns_the_sum_its_norm_and_the_norm_of_that(
    triton_device, with_delta, layout, channels, height, width
):
    """An encoder stage's end: s = x (+ delta), a = out_norm(s), n = ddim_norm(a), in one kernel."""
    device = triton_device
    first, second = norm_of(channels, device), norm_of(channels, device)
    nn.init.uniform_(second.weight, 2.0, 3.0)  # a second norm unlike the first: swapping them shows
    x = as_layout(torch.randn(2, channels, height, width, device=device) * 3 + 1, layout)
    delta = torch.randn(2, channels, height, width, device=device).contiguous(memory_format=torch.channels_last)
    total, a, n = norm_twice(x, delta if with_delta else None, first.params(), second.params())
    expected_total = x + delta if with_delta else x
    torch.testing.assert_close(total, expected_total, rtol=0, atol=0)
    expected_a = layer_norm_2d_reference(expected_total.double(), first.weight.double(), first.bias.double(), 1e-5)
    expected_n = layer_norm_2d_reference(expected_a, second.weight.double(), second.bias.double(), 1e-5)
    for actual, expected in ((a, expected_a), (n, expected_n)):
        assert actual.dtype == torch.float32 and actual.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(actual.double(), expected, **tolerance(torch.float32))


def test_without_the_kernels_the_reference_chain_runs_and_autograd_flows():
    conv = depthwise(4, True, "cpu", torch.float32)
    x = torch.randn(1, 4, 5, 6, requires_grad=True)
    assert not triton_support.kernels_apply("conv_silu_cross_scan", x, conv.weight)
    xs = fused.conv_silu_cross_scan(x, conv)
    torch.testing.assert_close(xs, scan_order.cross_scan(F.silu(conv(x))))
    norm = norm_of(4, "cpu")
    fused.cross_merge_norm(xs, 5, 6, norm, torch.float32).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and norm.weight.grad is not None


def test_a_convolution_that_is_not_depthwise_3x3_is_refused():
    x = torch.randn(1, 4, 5, 6)
    for conv in (nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 5, padding=2, groups=4), nn.Conv2d(4, 4, 3, groups=4)):
        with pytest.raises(ValueError, match="depthwise 3x3"):
            fused.conv_silu_cross_scan(x, conv)
