"""How a camera frame and its event window become the network's inputs (the Segmenter's steps 2-4), on any device.

- `fit` (and ops/camera_image) are shared by both paths below.
- CPU: the numba voxel grid (bit-exact with the official loader) and torch image ops, in the Segmenter.
- CUDA: `FramePacker` stages a frame in one reused byte buffer laid out by a `PackedLayout`, and `PackedFrame`
  turns those bytes into the network inputs on the device: the voxel grid over the window's `count` events, the
  image conversion and the fit. With Triton (the default) nothing is copied to the device: the buffer is pinned host
  memory holding the window's place in the ring buffer (first slot, count) and the image, and the Triton kernels of
  the voxel grid and the image read it, and the events in the ring buffer's pinned storage (`RingStorage`), where
  they lie. The host must leave all of it alone until the frame's GPU work is done: the Segmenter releases the frame
  then (`WindowRead`; appends into the window's slots wait for it, a next frame before it raises). Without Triton
  (or with `in_place=False`) the window's storage slices and the tail of the buffer (window, image) are copied into
  a device buffer of the same layout instead. PackedFrame never synchronises with the host and every shape follows
  from the layout, so the InferenceEngine captures it in the same CUDA graph as the forward: a frame costs the host
  the copy of its pixels into the pinned buffer, the graph launch and the ids' download, not the ~20 small launches
  and 5 copies of converting on the device step by step. The event capacity is fixed by the window (`count` mode)
  or grows in powers of two (`duration` mode), so a stream settles on one layout, and one captured graph, after its
  first busy frames.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mambaseg_core.events import EventBatch, RingWindow, reads_host_memory_in_place, voxel_grid_torch
from mambaseg_core.events.ring_buffer import Fence, Sink
from mambaseg_core.ops.camera_image import camera_image
from mambaseg_core.ops.triton_support import kernels_run_on

ImageFit = Literal["resize", "crop_bottom"]

# Smallest event capacity of a growing (duration-mode) layout; every layout section starts on this many bytes.
MIN_CAPACITY = 1 << 14
_ALIGN = 128


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
    them; none `in_place`, where they are read in the ring buffer), then the tail that the host writes: the window
    (its first ring slot, read in place, and its event count) and the image (`image_shape`, uint8, or 16-bit values
    widened to float32)."""

    image_shape: tuple[int, ...]  # (H, W) or (H, W, 3)
    image_bits: int  # 8 or 16
    capacity: int  # events of a window at most
    in_place: bool = False  # the frame read where it lies: the events in the ring buffer's storage, no device copy

    @cached_property
    def sections(self) -> dict[str, tuple[int, np.dtype, tuple[int, ...]]]:
        """name -> (byte offset, dtype, shape); x and y hold the uint16 coordinates' bits as int16 (torch has no
        uint16 arithmetic; any coordinate >= 32768, negative there, is outside every sensor either way)."""
        image_dtype = np.dtype(np.uint8 if self.image_bits == 8 else np.float32)
        events = (
            ()
            if self.in_place
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
class PackedImage:
    """packed (as for a PackedFrame) -> image (1, C, H, W) float32 on `device`: the part of a frame that needs none of
    its events, which the engine can run ahead of them (with the image's stage 0). A value: read in place, equal for
    every layout of the frame (the image lies in the same place whatever the event capacity)."""

    layout: PackedLayout
    image_channels: int
    network_size: tuple[int, int]
    image_fit: ImageFit
    device: torch.device

    @property
    def reads_inputs_in_place(self) -> bool:
        return self.layout.in_place

    def __call__(self, packed: torch.Tensor) -> torch.Tensor:
        height, width = self.layout.image_shape[:2]
        cropped = self.image_fit == "crop_bottom" or (height, width) == self.network_size  # same width: top rows
        image = camera_image(
            self.layout.device_views(packed)["image"], self.layout.image_bits, self.image_channels,
            rows=self.network_size[0] if cropped else None, device=self.device,
        )  # fmt: skip
        if not cropped:
            image = fit(image[0], self.network_size, self.image_fit)[None]
        return _dense(image)


@dataclass(frozen=True)
class PackedEvents:
    """packed -> voxel grid (1, bins, H, W): the part of `frame` that needs its events (a value, as PackedFrame)."""

    frame: PackedFrame

    @property
    def reads_inputs_in_place(self) -> bool:
        return self.frame.reads_inputs_in_place

    def __call__(self, packed: torch.Tensor) -> torch.Tensor:
        return self.frame.events(packed)


@dataclass(frozen=True)
class PackedFrame:
    """packed (uint8 bytes of `layout`: on `device`, or in pinned host memory read in place) -> (image (1, C, H, W),
    voxel grid (1, bins, H, W)) float32 on `device`; the events read from `ring` where the layout keeps them there.
    Its two parts, for an engine that runs the image's ahead: `image_part` and `events_part`.

    A value (equal settings, equal objects): the InferenceEngine keeps one CUDA graph per PackedFrame and inputs."""

    layout: PackedLayout
    image_channels: int
    event_bins: int
    network_size: tuple[int, int]
    image_fit: ImageFit
    device: torch.device
    ring: RingStorage | None = None

    @property
    def reads_inputs_in_place(self) -> bool:
        """Whether `packed` is read where it lies, host memory included (InferenceEngine.class_ids_from)."""
        return self.layout.in_place

    @cached_property
    def image_part(self) -> PackedImage:
        layout = replace(self.layout, capacity=0) if self.layout.in_place else self.layout  # no events in the buffer
        return PackedImage(layout, self.image_channels, self.network_size, self.image_fit, self.device)

    @cached_property
    def events_part(self) -> PackedEvents:
        return PackedEvents(self)

    def __call__(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_part(packed), self.events(packed)

    def events(self, packed: torch.Tensor) -> torch.Tensor:
        """The voxel grid (1, bins, H, W) of the frame's window."""
        views = self.layout.device_views(packed)
        height, width = self.layout.image_shape[:2]
        first, count = views["window"]
        if self.layout.in_place:
            if self.ring is None:
                raise ValueError("PackedFrame: the layout keeps the events in a ring buffer, but no ring was given")
            x, y, t, p = self.ring.x, self.ring.y, self.ring.t, self.ring.p
            placement = {"first": first, "capacity": self.layout.capacity}
        else:
            x, y, t, p = (views[name] for name in ("x", "y", "t", "p"))
            placement = {}
        voxels = voxel_grid_torch(
            x, y, t, p, bins=self.event_bins, height=height, width=width, device=self.device, count=count,
            **placement,
        )  # fmt: skip
        return _dense(fit(voxels, self.network_size, self.image_fit)[None])


def _image_bits(image: np.ndarray) -> int:
    return 8 if image.dtype == np.uint8 else 16


def _holds(layout: PackedLayout, image: np.ndarray) -> bool:
    """Whether `layout` has the place of `image`'s pixels (its shape and bit depth)."""
    return layout.image_shape == image.shape and layout.image_bits == _image_bits(image)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself where it is NCHW- or channels-last-contiguous, else an NCHW copy. An RGB frame's (H, W, 3) pixels
    are a channels-last image: the stem's convolution wants that layout, so copying it to NCHW was a wasted pass."""
    return x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()


class FramePacker:
    """Stages frames in a reused buffer (module docstring): in place, pinned host memory that the frame's kernels
    read (on a CPU device, plain host memory); copying, a device buffer filled from the ring buffer's storage and
    a reused host buffer (pinned for a CUDA device) that holds the layout's tail.

    Per frame: optionally `stage_image` (the pixels' copy ahead of the window, while its last events are still on
    their way), then `events_sink(image, capacity)`, the ring buffer's sink for the window (it sizes the layout to the
    window and records where the window lies; copying, it starts the events' copies), then `pack_image` (copying, it
    starts the tail's copy), then `packed` and `frame`; in place, once the frame's GPU work is done,
    `release_window` (appends into the window wait for it, and the next frame may not rewrite the buffer before).
    Copying, the next frame rewrites the host buffer only once the last copy out of it is done.
    in_place: read the frame where it lies (default: where voxel_grid_torch and camera_image can, on a CUDA device
    with Triton, unless MAMBASEG_PYTORCH_OPS names camera_image; the ring buffer's storage must then be pinned).
    """

    def __init__(self, device: torch.device | str, in_place: bool | None = None):
        self.device = torch.device(device)
        if in_place is None:  # both kernels that read a frame where it lies run on this device
            in_place = reads_host_memory_in_place(self.device) and kernels_run_on("camera_image", self.device)
        self.in_place = in_place
        self._layout: PackedLayout | None = None
        self._packed: torch.Tensor | None = None  # copying: the whole layout, on the device
        self._host: torch.Tensor | None = None  # the layout's tail (in place: all of it), on the host
        self._device_views: dict[str, torch.Tensor] = {}  # made once per layout
        self._host_views: dict[str, np.ndarray] = {}
        self._ring: RingStorage | None = None  # the storage of the last window read in place
        self._window_read: WindowRead | None = None  # the frame the GPU may still read, until released
        # Copying: CUDA events recorded after the window's copies and after the last copy out of the host buffer, two
        # events re-recorded every frame, none created and destroyed per frame.
        copies = self.device.type == "cuda" and not self.in_place
        self._events_copied = torch.cuda.Event() if copies else None
        self._tail_copied = torch.cuda.Event() if copies else None
        self.capacity = 0  # event slots of the current layout (grows, never shrinks)
        self._image_staged = False  # the host buffer holds pixels that `stage_image` copied for the next frame

    def events_sink(self, image: np.ndarray, fixed_capacity: int | None) -> Sink:
        """The ring-buffer sink (EventRingBuffer.send_window) of a frame of `image`'s shape and dtype: it sizes the
        layout to `fixed_capacity` events, or the current capacity grown to the next power of two that holds the
        window, and records where the window lies (in place: a WindowRead fence, until `release_window`), or
        copies it into the device buffer (asynchronously from pinned storage: the fence is the copies' end)."""

        def sink(window: RingWindow) -> Fence | None:
            if self._window_read is not None:  # its appends would wait forever, and the GPU may read the buffer
                raise RuntimeError("FramePacker: the last frame read in place was not released (release_window)")
            if self._tail_copied is not None:  # e.g. Segmenter.prepare twice: nothing waited for the GPU in between
                self._tail_copied.synchronize()  # returns at once before the first record
            self._use(self._layout_for(image, window.count, fixed_capacity))
            if self.in_place:
                if self._ring is None or self._ring.storage is not window.storage:
                    self._ring = RingStorage(window.storage)
                self._host_views["window"][:] = (window.first, window.count)
                self._window_read = WindowRead()
                return self._window_read
            self._host_views["window"][:] = (0, window.count)
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
        """Whether the last frame read in place waits for `release_window`."""
        return self._window_read is not None

    def release_window(self) -> None:
        """Hand the last frame read in place back: its window to the ring buffer, its buffer to the next frame. Call
        once the GPU work that reads them (the frame's voxel grid and image) is done, or will never run."""
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
        ring = self._ring if layout.in_place else None
        return PackedFrame(layout, image_channels, event_bins, network_size, image_fit, self.device, ring)

    def _layout_for(self, image: np.ndarray, count: int, fixed_capacity: int | None) -> PackedLayout:
        if fixed_capacity is not None:
            if count > fixed_capacity:
                raise ValueError(f"{count} events exceed the fixed capacity of {fixed_capacity}")
            self.capacity = fixed_capacity
        elif max(count, 1) > self.capacity:
            self.capacity = max(MIN_CAPACITY, 1 << (count - 1).bit_length())
        return PackedLayout(tuple(int(n) for n in image.shape), _image_bits(image), self.capacity, self.in_place)

    def _use(self, layout: PackedLayout) -> None:
        if layout == self._layout:
            return
        self._image_staged = False  # the pixels would be in the old layout's place
        # Normal tensors even when staged under a caller's inference mode: later frames write into them outside it.
        with torch.inference_mode(False):
            if not self.in_place and (self._packed is None or self._packed.numel() < layout.nbytes):
                self._packed = torch.empty(layout.nbytes, dtype=torch.uint8, device=self.device)
            host_bytes = layout.nbytes - layout.tail
            if self._host is None or self._host.numel() < host_bytes:
                self._host = torch.empty(host_bytes, dtype=torch.uint8, pin_memory=self.device.type == "cuda")
            if self._packed is not None:
                self._device_views = layout.device_views(self._packed)
        self._layout = layout
        self._host_views = layout.tail_views(self._host.numpy())

    def stage_image(self, image: np.ndarray) -> bool:
        """Copy a frame's pixels into the host buffer ahead of its window; True if done. It is not (False) before
        the first frame of this shape and dtype, or while the last frame read in place is held (the GPU may read the
        buffer). `pack_image(image, staged=True)` then skips its copy, unless a new layout came in between."""
        layout = self._layout
        if layout is None or self._window_read is not None or not _holds(layout, image):
            return False
        if self._tail_copied is not None:  # the last frame's upload out of the host buffer is over
            self._tail_copied.synchronize()
        np.copyto(self._host_views["image"], image, casting="safe")
        self._image_staged = True
        return True

    def pack_image(self, image: np.ndarray, staged: bool = False) -> PackedLayout:
        """Copy the frame's pixels into the host buffer (copying, and start the tail's upload), after
        `events_sink`'s sink ran; returns the layout. staged: `stage_image` already copied these pixels (the
        caller vouches that `image` is that array, unchanged)."""
        layout = self._layout
        if layout is None or not _holds(layout, image):
            raise RuntimeError("FramePacker.pack_image: no events_sink ran for an image of this shape and dtype")
        assert self._host is not None
        if not (staged and self._image_staged):
            np.copyto(self._host_views["image"], image, casting="safe")
        self._image_staged = False
        if self._packed is not None:
            self._packed[layout.tail : layout.nbytes].copy_(
                self._host[: layout.nbytes - layout.tail], non_blocking=True
            )
            self._copies_done(self._tail_copied)
        return layout

    def _copies_done(self, event: torch.cuda.Event | None) -> torch.cuda.Event | None:
        """`event` recorded after the copies started so far on a CUDA device (None elsewhere: the copies were
        synchronous)."""
        if event is not None:
            event.record(torch.cuda.current_stream(self.device))
        return event

    def packed(self) -> torch.Tensor:
        """The frame's packed bytes, valid until the next frame is packed: in place, the host buffer (pinned on a
        CUDA device); copying, on the device."""
        layout = self._layout
        assert layout is not None
        buffer = self._host if layout.in_place else self._packed
        assert buffer is not None
        return buffer[: layout.nbytes]
