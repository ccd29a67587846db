"""How a camera frame and its event window become the network's inputs (the Segmenter's steps 2-4), on any device.

- `image_tensor` and `fit` are shared by both paths below.
- CPU: the numba voxel grid (bit-exact with the official loader) and torch image ops, in the Segmenter.
- CUDA: `FramePacker` writes the frame's image and its event window into one reused pinned host buffer, at the
  places a `PackedLayout` fixes; the InferenceEngine copies it, asynchronously, straight into the input of its
  captured graph (one copy, no intermediate device buffer). `PackedFrame` turns that byte buffer,
  on the device, into the network inputs: the fused voxel-grid kernel over the window's `count` events, the image
  conversion and the fit. It never synchronises with the host and every shape follows from the layout, so the
  InferenceEngine captures it in the same CUDA graph as the forward: a frame costs the host one copy and one
  graph launch, not the ~20 small launches and 5 copies of converting on the device step by step.
  The event capacity is fixed by the window (`count` mode) or grows in powers of two (`duration` mode), so a
  stream settles on one layout, and one captured graph, after its first busy frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mambaseg_core.events import EventBatch, voxel_grid_torch

ImageFit = Literal["resize", "crop_bottom"]

# ITU-R 601-2 luma, the weights of PIL's convert("L") (torchvision Grayscale).
LUMA = (0.299, 0.587, 0.114)
# Smallest event capacity of a growing (duration-mode) layout; every layout section starts on this many bytes.
MIN_CAPACITY = 1 << 14
_ALIGN = 128


def image_tensor(raw: torch.Tensor, bits: int, channels: int) -> torch.Tensor:
    """(H, W) or (H, W, 3) camera pixels -> (channels, H, W) float32 in [0, 1]: divided by 2**bits - 1 (uint8
    frames as uint8, 16-bit ones widened to float32: torch has no general uint16 arithmetic); RGB -> gray by the
    601 luma weights, gray -> RGB by repeating the channel."""
    tensor = raw.float() / float((1 << bits) - 1)
    tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    if channels == 1 and tensor.shape[0] == 3:
        # Python-scalar weights: a weight tensor built here would be a host->device copy inside graph capture.
        tensor = (tensor[0] * LUMA[0] + tensor[1] * LUMA[1] + tensor[2] * LUMA[2])[None]
    elif channels == 3 and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    return tensor


def fit(tensor: torch.Tensor, size: tuple[int, int], image_fit: ImageFit) -> torch.Tensor:
    """(C, H_in, W_in) -> (C, H, W): keep the top rows (`crop_bottom`) or bilinear with antialiasing (`resize`)."""
    height, width = size
    if tuple(tensor.shape[-2:]) == (height, width):
        return tensor
    if image_fit == "crop_bottom":
        return tensor[:, :height, :width]
    return F.interpolate(tensor[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True)[0]


@dataclass(frozen=True)
class PackedLayout:
    """Where one frame's arrays lie in a packed byte buffer: the event count, the window's events (t, x, y, p, up
    to `capacity` of them) and the image (`image_shape`, uint8, or 16-bit values widened to float32)."""

    image_shape: tuple[int, ...]  # (H, W) or (H, W, 3)
    image_bits: int  # 8 or 16
    capacity: int  # event slots

    @cached_property
    def sections(self) -> dict[str, tuple[int, np.dtype, tuple[int, ...]]]:
        """name -> (byte offset, dtype, shape); x and y hold the uint16 coordinates' bits as int16 (torch has no
        uint16 arithmetic; any coordinate >= 32768, negative there, is outside every sensor either way)."""
        image_dtype = np.dtype(np.uint8 if self.image_bits == 8 else np.float32)
        arrays = (
            ("count", np.dtype(np.int64), (1,)),
            ("t", np.dtype(np.int64), (self.capacity,)),
            ("x", np.dtype(np.int16), (self.capacity,)),
            ("y", np.dtype(np.int16), (self.capacity,)),
            ("p", np.dtype(np.uint8), (self.capacity,)),
            ("image", image_dtype, self.image_shape),
        )
        sections, offset = {}, 0
        for name, dtype, shape in arrays:
            sections[name] = (offset, dtype, shape)
            offset += -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN
        return sections

    @property
    def nbytes(self) -> int:
        offset, dtype, shape = self.sections["image"]
        return offset + math.prod(shape) * dtype.itemsize

    def _spans(self) -> Iterator[tuple[str, slice, np.dtype, tuple[int, ...]]]:
        """(name, byte span, dtype, shape) of every array."""
        for name, (offset, dtype, shape) in self.sections.items():
            yield name, slice(offset, offset + math.prod(shape) * dtype.itemsize), dtype, shape

    def host_views(self, buffer: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays as numpy views of a uint8 buffer of at least `nbytes` (x and y as uint16, for EventBatch)."""
        return {
            name: buffer[span].view(np.uint16 if name in ("x", "y") else dtype).reshape(shape)
            for name, span, dtype, shape in self._spans()
        }

    def device_views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """The arrays as torch views of a uint8 tensor of at least `nbytes`."""
        return {
            name: buffer[span].view(torch.from_numpy(np.empty(0, dtype)).dtype).view(shape)
            for name, span, dtype, shape in self._spans()
        }


