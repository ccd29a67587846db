"""How a camera frame and its event window become the network's inputs (the Segmenter's steps 2-4), on any device.

- `image_tensor` and `fit` are shared by both paths below.
- CPU: the numba voxel grid (bit-exact with the official loader) and torch image ops, in the Segmenter.
- CUDA: `FramePacker` stages a frame in a device buffer laid out by a `PackedLayout`: the window's place in the
  ring buffer (first slot, count) and the image go through one reused pinned host buffer that holds the layout's
  tail, in one copy. The events are not copied: the fused voxel-grid kernel reads them where they lie, in the ring
  buffer's pinned storage (`RingStorage`), and an append into the window's slots waits until the frame's GPU work
  is done (`WindowRead`, released by the Segmenter). Without Triton (or with `in_place=False`) the window's storage
  slices are copied into the device buffer instead. `PackedFrame` turns those bytes, on the device, into the
  network inputs: the voxel grid over the window's `count` events, the image conversion and the fit. It never
  synchronises with the host and every shape follows from the layout, so the InferenceEngine captures it in the same
  CUDA graph as the forward: a frame costs the host a handful of calls (the tail's upload, the graph launch, the ids'
  download), not the ~20 small launches and 5 copies of converting on the device step by step. The event capacity is
  fixed by the window (`count` mode) or grows in powers of two (`duration` mode), so a stream settles on one layout,
  and one captured graph, after its first busy frames.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mambaseg_core.events import EventBatch, RingWindow, reads_host_memory_in_place, voxel_grid_torch
from mambaseg_core.events.ring_buffer import Fence, Sink

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
    tensor = raw / float((1 << bits) - 1)  # float32, one pass (uint8 / float promotes to the default float)
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
    """Where one frame's arrays lie in a packed byte buffer: the window's events (t, x, y, p, up to `capacity` of
    them; none where they are read in the ring buffer), then the tail that comes through host memory: the window
    (its first ring slot, read in place, and its event count) and the image (`image_shape`, uint8, or 16-bit values
    widened to float32)."""

    image_shape: tuple[int, ...]  # (H, W) or (H, W, 3)
    image_bits: int  # 8 or 16
    capacity: int  # events of a window at most
    events_in_place: bool = False  # the events stay in the ring buffer's storage

    @cached_property
    def sections(self) -> dict[str, tuple[int, np.dtype, tuple[int, ...]]]:
        """name -> (byte offset, dtype, shape); x and y hold the uint16 coordinates' bits as int16 (torch has no
        uint16 arithmetic; any coordinate >= 32768, negative there, is outside every sensor either way)."""
        image_dtype = np.dtype(np.uint8 if self.image_bits == 8 else np.float32)
        events = (
            ()
            if self.events_in_place
            else (
                ("t", np.dtype(np.int64), (self.capacity,)),
                ("x", np.dtype(np.int16), (self.capacity,)),
                ("y", np.dtype(np.int16), (self.capacity,)),
                ("p", np.dtype(np.uint8), (self.capacity,)),
            )
        )
        arrays = (*events, ("window", np.dtype(np.int64), (2,)), ("image", image_dtype, self.image_shape))
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

    @property
    def tail(self) -> int:
        """Byte offset of the tail (window, image)."""
        return self.sections["window"][0]

    def tail_views(self, buffer: np.ndarray) -> dict[str, np.ndarray]:
        """The tail's arrays as numpy views of a uint8 buffer holding bytes tail.. of the layout."""
        return {
            name: buffer[span.start - self.tail : span.stop - self.tail].view(dtype).reshape(shape)
            for name, span, dtype, shape in self._spans()
            if span.start >= self.tail
        }

    def device_views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """The arrays as torch views of a uint8 tensor of at least `nbytes`."""
        return {
            name: buffer[span].view(torch.from_numpy(np.empty(0, dtype)).dtype).view(shape)
            for name, span, dtype, shape in self._spans()
        }


class RingStorage:
    """A ring buffer's storage as tensors (x and y as int16 views of their uint16 bits, as in a PackedLayout) for
    the voxel-grid kernel to read in place. Compared by identity: a captured CUDA graph holds its addresses."""

    def __init__(self, storage: EventBatch):
        self.storage = storage
        self.x, self.y = (torch.from_numpy(values.view(np.int16)) for values in (storage.x, storage.y))
        self.t, self.p = torch.from_numpy(storage.t), torch.from_numpy(storage.p)


