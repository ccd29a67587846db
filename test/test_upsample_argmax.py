"""Full-resolution class ids from low-resolution logits: the upsample-argmax kernel against interpolate + argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaseg_core.ops.upsample_argmax import MAX_CLASSES, upsample_argmax, upsample_argmax_reference


def top_two_margin(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) gap between the two largest upsampled float32 logits of every pixel."""
    upsampled = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    top = upsampled.topk(2, dim=1).values if upsampled.shape[1] > 1 else upsampled.repeat(1, 2, 1, 1)
    return top[:, 0] - top[:, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    ("classes", "low", "size", "channels_last"),
    [
        (11, (11, 16), (44, 64), True),  # DSEC's 4x upsampling (classes not a power of two)
        (6, (13, 22), (50, 87), False),  # DDD17-like: odd sizes, NCHW
        (1, (5, 7), (20, 28), True),  # a single class: all zeros
        (20, (9, 9), (9, 9), False),  # same size: a plain argmax
        (3, (12, 10), (5, 7), True),  # downsampling
    ],
)
@torch.no_grad()
def test_kernel_matches_interpolate_then_argmax(triton_device, dtype, classes, low, size, channels_last):
    gen = torch.Generator().manual_seed(classes)
    logits = torch.randn(2, classes, *low, generator=gen).to(triton_device, dtype)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    ids = upsample_argmax(logits, size)
    expected = upsample_argmax_reference(logits.cpu(), size)
    assert ids.dtype == torch.uint8 and ids.shape == (2, *size) and ids.device == logits.device
    # Identical wherever the two best classes are not a rounding apart (the kernel may fuse multiply-adds).
    clear = top_two_margin(logits.cpu(), size) > 1e-5
    assert clear.float().mean() > 0.99 or classes == 1
    assert torch.equal(ids.cpu()[clear], expected[clear])
    if classes == 1:
        assert not ids.any()


@torch.no_grad()
def test_ties_take_the_lowest_class_and_bad_shapes_are_refused(triton_device):
    logits = torch.zeros(1, 5, 4, 6, device=triton_device)
    logits[:, 3:] = 1.0  # classes 3 and 4 tie everywhere
    assert (upsample_argmax(logits, (8, 12)) == 3).all()
    with pytest.raises(ValueError, match="1 <= K <= 256"):
        upsample_argmax(torch.zeros(1, MAX_CLASSES + 1, 2, 2, device=triton_device), (4, 4))
    with pytest.raises(ValueError, match=r"\(B, K, h, w\)"):
        upsample_argmax(torch.zeros(5, 2, 2, device=triton_device), (4, 4))
