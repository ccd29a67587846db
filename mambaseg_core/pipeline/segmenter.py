"""The one code path from an event stream + camera frames to class masks (ROS node, bag tools, benchmarks).

Per frame (image (H_in, W_in[, 3]) at `stamp_us`, network input (H, W) = model.config.image_size):
1. Window: the events strictly before `stamp_us` from the ring buffer -- the last `window_events`
   (mode `count`, DSEC: 100k) or those in [stamp - window_duration_us, stamp) (mode `duration`, DDD17: 50 ms).
2. Voxel grid (event_bins, H_in, W_in) of the window at the sensor size, which must equal the image size:
   events are expected pixel-aligned with the image (as DSEC's ev_inf frames and DDD17's DAVIS frames are).
   On CUDA devices the fused GPU kernel (pipeline/network_inputs.py), numba otherwise. With no events,
   `missing_events` decides: `skip` the frame or `zeros` (an image-only prediction with an all-zero voxel grid).
3. Image -> float (image_channels, H_in, W_in) in [0, 1] (uint8 / 255, uint16 / 65535; no mean/std, as trained);
   RGB -> gray uses the ITU-R 601 luma weights, gray -> RGB repeats the channel.
4. Fit to the network size, the same transform for image and voxel grid (`image_fit`):
   - `crop_bottom`: keep the top H rows (DSEC drops the bottom 40 of 480 rows, DDD17 60 of 260: the car
     hood); needs W_in == W and H_in >= H.
   - `resize`: bilinear with antialiasing to (H, W), any input size.
5. Model forward and argmax over classes -> uint8 ids, through the `InferenceEngine` (`precision` fp32, the
   accuracy reference, or bf16/fp16; `cuda_graph`: one captured graph replayed per frame on CUDA devices).
6. Output at `output_resolution`: `network` (H, W) or `input` (H_in, W_in): ids resized nearest-neighbour
   (`resize`) or padded with 255 = unlabeled below the kept rows (`crop_bottom`); then palette + overlay.

`add_events` and `reset` may be called from another thread while `segment` runs (the ring buffer locks).
On CUDA devices steps 2-5 run on the GPU, reading the frame where it lies: the event window in the ring buffer's
pinned storage, the image in a pinned buffer that its pixels (with `crop_bottom` only the rows kept) are copied into
(pipeline/network_inputs.py); with `cuda_graph` the conversion to network inputs is part of the captured graph. The
host waits for the GPU once per frame, when the class ids come back. A caller that gets the frame before its
window is complete (mambaseg_node, which waits for the packet after the image stamp) calls `stage_image` first: the
pixels are copied and the image's stem and stage-0 encoder queued on the GPU (their own CUDA graph) while it waits,
and `segment` of that same array runs only the rest of the forward.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mambaseg_core.config import ConfigError
from mambaseg_core.data.classes import CLASS_SETS, IGNORE_INDEX
from mambaseg_core.events import EventBatch, EventRingBuffer, voxel_grid
from mambaseg_core.events.ring_buffer import Sink
from mambaseg_core.models.mambaseg import ImageStage0
from mambaseg_core.ops.camera_image import image_tensor
from mambaseg_core.ops.selective_scan import available_backends
from mambaseg_core.pipeline.colorize import colorize, overlay, palette_lut, to_rgb8
from mambaseg_core.pipeline.engine import PRECISIONS, InferenceEngine, MakeInputs, Precision, network_inputs_as_given
from mambaseg_core.pipeline.network_inputs import FramePacker, PackedImage, fit

log = logging.getLogger(__name__)

# The default class set for a model with this many classes.
_CLASS_SET_BY_COUNT = {cs.num_classes: key for key, cs in CLASS_SETS.items()}


@dataclass
class SegmenterConfig:
    """How frames and events become network inputs and masks. Every key is validated at load time."""

    window_mode: Literal["count", "duration"] = "count"  # last N events (DSEC) or a fixed time span (DDD17)
    window_events: int = 100_000  # N for `count`
    window_duration_us: int = 50_000  # span for `duration`, µs
    sensor_size: tuple[int, int] | None = None  # (H, W) of the event sensor; None = each image's size
    buffer_duration_us: int = 2_000_000  # history kept in the ring buffer, µs
    buffer_max_events: int = 4_000_000  # cap on buffered events (13 B each, page-locked on a GPU): bounds memory
    missing_events: Literal["skip", "zeros"] = "skip"  # no event in the window: drop the frame or run image-only
    image_fit: Literal["resize", "crop_bottom"] = "resize"  # image size -> network size (module docstring)
    output_resolution: Literal["input", "network"] = "input"  # masks at the image's size or the network's
    overlay_alpha: float = 0.5  # weight of the class colour in the overlay
    class_set: str = "auto"  # dsec11 | dsec19 | ddd17 | auto (from the model's class count)
    class_names: list[str] | None = None  # overrides the class set's names (one per class)
    palette: list[tuple[int, int, int]] | None = None  # overrides the class set's RGB palette (one per class)
    # fp32 (accuracy reference) | bf16 | fp16 matrix products (InferenceEngine) | auto: fp16 on CUDA, else fp32
    precision: Precision | Literal["auto"] = "fp32"
    cuda_graph: bool = False  # replay one captured CUDA graph per frame (CUDA devices; ignored with a warning on CPU)
    compile: bool = False  # torch.compile the forward (fuses small kernels; minutes of compilation at warm-up)
    parallel_branches: bool = True  # image and event branches on parallel CUDA streams (ignored on CPU)
    # stage_image also runs the image's stem and stage-0 encoder ahead (GPU; false: pixels only, 2 graphs less)
    image_ahead: bool = True

    def validate(self) -> None:
        if self.window_events < 1:
            raise ConfigError("window_events", f"must be >= 1, got {self.window_events}")
        if self.window_duration_us < 1:
            raise ConfigError("window_duration_us", f"must be >= 1, got {self.window_duration_us}")
        if self.sensor_size is not None and min(self.sensor_size) < 1:
            raise ConfigError("sensor_size", f"must be positive (H, W) or null, got {self.sensor_size}")
        if self.buffer_max_events < 1:
            raise ConfigError("buffer_max_events", f"must be >= 1, got {self.buffer_max_events}")
        if self.window_mode == "count" and self.buffer_max_events < self.window_events:
            raise ConfigError(
                "buffer_max_events", f"must be >= window_events ({self.window_events}), got {self.buffer_max_events}"
            )
        if self.buffer_duration_us < 1:
            raise ConfigError("buffer_duration_us", f"must be >= 1, got {self.buffer_duration_us}")
        if self.window_mode == "duration" and self.buffer_duration_us < self.window_duration_us:
            raise ConfigError(
                "buffer_duration_us",
                f"must be >= window_duration_us ({self.window_duration_us}), got {self.buffer_duration_us}",
            )
        if self.precision not in (*PRECISIONS, "auto"):
            raise ConfigError("precision", f"must be one of {[*sorted(PRECISIONS), 'auto']}, got {self.precision!r}")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ConfigError("overlay_alpha", f"must be in [0, 1], got {self.overlay_alpha}")
        if self.class_set != "auto" and self.class_set not in CLASS_SETS:
            raise ConfigError("class_set", f"must be 'auto' or one of {sorted(CLASS_SETS)}, got {self.class_set!r}")
        for i, rgb in enumerate(self.palette or ()):
            if any(not 0 <= c <= 255 for c in rgb):
                raise ConfigError(f"palette[{i}]", f"RGB values must be in 0..255, got {list(rgb)}")


@dataclass(frozen=True)
class ClassInfo:
    """Names and (K, 3) uint8 RGB palette of the model's K classes."""

    key: str
    names: tuple[str, ...]
    palette: np.ndarray


