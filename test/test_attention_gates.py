"""The fused attention-gate kernels (ops/attention_gates.py) against their PyTorch forms.

On the GPU (marked cuda) and, without one, in Triton's interpreter on CPU tensors where Triton is installed."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseg_core.ops import attention_gates as gates
from mambaseg_core.ops import triton_support


def as_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "cropped":  # no single pixel stride: rows of a wider map
        return F.pad(x, (0, 3))[..., : x.shape[-1]]
    return x


def convs(channels: int, hidden: int, device: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The gate's bias-free 1x1 projections C -> hidden -> C, scaled to give logits of order 1."""
    torch.manual_seed(2)
    reduce, expand = nn.Conv2d(channels, hidden, 1, bias=False), nn.Conv2d(hidden, channels, 1, bias=False)
    with torch.no_grad():
        reduce.weight.normal_(0, channels**-0.5)
        expand.weight.normal_(0, hidden**-0.5)
    return reduce.to(device, dtype), expand.to(device, dtype)


def tolerance(dtype: torch.dtype) -> dict:
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
@pytest.mark.parametrize(
    ("channels", "hidden", "height", "width", "with_max"),
    [(96, 6, 9, 11, True), (20, 5, 40, 50, False), (70, 70, 3, 2, True)],  # 2000 pixels: 31 pooled slices
)
@torch.no_grad()
def test_channel_gate(triton_device, dtype, layout, channels, hidden, height, width, with_max):
    torch.manual_seed(0)
    offsets = torch.randn(channels, 1, 1, device=triton_device) * 2  # per-channel means for the gate to tell apart
    x = as_layout((torch.randn(2, channels, height, width, device=triton_device) + offsets).to(dtype), layout)
    reduce, expand = convs(channels, hidden, triton_device, dtype)
    assert triton_support.kernels_apply("channel_gate", x, reduce.weight, expand.weight)
    reference = [copy.deepcopy(conv).double() for conv in (reduce, expand)]
    expected = gates.channel_gate_reference(x.double(), *reference, with_max)
    gate = gates.channel_gate(x, reduce, expand, with_max)
    assert gate.shape == (2, channels, 1, 1) and gate.dtype == dtype
    torch.testing.assert_close(gate.double(), expected, **tolerance(dtype))
    assert float(expected.std()) > 0.05  # the gate varies over channels: a wrong pooling shows


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
@pytest.mark.parametrize(("channels", "height", "width"), [(70, 7, 13), (3, 20, 9), (4, 70, 80)])
@torch.no_grad()
def test_pixel_stats_fill_two_planes_of_a_strided_output(triton_device, dtype, layout, channels, height, width):
    torch.manual_seed(1)
    x = as_layout(torch.randn(2, channels, height, width, device=triton_device).to(dtype), layout)
    stats = torch.full((2, 4, height, width), float("nan"), dtype=dtype, device=triton_device)
    expected = torch.cat([x.double().mean(1, keepdim=True), x.double().amax(1, keepdim=True)], dim=1)
    assert gates.pixel_stats(x, stats[:, 1:3]) is not None
    torch.testing.assert_close(stats[:, 1:3].double(), expected, **tolerance(dtype))
    assert stats[:, [0, 3]].isnan().all()  # nothing written outside the two planes


def check_both_modalities(op, reference_op, image, events, projections, out_dtype) -> tuple[torch.Tensor, ...]:
    """op(image, events, *projections, out_dtype) against reference_op in float64: shapes, dtypes, values; returns
    the reference's (gated image, gated events)."""
    reference = [copy.deepcopy(conv).double() for conv in projections]
    expected = reference_op(image.double(), events.double(), *reference, torch.float64)
    for actual, wanted in zip(op(image, events, *projections, out_dtype), expected, strict=True):
        assert actual.shape == image.shape and actual.dtype == out_dtype
        torch.testing.assert_close(actual.double(), wanted, **tolerance(out_dtype))
    return expected