@dataclass(frozen=True)
class PackedFrame:
    """packed (uint8 bytes of `layout` on the device) -> (image (1, C, H, W), voxel grid (1, bins, H, W)) float32.

    A value (equal settings, equal objects): the InferenceEngine keeps one CUDA graph per PackedFrame and inputs."""

    layout: PackedLayout
    image_channels: int
    event_bins: int
    network_size: tuple[int, int]
    image_fit: ImageFit

    def __call__(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = self.layout.device_views(packed)
        height, width = self.layout.image_shape[:2]
        image = image_tensor(views["image"], self.layout.image_bits, self.image_channels)
        voxels = voxel_grid_torch(
            views["x"], views["y"], views["t"], views["p"], bins=self.event_bins, height=height, width=width,
            count=views["count"][0],
        )  # fmt: skip
        return (
            fit(image, self.network_size, self.image_fit)[None].contiguous(),
            fit(voxels, self.network_size, self.image_fit)[None].contiguous(),
        )


class FramePacker:
    """Packs frames into one reused host byte buffer (pinned for a CUDA device), which the engine copies to the
    device in one asynchronous copy.

    Per frame: `events_into(capacity)` is the ring buffer's destination for the window (it sizes the layout to the
    window), then `pack_image` and `packed`. The buffer is rewritten by the next frame: the caller must have waited
    for the copy out of it by then (the Segmenter waits for each frame's class ids, which come after it).
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._host: torch.Tensor | None = None
        self._layout: PackedLayout | None = None
        self._host_views: dict[str, np.ndarray] = {}  # of the layout in the buffer (made once per layout)
        self.capacity = 0  # event slots of the current layout (grows, never shrinks)

    def events_into(self, image: np.ndarray, fixed_capacity: int | None):
        """A ring-buffer destination (event count -> EventBatch of host views) for a frame of `image`'s shape and
        dtype: `fixed_capacity` slots, or the current capacity grown to the next power of two that holds them."""

        def destination(count: int) -> EventBatch:
            if fixed_capacity is not None:
                if count > fixed_capacity:
                    raise ValueError(f"{count} events exceed the fixed capacity of {fixed_capacity}")
                self.capacity = fixed_capacity
            elif max(count, 1) > self.capacity:
                self.capacity = max(MIN_CAPACITY, 1 << (count - 1).bit_length())
            bits = 8 if image.dtype == np.uint8 else 16
            views = self._views(PackedLayout(tuple(int(n) for n in image.shape), bits, self.capacity))
            views["count"][0] = count
            return EventBatch(views["x"], views["y"], views["t"], views["p"])

        return destination

    def _views(self, layout: PackedLayout) -> dict[str, np.ndarray]:
        if self._host is None or self._host.numel() < layout.nbytes:
            pinned = self.device.type == "cuda"
            self._host = torch.empty(layout.nbytes, dtype=torch.uint8, pin_memory=pinned)
            self._layout = None
        if layout != self._layout:
            self._layout, self._host_views = layout, layout.host_views(self._host.numpy())
        return self._host_views

    def pack_image(self, image: np.ndarray) -> PackedLayout:
        """Copy the frame's pixels into the buffer (after `events_into`'s destination ran); returns the layout."""
        layout = self._layout
        if layout is None or layout.image_shape != image.shape:
            raise RuntimeError("FramePacker.pack_image: no events_into destination ran for an image of this shape")
        np.copyto(self._host_views["image"], image, casting="safe")
        return layout

    def packed(self) -> torch.Tensor:
        """The frame's packed bytes: a view of the host buffer (pinned for a CUDA device), valid until the next
        frame is packed."""
        layout, host = self._layout, self._host
        assert layout is not None and host is not None
        return host[: layout.nbytes]
