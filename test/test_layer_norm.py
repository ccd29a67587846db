"""LayerNorm2d: the reference against the formula, the CUDA inference kernel (Triton) against the reference."""

from __future__ import annotations

import pytest
import torch

from mambaseg_core.models.layers import LayerNorm2d
from mambaseg_core.models.vmamba import Downsample, PatchEmbed
from mambaseg_core.ops import layer_norm
from mambaseg_core.ops.layer_norm import bias_layer_norm_2d, layer_norm_2d, layer_norm_2d_reference, uses_kernel
from mambaseg_core.ops.stem_conv import stem_conv_reference

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the Triton kernel")


def by_formula(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.double().view(1, -1, 1, 1) + bias.double().view(1, -1, 1, 1)


def random_case(channels: int, height: int, width: int, dtype: torch.dtype, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, channels, height, width, generator=gen) * 3 + 1).to(dtype).to(device)
    weight = (torch.rand(channels, generator=gen) + 0.5).to(device)
    bias = torch.randn(channels, generator=gen).to(device)
    return x, weight, bias


def test_reference_is_the_per_pixel_formula_and_cpu_takes_it():
    x, weight, bias = random_case(6, 5, 7, torch.float32, "cpu")
    assert not uses_kernel(x, weight, bias)
    torch.testing.assert_close(
        layer_norm_2d(x, weight, bias).double(), by_formula(x, weight, bias, 1e-5), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(layer_norm_2d_reference(x, weight, bias, 1e-5), layer_norm_2d(x, weight, bias))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("channels", "height", "width"), [(48, 37, 23), (96, 8, 16), (768, 14, 20), (1536, 3, 5)])
def test_cuda_kernel_matches_the_reference(dtype, channels, height, width):
    x, weight, bias = random_case(channels, height, width, dtype, "cuda", seed=channels)
    with torch.no_grad():
        assert uses_kernel(x, weight, bias)
        y = layer_norm_2d(x, weight, bias)
        expected = by_formula(x, weight, bias, 1e-5)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last) and y.shape == x.shape
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # the output's rounding
    torch.testing.assert_close(y.double(), expected, rtol=tolerance, atol=tolerance)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        y_autocast = layer_norm_2d(x, weight, bias)
    assert y_autocast.dtype == torch.float32  # as F.layer_norm under autocast
    torch.testing.assert_close(y_autocast.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@needs_cuda
def test_cuda_kernel_in_a_cuda_graph_and_autograd_keeps_the_reference():
    norm = LayerNorm2d(96).cuda()
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(1, 96, 11, 13, device="cuda")
    with torch.no_grad():
        expected = layer_norm_2d_reference(x, norm.weight, norm.bias, norm.eps)
        norm(x)  # compile the kernel outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = norm(x)
        captured.zero_()
        graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, expected, rtol=1e-5, atol=1e-5)
    # With autograd the differentiable reference runs.
    assert not uses_kernel(x, norm.weight, norm.bias)
    norm(x).sum().backward()
    assert norm.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@torch.no_grad()
def test_a_bias_added_by_the_kernel_is_the_sum_normalised(triton_device, dtype):
    x, weight, bias = random_case(40, 6, 9, dtype, triton_device, seed=4)
    x_bias = torch.randn(40, device=triton_device).to(dtype) * 3
    y = bias_layer_norm_2d(x, x_bias, weight, bias)
    expected = by_formula(x.double() + x_bias.double()[:, None, None], weight, bias, 1e-5)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # the output's rounding
    torch.testing.assert_close(y.double(), expected, rtol=tolerance, atol=tolerance)


@torch.no_grad()
def test_downsample_and_stem_add_their_convolutions_bias_in_the_norm(triton_device):
    torch.manual_seed(0)
    downsample, stem = Downsample(16, 32).to(triton_device), PatchEmbed(3, 16).to(triton_device)
    for conv in (downsample.conv, stem.conv2):
        torch.nn.init.normal_(conv.bias)  # a bias the result depends on
    x = torch.randn(2, 16, 9, 12, device=triton_device)
    assert layer_norm.uses_kernel(x, downsample.norm.weight, downsample.norm.bias)
    expected = layer_norm_2d_reference(downsample.conv(x), downsample.norm.weight, downsample.norm.bias, 1e-5)
    torch.testing.assert_close(downsample(x), expected, rtol=1e-4, atol=1e-4)
    image = torch.randn(1, 3, 20, 26, device=triton_device)
    hidden = stem_conv_reference(image, stem.conv1, stem.norm1, torch.float32)
    expected = layer_norm_2d_reference(stem.conv2(hidden), stem.norm2.weight, stem.norm2.bias, 1e-5)
    torch.testing.assert_close(stem(image), expected, rtol=1e-4, atol=1e-4)
