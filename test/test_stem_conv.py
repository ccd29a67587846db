"""The stem's conv + bias + LayerNorm2d + GELU kernel (ops/stem_conv.py) against the module chain."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mambaseg_core.models.layers import LayerNorm2d
from mambaseg_core.models.vmamba import PatchEmbed
from mambaseg_core.ops.stem_conv import stem_conv, stem_conv_reference


def stem_layers(in_channels: int, out_channels: int, device, dtype) -> tuple[nn.Conv2d, LayerNorm2d]:
    torch.manual_seed(in_channels)
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1).to(device)
    norm = LayerNorm2d(out_channels).to(device)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    nn.init.normal_(norm.bias)
    return conv.to(dtype), norm


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "size", "layout"),
    [
        (3, 48, (22, 32), "channels_last"),  # an RGB frame as the camera-image kernel writes it
        (1, 32, (13, 18), "nchw"),  # gray, odd height: the last output row reads one padded input row
        (10, 48, (12, 17), "nchw"),  # DSEC's voxel grid: 90-wide windows, odd width
        (5, 20, (7, 9), "channels_last"),  # channels padded to the kernel's block
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@torch.no_grad()
def test_kernel_matches_the_module_chain(triton_device, in_channels, out_channels, size, layout, dtype):
    conv, norm = stem_layers(in_channels, out_channels, triton_device, dtype)
    x = torch.randn(2, in_channels, *size, device=triton_device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = stem_conv(x, conv, norm, dtype)
    expected = stem_conv_reference(x.to(dtype).float(), conv.float(), norm, torch.float32)
    out_size = ((size[0] + 1) // 2, (size[1] + 1) // 2)
    assert y.shape == (2, out_channels, *out_size) and y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(y.float().cpu(), expected.cpu(), **tolerance)


@torch.no_grad()
def test_other_geometries_take_the_module_chain(triton_device):
    _, norm = stem_layers(3, 16, triton_device, torch.float32)
    x = torch.randn(1, 3, 8, 8, device=triton_device)
    strided_1 = nn.Conv2d(3, 16, 3, stride=1, padding=1).to(triton_device)
    assert stem_conv(x, strided_1, norm, torch.float32).shape == (1, 16, 8, 8)  # not the kernel's stride: the chain
    torch.testing.assert_close(
        stem_conv(x, strided_1, norm, torch.float32), stem_conv_reference(x, strided_1, norm, torch.float32)
    )


@torch.no_grad()
def test_patch_embed_uses_it_and_keeps_its_output(triton_device):
    torch.manual_seed(0)
    stem = PatchEmbed(3, 32).to(triton_device).eval()
    x = torch.randn(1, 3, 20, 26, device=triton_device)
    expected = stem.norm2(stem.conv2(stem_conv_reference(x, stem.conv1, stem.norm1, torch.float32)))
    torch.testing.assert_close(stem(x), expected, rtol=1e-4, atol=1e-4)
