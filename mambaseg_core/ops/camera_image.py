"""Camera pixels -> the network's image tensor: scaled to [0, 1], RGB <-> gray, the top rows kept.

`image_tensor` is the PyTorch form (the CPU path and the reference). For CUDA inference one Triton kernel does the
whole conversion, and it reads the pixels where they lie: in a frame's pinned host buffer (the FramePacker's, read
in place inside the CUDA graph, so the frame is never copied to the device first) or in device memory. The division
is IEEE (`div_rn`) and nothing is fused into multiply-adds, so the kernel gives the PyTorch CPU values bit for bit.
"""

from __future__ import annotations

import torch

from mambaseg_core.ops.triton_support import kernels_run_on, triton

# ITU-R 601-2 luma, the weights of PIL's convert("L") (torchvision Grayscale).
LUMA = (0.299, 0.587, 0.114)


def image_tensor(raw: torch.Tensor, bits: int, channels: int) -> torch.Tensor:
    """(H, W) or (H, W, 3) camera pixels -> (channels, H, W) float32 in [0, 1]: divided by 2**bits - 1 (uint8
    frames as uint8, 16-bit ones widened to float32: torch has no general uint16 arithmetic); RGB -> gray by the
    601 luma weights, gray -> RGB by repeating the channel."""
    tensor = raw / float((1 << bits) - 1)  # float32, one pass (uint8 / float promotes to the default float)
    tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    if channels == 1 and tensor.shape[0] == 3:
        # Python-scalar weights: a weight tensor built here would be a host->device copy inside graph capture.
        tensor = (tensor[0] * LUMA[0] + tensor[1] * LUMA[1] + tensor[2] * LUMA[2])[None]
    elif channels == 3 and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    return tensor


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _camera_image_kernel(
        pixels_ptr, out_ptr, count, full_scale,
        IN_CHANNELS: tl.constexpr, OUT_CHANNELS: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """The kept rows are a prefix of the row-major frame, and the output is channels-last (pixel-major) as the
        PyTorch form's permuted (H, W, 3) frame is. Same channels: one program per BLOCK values, element for
        element; else one per BLOCK pixels."""
        index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = index < count
        if IN_CHANNELS == OUT_CHANNELS:
            value = tl.math.div_rn(tl.load(pixels_ptr + index, mask=valid, other=0).to(tl.float32), full_scale)
            tl.store(out_ptr + index, value, mask=valid)
        elif IN_CHANNELS == 3:  # RGB -> gray
            source = pixels_ptr + index * 3
            red = tl.math.div_rn(tl.load(source, mask=valid, other=0).to(tl.float32), full_scale)
            green = tl.math.div_rn(tl.load(source + 1, mask=valid, other=0).to(tl.float32), full_scale)
            blue = tl.math.div_rn(tl.load(source + 2, mask=valid, other=0).to(tl.float32), full_scale)
            tl.store(out_ptr + index, red * 0.299 + green * 0.587 + blue * 0.114, mask=valid)
        else:  # gray -> RGB
            value = tl.math.div_rn(tl.load(pixels_ptr + index, mask=valid, other=0).to(tl.float32), full_scale)
            for channel in tl.static_range(3):
                tl.store(out_ptr + index * 3 + channel, value, mask=valid)


def camera_image(
    raw: torch.Tensor, bits: int, channels: int, *, rows: int | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """(H, W) or (H, W, 3) pixels (uint8, or 16-bit values as float32) -> (1, channels, rows, W) float32 in [0, 1]
    on `device` (default: raw's): the top `rows` rows (default all) of `image_tensor`, NCHW- or channels-last-dense.
    On a CUDA device the Triton kernel reads `raw` in place when it is pinned host memory or on that device."""
    target = raw.device if device is None else torch.device(device)
    if raw.dim() not in (2, 3) or (raw.dim() == 3 and raw.shape[2] != 3) or channels not in (1, 3):
        raise ValueError(f"camera_image: (H, W) or (H, W, 3) pixels to 1 or 3 channels, got {tuple(raw.shape)}")
    height, width = raw.shape[:2]
    rows = height if rows is None else rows
    if not 0 < rows <= height:
        raise ValueError(f"camera_image: rows must be in 1..{height}, got {rows}")
    readable = raw.device == target or (target.type == "cuda" and raw.is_pinned())
    if readable and raw.is_contiguous() and not raw.requires_grad and kernels_run_on("camera_image", target):
        in_channels = 1 if raw.dim() == 2 else 3
        out = torch.empty(1, rows, width, channels, dtype=torch.float32, device=target)
        count, block = rows * width * (channels if channels == in_channels else 1), 1024
        _camera_image_kernel[(triton.cdiv(count, block),)](
            raw, out, count, float((1 << bits) - 1), IN_CHANNELS=in_channels, OUT_CHANNELS=channels, BLOCK=block,
            enable_fp_fusion=False,  # products and sums rounded one by one, as PyTorch does them
        )  # fmt: skip
        return out.permute(0, 3, 1, 2)  # (1, channels, rows, W), channels-last
    image = image_tensor(raw[:rows].to(target, non_blocking=True), bits, channels)[None]
    return image if image.is_contiguous(memory_format=torch.channels_last) else image.contiguous()


__all__ = ["LUMA", "camera_image", "image_tensor"]