@pytest.mark.parametrize(("dtype", "out_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize(("channels", "height", "width"), [(96, 9, 11), (7, 40, 50), (70, 3, 2)])
@torch.no_grad()
def test_swapped_channel_gates(triton_device, dtype, out_dtype, layout, channels, height, width):
    torch.manual_seed(5)
    offsets = torch.randn(2, 1, channels, 1, 1, device=triton_device) * 2  # per modality and channel
    image, events = (
        as_layout((torch.randn(2, channels, height, width, device=triton_device) + offsets[k]).to(dtype), layout)
        for k in range(2)
    )
    reduce, expand = convs(channels, max(1, channels // 4), triton_device, dtype)
    expected = check_both_modalities(
        gates.swapped_channel_gates, gates.swapped_channel_gates_reference, image, events, (reduce, expand), out_dtype
    )
    reference = [copy.deepcopy(conv).double() for conv in (reduce, expand)]
    unswapped = image.double() * gates.channel_gate_reference(events.double(), *reference, with_max=False)
    assert (unswapped - expected[0]).abs().max() > 0.1  # the swap changes the result: a missed swap shows


def test_swapped_channel_gates_refuse_other_shapes():
    image = torch.randn(1, 8, 4, 4)
    reduce, expand = convs(8, 2, "cpu")
    with pytest.raises(ValueError, match="one shape"):
        gates.swapped_channel_gates(image, image[:, :, :2], reduce, expand, torch.float32)
    with pytest.raises(ValueError, match="bias-free 1x1 convolutions 8 -> hidden -> 8"):
        gates.swapped_channel_gates(image, image, expand, reduce, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
@pytest.mark.parametrize(("channels", "height", "width", "size"), [(96, 9, 11, 7), (5, 20, 9, 3), (70, 3, 2, 7)])
@pytest.mark.parametrize("into", [False, True])
@torch.no_grad()
def test_spatial_attention(triton_device, dtype, layout, channels, height, width, size, into):
    torch.manual_seed(6)
    field = torch.randn(2, 1, height, width, device=triton_device)  # statistics that vary over the pixels
    x = as_layout((torch.randn(2, channels, height, width, device=triton_device) + field).to(dtype), layout)
    conv = nn.Conv2d(2, 1, size, padding=size // 2, bias=False)
    with torch.no_grad():
        conv.weight.normal_(0, 0.3)
    conv = conv.to(triton_device, dtype)
    if layout == "channels_last":  # the weight as the engine stores it: read through its strides, not copied
        conv = conv.to(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()
    expected = gates.spatial_attention_reference(x.double(), copy.deepcopy(conv).double())
    # `into`: the second half of a channels-last concatenation, as the DDIM passes it.
    both = torch.full((2, 2 * channels, height, width), float("nan"), dtype=dtype, device=triton_device)
    both = both.contiguous(memory_format=torch.channels_last)
    out = gates.spatial_attention(x, conv, both[:, channels:] if into else None)
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, **tolerance(dtype))
    if into:
        assert out.data_ptr() == both[:, channels:].data_ptr() and both[:, :channels].isnan().all()
    gate = expected / x.double()
    assert float(gate[gate.isfinite()].std()) > 0.02  # a gate that varies over the pixels: a wrong tap shows


def test_spatial_attention_refuses_other_convolutions():
    x = torch.randn(1, 8, 5, 5)
    for wrong in (nn.Conv2d(2, 1, 7, padding=2, bias=False), nn.Conv2d(2, 1, 7, padding=3), nn.Conv2d(3, 1, 3, 1, 1)):
        with pytest.raises(ValueError, match="2 -> 1"):
            gates.spatial_attention(x, wrong)
    with pytest.raises(ValueError, match="out must have"):
        gates.spatial_attention(x, nn.Conv2d(2, 1, 3, padding=1, bias=False), torch.empty(1, 8, 5, 4))


def spatial_gate_convs(units: int, device: str, dtype: torch.dtype) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The joint spatial gate's 1x1 projections 4 -> units -> 2 with biases, scaled to give logits of order 1."""
    torch.manual_seed(3)
    hidden, out = nn.Conv2d(4, units, 1), nn.Conv2d(units, 2, 1)
    with torch.no_grad():
        for conv, fan_in in ((hidden, 4), (out, units)):
            conv.weight.normal_(0, fan_in**-0.5)
            conv.bias.normal_(0, 0.1)
    return hidden.to(device, dtype), out.to(device, dtype)


@pytest.mark.parametrize(("dtype", "out_dtype"), [(torch.float32, torch.float32), (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "cropped"])
@pytest.mark.parametrize(("channels", "height", "width"), [(96, 9, 11), (3, 20, 9), (200, 3, 5)])
@torch.no_grad()
def test_joint_spatial_gate(triton_device, dtype, out_dtype, layout, channels, height, width):
    torch.manual_seed(4)
    field = torch.randn(2, 1, height, width, device=triton_device) * 2  # per-pixel offsets: statistics that vary
    image = as_layout((torch.randn(2, channels, height, width, device=triton_device) + field).to(dtype), layout)
    events = as_layout((torch.randn(2, channels, height, width, device=triton_device) - field).to(dtype), "nchw")
    projections = spatial_gate_convs(16, triton_device, dtype)
    expected = check_both_modalities(
        gates.joint_spatial_gate, gates.joint_spatial_gate_reference, image, events, projections, out_dtype
    )
    maps = [g.double() / x.double() for g, x in zip(expected, (image, events), strict=True)]
    assert all(float(m[m.isfinite()].std()) > 0.02 for m in maps)  # gates that vary over the pixels


def test_joint_spatial_gate_refuses_other_projections_and_shapes():
    image = torch.randn(1, 8, 4, 4)
    hidden, out = spatial_gate_convs(16, "cpu", torch.float32)
    with pytest.raises(ValueError, match="4 -> units -> 2"):
        gates.joint_spatial_gate(image, image, nn.Conv2d(3, 16, 1), out, torch.float32)
    with pytest.raises(ValueError, match="one shape"):
        gates.joint_spatial_gate(image, image[:, :4], hidden, out, torch.float32)


def test_mismatched_projections_are_refused():
    x = torch.randn(1, 8, 4, 4)
    reduce, expand = convs(8, 2, "cpu")
    for wrong in (
        (reduce, nn.Conv2d(3, 8, 1, bias=False)),
        (nn.Conv2d(8, 2, 1), expand),  # with a bias
        (nn.Conv2d(8, 2, 3, bias=False), expand),
    ):
        with pytest.raises(ValueError, match="bias-free 1x1 convolutions 8 -> hidden -> 8"):
            gates.channel_gate(x, *wrong, with_max=True)


def test_without_the_kernels_the_reference_runs_with_autograd():
    x = torch.randn(1, 8, 5, 6, requires_grad=True)
    reduce, expand = convs(8, 2, "cpu")
    assert not triton_support.kernels_apply("channel_gate", x, reduce.weight)
    gate = gates.channel_gate(x, reduce, expand, with_max=True)
    stats = gates.pixel_stats(x, x.new_empty(1, 2, 5, 6))
    (gate.sum() + stats.sum()).backward()
    assert x.grad is not None and reduce.weight.grad is not None
    torch.testing.assert_close(stats[:, 1], x.amax(1))
