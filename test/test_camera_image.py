"""Camera pixels -> network image (ops/camera_image.py): the Triton kernel against the PyTorch form, bit for bit, and
reading a pinned host frame in place on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambaseg_core.ops.camera_image import camera_image, image_tensor

CASES = {
    # name: (frame shape, bits, model channels)
    "rgb": ((7, 9, 3), 8, 3),
    "rgb to gray": ((6, 11, 3), 8, 1),
    "gray": ((5, 13), 8, 1),
    "gray to rgb": ((4, 7), 8, 3),
    "rgb16": ((3, 5, 3), 16, 3),
    "gray16 to rgb": ((6, 6), 16, 3),
}


def frame(shape: tuple[int, ...], bits: int, seed: int = 0) -> torch.Tensor:
    """Random pixels as the FramePacker stages them: uint8, or 16-bit values widened to float32."""
    values = np.random.default_rng(seed).integers(0, (1 << bits) - 1, shape, endpoint=True)
    return torch.from_numpy(values.astype(np.uint8 if bits == 8 else np.float32))


@pytest.mark.parametrize("rows", [None, 2])
@pytest.mark.parametrize("case", CASES)
def test_kernel_gives_the_pytorch_values_bit_for_bit(triton_device, case, rows):
    shape, bits, channels = CASES[case]
    raw = frame(shape, bits)
    image = camera_image(raw.to(triton_device), bits, channels, rows=rows)
    kept = shape[0] if rows is None else rows
    expected = image_tensor(raw, bits, channels)[None, :, :kept]
    assert image.shape == (1, channels, kept, shape[1]) and image.dtype == torch.float32
    assert image.device == raw.to(triton_device).device
    assert image.is_contiguous() or image.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(image.cpu(), expected)  # IEEE division, no fused multiply-adds: the same float32 values
    assert float(image.max()) <= 1.0 and float(image.max()) > 0.5


def test_torch_form_on_the_cpu_keeps_the_top_rows_and_refuses_bad_frames():
    raw = frame((6, 4, 3), 8)
    image = camera_image(raw, 8, 3, rows=5)
    assert torch.equal(image, image_tensor(raw, 8, 3)[None, :, :5])
    assert image.is_contiguous(memory_format=torch.channels_last)  # the permuted (H, W, 3) frame, not copied
    with pytest.raises(ValueError, match=r"rows must be in 1..6, got 7"):
        camera_image(raw, 8, 3, rows=7)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\) pixels"):
        camera_image(torch.zeros(4, 4, 2, dtype=torch.uint8), 8, 3)
    with pytest.raises(ValueError, match=r"1 or 3 channels"):
        camera_image(raw, 8, 2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the kernel reading pinned host memory")
@pytest.mark.parametrize("case", ["rgb", "rgb to gray", "gray16 to rgb"])
def test_kernel_reads_a_pinned_host_frame_in_place_inside_a_cuda_graph(case):
    """A CUDA graph captured over a pinned host frame converts what the frame holds at each replay, with no copy."""
    shape, bits, channels = CASES[case]
    host = frame(shape, bits).pin_memory()
    out = torch.empty(0)

    def convert() -> None:
        nonlocal out
        out = camera_image(host, bits, channels, rows=shape[0] - 1, device=torch.device("cuda"))

    convert()  # compiles the kernel outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        convert()
    for seed in (1, 2):
        host.copy_(frame(shape, bits, seed))
        graph.replay()
        torch.cuda.synchronize()
        assert out.is_cuda
        assert torch.equal(out.cpu(), image_tensor(host, bits, channels)[None, :, : shape[0] - 1])