def resolve_classes(config: SegmenterConfig, num_classes: int) -> ClassInfo:
    """The class names and palette for a model with `num_classes` outputs; errors name the config key."""
    key = config.class_set
    if key == "auto":
        if num_classes not in _CLASS_SET_BY_COUNT and (config.palette is None or config.class_names is None):
            raise ConfigError(
                "class_set",
                f"no built-in class set has {num_classes} classes ({sorted(_CLASS_SET_BY_COUNT)} exist): "
                "set class_names and palette",
            )
        key = _CLASS_SET_BY_COUNT.get(num_classes, "custom")
    base = CLASS_SETS.get(key)
    if base is not None and base.num_classes != num_classes:
        raise ConfigError("class_set", f"{key!r} has {base.num_classes} classes but the model predicts {num_classes}")
    names = tuple(config.class_names) if config.class_names is not None else base.names  # type: ignore[union-attr]
    palette = np.array(config.palette, np.uint8) if config.palette is not None else base.palette  # type: ignore[union-attr]
    if len(names) != num_classes:
        raise ConfigError("class_names", f"needs {num_classes} names (one per class), got {len(names)}")
    if palette.shape != (num_classes, 3):
        raise ConfigError("palette", f"needs {num_classes} RGB colours (one per class), got shape {palette.shape}")
    return ClassInfo(key, names, palette)