class WindowRead:
    """The Fence of a window that the GPU reads in the ring buffer's storage: done once released, which its holder
    does when the frame's GPU work is over. Appends that may write the window's slots wait for it."""

    def __init__(self) -> None:
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def query(self) -> bool:
        return self._released.is_set()

    def synchronize(self) -> None:
        self._released.wait()


@dataclass(frozen=True)
class PackedFrame:
    """packed (uint8 bytes of `layout` on the device) -> (image (1, C, H, W), voxel grid (1, bins, H, W)) float32;
    the events read from `ring` where the layout keeps them there.

    A value (equal settings, equal objects): the InferenceEngine keeps one CUDA graph per PackedFrame and inputs."""

    layout: PackedLayout
    image_channels: int
    event_bins: int
    network_size: tuple[int, int]
    image_fit: ImageFit
    ring: RingStorage | None = None

    def __call__(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = self.layout.device_views(packed)
        height, width = self.layout.image_shape[:2]
        image = image_tensor(views["image"], self.layout.image_bits, self.image_channels)
        first, count = views["window"]
        if self.layout.events_in_place:
            if self.ring is None:
                raise ValueError("PackedFrame: the layout keeps the events in a ring buffer, but no ring was given")
            x, y, t, p = self.ring.x, self.ring.y, self.ring.t, self.ring.p
            placement = {"first": first, "capacity": self.layout.capacity}
        else:
            x, y, t, p = (views[name] for name in ("x", "y", "t", "p"))
            placement = {}
        voxels = voxel_grid_torch(
            x, y, t, p, bins=self.event_bins, height=height, width=width, device=packed.device, count=count,
            **placement,
        )  # fmt: skip
        return (
            _dense(fit(image, self.network_size, self.image_fit)[None]),
            _dense(fit(voxels, self.network_size, self.image_fit)[None]),
        )


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself where it is NCHW- or channels-last-contiguous, else an NCHW copy. An RGB frame's (H, W, 3) pixels
    are a channels-last image: the stem's convolution wants that layout, so copying it to NCHW was a wasted pass."""
    return x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()


class FramePacker:
    """Stages frames in a reused device buffer (module docstring): the window (in place in the ring buffer's
    storage, or copied from it) and the image through a reused host buffer (pinned for a CUDA device).

    Per frame: `events_sink(image, capacity)` is the ring buffer's sink for the window (it sizes the layout to the
    window; copying, it starts the events' copies), then `pack_image` (starts the tail's copy), then `packed` and
    `frame`; once the frame's GPU work is done, `release_window` (reading in place, appends into the window wait for
    it). The next frame rewrites the host buffer only once the last copy out of it is done.
    in_place: read the events in the ring's storage (default: where voxel_grid_torch can, on a CUDA device with
    Triton; the storage must then be pinned).
    """

    def __init__(self, device: torch.device | str, in_place: bool | None = None):
        self.device = torch.device(device)
        self.in_place = reads_host_memory_in_place(self.device) if in_place is None else in_place
        self._layout: PackedLayout | None = None
        self._packed: torch.Tensor | None = None  # the whole layout, on the device
        self._tail: torch.Tensor | None = None  # its tail, on the host
        self._device_views: dict[str, torch.Tensor] = {}  # made once per layout
        self._tail_views: dict[str, np.ndarray] = {}
        self._ring: RingStorage | None = None  # the storage of the last window read in place
        self._window_read: WindowRead | None = None  # the window the GPU may still read, until released
        # CUDA events recorded after the window's copies and after the last copy out of the host buffer: two events
        # re-recorded every frame, none created and destroyed per frame.
        cuda = self.device.type == "cuda"
        self._events_copied = torch.cuda.Event() if cuda else None
        self._tail_copied = torch.cuda.Event() if cuda else None
        self.capacity = 0  # event slots of the current layout (grows, never shrinks)

    def events_sink(self, image: np.ndarray, fixed_capacity: int | None) -> Sink:
        """The ring-buffer sink (EventRingBuffer.send_window) of a frame of `image`'s shape and dtype: it sizes the
        layout to `fixed_capacity` events, or the current capacity grown to the next power of two that holds the
        window, and records where the window lies (in place: a WindowRead fence, until `release_window`), or
        copies it into the device buffer (asynchronously from pinned storage: the fence is the copies' end)."""

        def sink(window: RingWindow) -> Fence | None:
            if self._tail_copied is not None:  # e.g. Segmenter.prepare twice: nothing waited for the GPU in between
                self._tail_copied.synchronize()  # returns at once before the first record
            self._use(self._layout_for(image, window.count, fixed_capacity))
            if self.in_place:
                if self._window_read is not None:  # its appends would wait forever: say so now
                    raise RuntimeError("FramePacker: the last window read in place was not released (release_window)")
                if self._ring is None or self._ring.storage is not window.storage:
                    self._ring = RingStorage(window.storage)
                self._tail_views["window"][:] = (window.first, window.count)
                self._window_read = WindowRead()
                return self._window_read
            self._tail_views["window"][:] = (0, window.count)
            offset = 0
            for piece in window.slices:
                for name in ("t", "x", "y", "p"):
                    values = getattr(piece, name)
                    source = torch.from_numpy(values.view(np.int16) if name in ("x", "y") else values)
                    self._device_views[name][offset : offset + len(piece)].copy_(source, non_blocking=True)
                offset += len(piece)
            return self._copies_done(self._events_copied)

        return sink

    @property
    def window_held(self) -> bool:
        """Whether the last window read in place waits for `release_window`."""
        return self._window_read is not None

    def release_window(self) -> None:
        """Hand the last window read in place back to the ring buffer: call once the GPU work that reads it (the
        frame's voxel grid) is done, or will never run."""
        if self._window_read is not None:
            self._window_read.release()
            self._window_read = None

    def frame(
        self, image_channels: int, event_bins: int, network_size: tuple[int, int], image_fit: ImageFit
    ) -> PackedFrame:
        """The PackedFrame that turns `packed()` into the network inputs (after `pack_image`)."""
        layout = self._layout
        if layout is None:
            raise RuntimeError("FramePacker.frame: no frame was packed")
        ring = self._ring if layout.events_in_place else None
        return PackedFrame(layout, image_channels, event_bins, network_size, image_fit, ring)

    def _layout_for(self, image: np.ndarray, count: int, fixed_capacity: int | None) -> PackedLayout:
        if fixed_capacity is not None:
            if count > fixed_capacity:
                raise ValueError(f"{count} events exceed the fixed capacity of {fixed_capacity}")
            self.capacity = fixed_capacity
        elif max(count, 1) > self.capacity:
            self.capacity = max(MIN_CAPACITY, 1 << (count - 1).bit_length())
        bits = 8 if image.dtype == np.uint8 else 16
        return PackedLayout(tuple(int(n) for n in image.shape), bits, self.capacity, self.in_place)

    def _use(self, layout: PackedLayout) -> None:
        if layout == self._layout:
            return
        # Normal tensors even when staged under a caller's inference mode: later frames write into them outside it.
        with torch.inference_mode(False):
            if self._packed is None or self._packed.numel() < layout.nbytes:
                self._packed = torch.empty(layout.nbytes, dtype=torch.uint8, device=self.device)
            tail_bytes = layout.nbytes - layout.tail
            if self._tail is None or self._tail.numel() < tail_bytes:
                self._tail = torch.empty(tail_bytes, dtype=torch.uint8, pin_memory=self.device.type == "cuda")
            self._device_views = layout.device_views(self._packed)
        self._layout = layout
        self._tail_views = layout.tail_views(self._tail.numpy())

    def pack_image(self, image: np.ndarray) -> PackedLayout:
        """Copy the frame's pixels into the host buffer and start its upload (after `events_sink`'s sink ran);
        returns the layout."""
        layout = self._layout
        bits = 8 if image.dtype == np.uint8 else 16
        if layout is None or layout.image_shape != image.shape or layout.image_bits != bits:
            raise RuntimeError("FramePacker.pack_image: no events_sink ran for an image of this shape and dtype")
        assert self._packed is not None and self._tail is not None
        np.copyto(self._tail_views["image"], image, casting="safe")
        tail_bytes = layout.nbytes - layout.tail
        self._packed[layout.tail : layout.nbytes].copy_(self._tail[:tail_bytes], non_blocking=True)
        self._copies_done(self._tail_copied)
        return layout

    def _copies_done(self, event: torch.cuda.Event | None) -> torch.cuda.Event | None:
        """`event` recorded after the copies started so far on a CUDA device (None elsewhere: the copies were
        synchronous)."""
        if event is not None:
            event.record(torch.cuda.current_stream(self.device))
        return event

    def packed(self) -> torch.Tensor:
        """The frame's packed bytes on the device, valid until the next frame is packed."""
        layout, packed = self._layout, self._packed
        assert layout is not None and packed is not None
        return packed[: layout.nbytes]
