"""The SegFormer head's cheaper inference order: the upsample-sum-ReLU kernel, and the folded projections."""

from __future__ import annotations

import pytest
import torch
from seg_harness import TINY_MODEL

from mambaseg_core.models import MambaSeg, load_model_config
from mambaseg_core.models.segformer_head import SegFormerHead
from mambaseg_core.ops.upsample_sum import upsample_sum_relu, upsample_sum_relu_reference


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sizes", [[(25, 44), (13, 22), (7, 11)], [(3, 5)], [(11, 17), (11, 17)], []])
@torch.no_grad()
def test_upsample_sum_relu_kernel_matches_interpolate(triton_device, dtype, sizes):
    device = triton_device
    gen = torch.Generator().manual_seed(len(sizes))
    base = channels_last(torch.randn(2, 70, 11, 17, generator=gen).to(device, dtype))
    # One source NCHW: the kernel takes any layout (it makes a channels-last copy).
    sources = [torch.randn(2, 70, h, w, generator=gen).to(device, dtype) for h, w in sizes]
    sources = [channels_last(s) if i % 2 == 0 else s for i, s in enumerate(sources)]
    expected = upsample_sum_relu_reference(base.float(), [s.float() for s in sources])
    out = upsample_sum_relu(base, sources)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out.float(), expected, **tolerance)
    assert upsample_sum_relu(base, sources, torch.float32).dtype == torch.float32


def random_head() -> tuple[SegFormerHead, list[torch.Tensor]]:
    torch.manual_seed(0)
    head = SegFormerHead([8, 16, 24, 32], num_classes=5, dim=12).eval()
    with torch.no_grad():
        head.fuse_norm.running_mean.normal_()
        head.fuse_norm.running_var.uniform_(0.5, 2.0)
        head.fuse_norm.weight.normal_()
        head.fuse_norm.bias.normal_()
    sizes = [(20, 30), (10, 15), (5, 8), (3, 4)]
    features = [torch.randn(2, c, h, w) for c, (h, w) in zip([8, 16, 24, 32], sizes, strict=True)]
    return head, features


@torch.no_grad()
def test_folded_head_computes_the_same_logits():
    """Projection, fusion slice and BatchNorm folded per level, upsampled after: the same map (in float32 up to
    rounding), and the fold follows a change of the BatchNorm statistics."""
    head, features = random_head()
    torch.testing.assert_close(head._forward_folded(features), head(features), rtol=1e-4, atol=1e-4)
    head.fuse_norm.running_mean.add_(1.0)
    torch.testing.assert_close(head._forward_folded(features), head(features), rtol=1e-4, atol=1e-4)
    head.classifier.weight.mul_(-2.0)  # the padded classifier follows its source too
    torch.testing.assert_close(head._forward_folded(features), head(features), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the folded path runs in CUDA inference")
def test_head_takes_the_folded_path_in_cuda_inference_only():
    head, features = random_head()
    head, features = head.cuda(), [f.cuda() for f in features]
    with torch.no_grad():
        expected = head._forward_folded(features)  # what CUDA inference returns
        torch.testing.assert_close(head(features), expected)
    head.train()
    with torch.no_grad():
        training_logits = head(features)  # batch statistics: the folded path must not run
    assert not torch.allclose(training_logits, expected, atol=1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the folded path runs in CUDA inference")
@torch.no_grad()
def test_mambaseg_projects_each_level_for_the_head_as_soon_as_it_is_made():
    """In CUDA inference MambaSeg hands the head its four folded projections, made beside the later stages; the
    logits are the head's own on the decoder inputs. On the CPU there are none."""
    torch.manual_seed(0)
    model = MambaSeg(load_model_config(dict(TINY_MODEL))).eval()
    model.set_scan_backend("torch")  # no extension build inside a unit test
    height, width = TINY_MODEL["image_size"]
    image, events = torch.rand(1, 3, height, width), torch.randn(1, TINY_MODEL["event_bins"], height, width)
    assert model.forward_features(image=image, events=events).head_maps is None
    model.cuda()
    features = model.forward_features(image=image.cuda(), events=events.cuda())
    assert features.head_maps is not None and len(features.head_maps) == len(features.decoder_inputs)
    torch.testing.assert_close(
        model.decoder.forward_projected(features.head_maps), model.decoder(features.decoder_inputs)
    )