# The stages of `Segmenter.segment`, in the order they run: the keys of `SegmentationResult.timings_ms` besides
# "total".
STAGES = ("window", "voxel", "preprocess", "forward", "postprocess")


@dataclass
class SegmentationResult:
    """Masks of one frame. (H', W') is the input or the network size per `output_resolution`.

    `colored` and `overlay` (and the image under it) are rendered on first access, so that a consumer can publish the
    class ids first and never pays for renderings it does not use.
    """

    class_ids: np.ndarray  # (H', W') uint8, 255 = unlabeled
    events_used: int  # events in the voxel grid (0: image-only, `missing_events: zeros`)
    # Per stage (STAGES), and "total". On CUDA devices the uploads, the voxel grid and the image conversion run
    # within forward: there window is starting the events' copies out of the ring buffer, preprocess is copying
    # the image into the pinned staging buffer and starting its upload, and voxel is 0. forward runs until the
    # class ids are on the host at the output size (the resizing back to the input size runs on the device, before
    # the copy); postprocess is what is left on the host before the renderings (binding the image under them).
    timings_ms: dict[str, float]
    render_base: Callable[[], np.ndarray]  # -> overlay_base, from the frame's array (left unchanged until then)
    palette_lut: np.ndarray  # (256, 3) uint8: class id -> colour (colorize.palette_lut)
    overlay_alpha: float

    @cached_property
    def overlay_base(self) -> np.ndarray:
        """(H', W', 3) uint8 RGB: the image under the overlay."""
        return self.render_base()

    @cached_property
    def colored(self) -> np.ndarray:
        """(H', W', 3) uint8 RGB class colours."""
        return colorize(self.class_ids, self.palette_lut)

    @cached_property
    def overlay(self) -> np.ndarray:
        """(H', W', 3) uint8 RGB: the class colours blended over the image."""
        return overlay(self.overlay_base, self.colored, self.class_ids, self.overlay_alpha)


@dataclass
class SegmenterStats:
    """Counters since construction (not cleared by `reset`)."""

    frames: int = 0  # segment() calls that returned a result
    skipped_no_events: int = 0  # frames dropped by missing_events=skip
    image_only: int = 0  # frames run with an all-zero voxel grid (missing_events=zeros)
    resets: int = 0  # reset() calls (time jumps)


@dataclass
class NetworkInputs:
    """What the model sees for one frame: image (1, C, H, W), events (1, bins, H, W), both float32."""

    image: torch.Tensor
    events: torch.Tensor
    events_used: int


class Segmenter:
    """Events + image -> class ids, colored mask and overlay with one model on one device (module docstring)."""

    def __init__(self, model: torch.nn.Module, config: SegmenterConfig, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        model_config = model.config
        self.config = config
        self.network_size: tuple[int, int] = (int(model_config.image_size[0]), int(model_config.image_size[1]))
        self.image_channels: int = int(model_config.image_channels)
        self.event_bins: int = int(model_config.event_bins)
        if self.image_channels not in (1, 3):
            raise ValueError(f"model image_channels must be 1 or 3, got {self.image_channels}")
        self.classes = resolve_classes(config, int(model_config.num_classes))
        self._lut = palette_lut(self.classes.palette)
        if config.sensor_size is not None:
            self._check_fit((config.sensor_size[0], config.sensor_size[1]), "sensor_size")
        self.stats = SegmenterStats()
        # Pinned on a GPU: the frames' event windows are uploaded straight from its storage.
        self._buffer = EventRingBuffer(
            config.buffer_duration_us, config.buffer_max_events, pinned=self.device.type == "cuda"
        )
        use_graph = config.cuda_graph and self.device.type == "cuda"
        if config.cuda_graph and not use_graph:
            log.warning("cuda_graph ignored: the model runs on %s, not a CUDA device", self.device)
        # auto: fp16 where it is fast and keeps >= 99.9 % of the fp32 argmax (docs/benchmarks.md); CPUs lack fast fp16.
        precision = config.precision if config.precision != "auto" else "fp16" if self.device.type == "cuda" else "fp32"
        self.engine = InferenceEngine(
            self.model,
            precision=precision,
            cuda_graph=use_graph,
            compile=config.compile,
            parallel_branches=config.parallel_branches and self.device.type == "cuda",
        )
        self._packer = FramePacker(self.device) if self.device.type == "cuda" else None
        self._staged_image: np.ndarray | None = None  # the frame whose pixels stage_image copied ahead
        self._ahead: _ImageAhead | None = None  # and whose image's stage 0 it queued on the GPU

    # ---- event stream -------------------------------------------------------------------------------

    def add_events(self, batch: EventBatch) -> None:
        """Append events whose times (µs) are already in the image clock (the ring buffer's policies apply)."""
        self._buffer.append(batch)

    @property
    def latest_event_us(self) -> int | None:
        """The newest buffered event time (µs, image clock); None when the buffer is empty."""
        return self._buffer.latest_time

    def events_reached(self, stamp_us: int) -> bool:
        """True once the buffered events reach `stamp_us`: a frame at that stamp has all of its window."""
        latest = self._buffer.latest_time
        return latest is not None and latest >= stamp_us

    @property
    def buffer(self) -> EventRingBuffer:
        """The event ring buffer (its `stats` count overflow drops and resets; `len` is the events held)."""
        return self._buffer

    def reset(self) -> None:
        """Forget every buffered event (the clock jumped, e.g. a bag looped)."""
        self._buffer.clear()
        self.stats.resets += 1

    def window(self, stamp_us: int) -> EventBatch:
        """A copy of the events the frame at `stamp_us` uses (strictly before it), per `window_mode`."""
        return self._window(self._buffer, stamp_us)

    def _send_window(self, ring: EventRingBuffer, stamp_us: int, sink: Sink) -> int:
        """The frame's window in `ring` handed to `sink` (EventRingBuffer.send_window); returns its event count."""
        if self.config.window_mode == "count":
            return ring.send_last_n(self.config.window_events, stamp_us, sink)
        return ring.send_window(stamp_us - self.config.window_duration_us, stamp_us, sink)

    def _window(self, ring: EventRingBuffer, stamp_us: int) -> EventBatch:
        copies: list[EventBatch] = []
        self._send_window(ring, stamp_us, lambda window: copies.append(EventBatch.concatenate(window.slices)))
        return copies[0]

    # ---- frames -------------------------------------------------------------------------------------

    def _check_fit(self, size: tuple[int, int], what: str) -> None:
        height, width = self.network_size
        if self.config.image_fit == "crop_bottom" and (size[1] != width or size[0] < height):
            raise ValueError(
                f"{what} {size[0]}x{size[1]} cannot be cropped to the network input {height}x{width} "
                "(image_fit=crop_bottom keeps the top rows: needs the same width and at least as many rows)"
            )

    def check_image(self, image: np.ndarray) -> tuple[int, int]:
        """(H, W) of an acceptable frame; ValueError for a wrong dtype, layout or size (sensor_size, image_fit)."""
        if image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"image must be uint8 or uint16, got {image.dtype}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"image must be (H, W) gray or (H, W, 3) RGB, got shape {image.shape}")
        size = (int(image.shape[0]), int(image.shape[1]))
        sensor = self.config.sensor_size
        if sensor is not None and size != tuple(sensor):
            raise ValueError(f"image size {size[0]}x{size[1]} differs from sensor_size {sensor[0]}x{sensor[1]}")
        self._check_fit(size, "image size")
        return size

    def _capacity(self) -> int | None:
        """Event slots of a packed frame: the window's size in `count` mode; None (grows with the window) otherwise."""
        return self.config.window_events if self.config.window_mode == "count" else None

    def _stage(
        self, image: np.ndarray, ring: EventRingBuffer, stamp_us: int, timings: dict[str, float]
    ) -> tuple[MakeInputs, dict[str, torch.Tensor], int]:
        """The frame at `stamp_us` (its events from `ring`) as (make_inputs, inputs, events used): the network inputs
        are make_inputs(**inputs), which the engine runs (on CUDA inside its graph). CPU: the network inputs
        themselves, the voxel grid by numba. CUDA: the frame staged in a device buffer by the FramePacker, converted
        by a PackedFrame."""
        size = self.check_image(image)
        start = time.perf_counter()
        if self._packer is None:
            events = self._window(ring, stamp_us)
            timings["window"] = _ms_since(start)
            start = time.perf_counter()
            grid = voxel_grid(
                events.x, events.y, events.t, events.p, bins=self.event_bins, height=size[0], width=size[1]
            )  # all zeros for no events
            timings["voxel"] = _ms_since(start)
            start = time.perf_counter()
            pixels = torch.from_numpy(image if image.dtype == np.uint8 else image.astype(np.float32))
            bits = 8 if image.dtype == np.uint8 else 16
            inputs = {
                "image": fit(image_tensor(pixels, bits, self.image_channels), self.network_size, self.config.image_fit),
                "events": fit(torch.from_numpy(grid), self.network_size, self.config.image_fit),
            }
            timings["preprocess"] = _ms_since(start)
            return network_inputs_as_given, {name: v[None].contiguous() for name, v in inputs.items()}, len(events)
        staged, self._staged_image = image is self._staged_image, None
        pixels = self._staged_pixels(image)
        events_used = self._send_window(ring, stamp_us, self._packer.events_sink(pixels, self._capacity()))
        timings["window"] = _ms_since(start)
        start = time.perf_counter()
        self._packer.pack_image(pixels, staged=staged)
        timings["preprocess"] = _ms_since(start)
        timings["voxel"] = 0.0  # on the device, inside forward
        make_inputs = self._packer.frame(self.image_channels, self.event_bins, self.network_size, self.config.image_fit)
        return make_inputs, {"packed": self._packer.packed()}, events_used

    def _staged_pixels(self, image: np.ndarray) -> np.ndarray:
        """What a GPU frame stages of `image`: with crop_bottom only the rows kept (the same inputs, less to copy)."""
        return image[: self.network_size[0]] if self.config.image_fit == "crop_bottom" else image

    def stage_image(self, image: np.ndarray) -> bool:
        """Start a frame on its image alone, ahead of its events: mambaseg_node calls this while it waits for the last
        events of the frame's window. The pixels go where the GPU reads them, and (with `image_ahead`, read in place:
        the GPU defaults) the image's stem and stage-0 encoder are queued on the GPU; `segment` of this same array
        (left unchanged) does the rest. Returns whether it was done; not on a CPU device, before the first frame of
        this shape and dtype, or for an image that `segment` will reject (and say why)."""
        if self._packer is None:
            return False
        try:
            self.check_image(image)
        except ValueError:
            return False
        if self._ahead is not None:  # a frame staged and never segmented: its image part may still read the buffer
            torch.cuda.current_stream(self.device).synchronize()
            self._ahead = None
        self._staged_image = image if self._packer.stage_image(self._staged_pixels(image)) else None
        ahead = self.config.image_ahead and self._packer.in_place and hasattr(self.model, "image_stage0")
        if self._staged_image is not None and ahead:
            part = self._packer.frame(self.image_channels, self.event_bins, self.network_size, self.config.image_fit)
            stage0 = self.engine.image_stage0_from(part.image_part, packed=self._packer.packed())
            self._ahead = _ImageAhead(image, part.image_part, stage0)
        return self._staged_image is not None

    def _class_ids(self, image: np.ndarray, make_inputs: MakeInputs, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frame's (1, H, W) class ids on the device: the rest of the forward if `stage_image` ran its image's
        part ahead (the same array, and the image where that part read it), else the whole forward."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.image is image and ahead.part == getattr(make_inputs, "image_part", None):
            return self.engine.class_ids_after(ahead.stage0, make_inputs.events_part, **inputs)  # type: ignore[attr-defined]
        return self.engine.class_ids_from(make_inputs, **inputs)

    def _unfit_ids(self, ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(H, W) uint8 ids at the network size -> (H_in, W_in) at the input size, the inverse of `fit`."""
        if tuple(ids.shape) == size:
            return ids
        if self.config.image_fit == "crop_bottom":
            full = torch.full(size, IGNORE_INDEX, dtype=torch.uint8, device=ids.device)
            full[: ids.shape[0]] = ids
            return full
        # Nearest neighbour: interpolating ids would invent classes at borders.
        return F.interpolate(ids[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(torch.uint8)

    @property
    def scan_backend(self) -> str:
        """The model's selective-scan backend, with what `auto` resolves to on this device (e.g. "auto -> cuda")."""
        name = str(self.model.config.scan_backend)
        return f"auto -> {available_backends(self.device)[0]}" if name == "auto" else name

    def warmup(self, image_shape: tuple[int, ...] | None = None, image_dtype: type = np.uint8) -> float:
        """One ring-buffer append, one voxel grid and one forward pass on a dummy frame, so the first real frame pays
        no JIT compilation, kernel selection, lazy CUDA init, extension loading or CUDA-graph capture; returns the
        milliseconds it took. The dummy frame is (H, W, 3) `image_dtype` at sensor_size (else the network size)
        unless `image_shape` says otherwise: a real frame of another shape or dtype recaptures the CUDA graph.
        The append goes to a throwaway buffer; the frame reads an empty window of the Segmenter's own buffer (the
        storage a CUDA graph reads in place must be the one real frames use). The Segmenter's state is left
        untouched."""
        if image_shape is None:
            image_shape = (*(self.config.sensor_size or self.network_size), 3)
        start = time.perf_counter()
        throwaway = EventRingBuffer(1_000_000, 2)
        throwaway.append(EventBatch.from_arrays([0, 1], [0, 1], [0, 1], [0, 1]))  # compiles the numba append
        before_any_event = self._buffer.earliest_time or 0  # events strictly before it: none
        dummy: np.ndarray = np.zeros(image_shape, image_dtype)
        for ahead in (False, True):  # the whole forward's graph, then (GPU) those of the image part ahead and the rest
            if ahead and not (self.config.image_ahead and self.stage_image(dummy)):
                break
            with self._frame():
                make_inputs, inputs, _ = self._stage(dummy, self._buffer, before_any_event, {})
                self._class_ids(dummy, make_inputs, inputs).cpu()
        return _ms_since(start)

    def prepare(self, image: np.ndarray, stamp_us: int) -> NetworkInputs:
        """Steps 1-4 of the module docstring: the network inputs for this frame on the Segmenter's device (no skip
        policy applied)."""
        with self._frame():
            make_inputs, inputs, events_used = self._stage(image, self._buffer, stamp_us, {})
            with torch.inference_mode():
                image_tensor, events = make_inputs(**inputs)
        return NetworkInputs(image_tensor, events, events_used)

    @contextlib.contextmanager
    def _frame(self) -> Iterator[None]:
        """Around a frame's staging and GPU work: a frame that the GPU reads in place (FramePacker: the window in the
        ring buffer's storage, whose appends into its slots wait for it, and the pinned frame buffer) is released
        only once that work is done, however the frame ends. A caller that has waited for the GPU releases it
        itself."""
        try:
            yield
        finally:
            if self._packer is not None and self._packer.window_held:
                torch.cuda.current_stream(self.device).synchronize()
                self._packer.release_window()

    def _network_view(self, image: np.ndarray) -> np.ndarray:
        """The frame as the network sees it, as RGB for the overlay at the network resolution: fitted on the host
        (OpenCV's area/linear resampling stands in for torch's antialiased bilinear) and gray for a gray model."""
        height, width = self.network_size
        if image.shape[:2] != (height, width):
            if self.config.image_fit == "crop_bottom":
                image = image[:height, :width]
            else:
                shrinking = image.shape[0] * image.shape[1] > height * width
                method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
                image = cv2.resize(image, (width, height), interpolation=method)
        if self.image_channels == 1 and image.ndim == 3:
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        return to_rgb8(image)

    def segment(self, image: np.ndarray, stamp_us: int) -> SegmentationResult | None:
        """Segment one frame (image (H, W) gray or (H, W, 3) RGB, uint8/uint16) taken at `stamp_us` (image clock).

        Returns None when the window holds no events and `missing_events` is `skip`. The result's overlay is made
        from `image` when first asked for: leave the array unchanged until then.
        Raises ValueError for images of the wrong dtype, layout or size.
        """
        total_start = time.perf_counter()
        timings: dict[str, float] = {}
        with self._frame():
            make_inputs, inputs, events_used = self._stage(image, self._buffer, stamp_us, timings)
            if events_used == 0:
                if self.config.missing_events == "skip":
                    self.stats.skipped_no_events += 1
                    return None
                if self.stats.image_only == 0:
                    log.warning("no events before frame at %d us: running image-only (zero voxel grid)", stamp_us)
                self.stats.image_only += 1
            start = time.perf_counter()
            ids = self._class_ids(image, make_inputs, inputs)[0]
            at_input_size = self.config.output_resolution == "input"
            if at_input_size:  # on the device: no host work after the wait below
                ids = self._unfit_ids(ids, (int(image.shape[0]), int(image.shape[1])))
            ids = ids.cpu()  # the one wait for the GPU
            if self._packer is not None:
                self._packer.release_window()  # the GPU is done with the window
            timings["forward"] = _ms_since(start)
        start = time.perf_counter()
        base = partial(to_rgb8, image) if at_input_size else partial(self._network_view, image)
        timings["postprocess"] = _ms_since(start)
        timings["total"] = _ms_since(total_start)
        self.stats.frames += 1
        return SegmentationResult(ids.numpy(), events_used, timings, base, self._lut, self.config.overlay_alpha)


@dataclass(frozen=True)
class _ImageAhead:
    """A frame's image part queued ahead of its events by Segmenter.stage_image."""

    image: np.ndarray  # the frame's array (compared by identity)
    part: PackedImage  # where it read the pixels
    stage0: ImageStage0  # its outputs on the device


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def build_model(
    checkpoint: str | Path | None,
    model_config: str | Path | dict | None = None,
    *,
    device: str | torch.device = "cpu",
    scan_backend: str | None = None,
    random_seed: int | None = None,
) -> torch.nn.Module:
    """The segmentation model in eval mode on `device`.

    With a `checkpoint` (ours or official): its weights and, for ours, its stored config; `model_config`
    then only supplies the image_size that official checkpoints do not record. Without one, and only when
    `random_seed` is given: random weights for `model_config` (proof-of-life tests, plumbing demos).
    Raises FileNotFoundError / ValueError naming the missing input otherwise.
    """
    from mambaseg_core.models import MambaSeg, load_model, load_model_config

    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        image_size = load_model_config(model_config).image_size if model_config else None
        return load_model(str(checkpoint), device=device, scan_backend=scan_backend, image_size=image_size)
    if random_seed is None:
        raise ValueError("no checkpoint given (random weights were not allowed)")
    if not model_config:
        raise ValueError("random weights need a model_config (no checkpoint given)")
    config = load_model_config(model_config, **({"scan_backend": scan_backend} if scan_backend else {}))
    torch.manual_seed(random_seed)
    return MambaSeg(config).to(device).eval()


__all__ = [
    "ClassInfo",
    "NetworkInputs",
    "SegmentationResult",
    "Segmenter",
    "SegmenterConfig",
    "SegmenterStats",
    "build_model",
    "resolve_classes",
]
