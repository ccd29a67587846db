"""Sequences to put into bags: DSEC-Semantic sequences, DDD17 recordings and synthetic sequences, as frames.

A source yields `BagFrame`s in time order: an image, its stamp (ns, image clock), optionally its ground-truth
label (at the image size, 255 = unlabeled) and a chunk of the event stream (µs, image clock, pixel-aligned with
the image). Chunks partition the stream: the events from `lead_ms` before the first frame up to the first
frame go with it, then those since the previous frame, and the last frame also carries `tail_ms` past its
stamp (so a consumer knows its window is complete). Everything is read frame by frame (bounded memory).

Events are pixel-aligned with the images because the node and the Segmenter expect that:
- DSEC: events are rectified into the ev_inf image frame with the sequence's `rectify_map.h5` and truncated
  toward zero, as the official voxel grid does; events that land outside the frame are dropped. (The official
  loader counts those in its fixed-count windows too; they are a fraction of a percent at the frame border.)
  `rectify_events=False` keeps raw sensor coordinates.
- DDD17: the DAVIS events and frames share one sensor; ns times are floored to µs (exact for the real data).
- synthetic: rendered on the image grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mambaseg_core.bags.messages import Intrinsics
from mambaseg_core.data import ddd17
from mambaseg_core.data.classes import IGNORE_INDEX
from mambaseg_core.data.ddd17 import extract_video_frames, frame_image_path, load_index, mask_frame_id
from mambaseg_core.data.dsec import DsecSequenceFiles, read_rectify_map
from mambaseg_core.data.errors import DatasetError
from mambaseg_core.data.images import open_image, read_label_cv2, read_label_pil
from mambaseg_core.events import Ddd17Events, DsecEventReader, EventBatch, rectify
from mambaseg_core.synthetic import SequenceConfig, generate_sequence


@dataclass
class BagFrame:
    """One frame of a sequence (module docstring)."""

    stamp_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB or (H, W) uint8 gray
    events: EventBatch  # a chunk of the stream, t in µs (image clock), time-ordered
    label: np.ndarray | None = None  # (H, W) uint8 class ids, 255 = unlabeled


@dataclass
class SequenceSource:
    """A sequence to write: its frames (a one-shot iterator) and the camera they come from."""

    name: str
    height: int
    width: int
    num_frames: int
    frames: Iterator[BagFrame]
    intrinsics: Intrinsics | None = None


def _read_png(path: Path, mode: str) -> np.ndarray:
    """A PNG converted by PIL to `mode` ("RGB" or "L"), uint8; DatasetError naming the file."""
    with open_image(path) as image:
        return np.asarray(image.convert(mode))


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file; DatasetError naming it."""
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:
        raise DatasetError(path, f"cannot decode image ({err})") from err


def _pad_label(label: np.ndarray, height: int) -> np.ndarray:
    """(L, W) label of the top L rows -> (height, W), the rows below unlabeled (DSEC/DDD17 crop the car hood)."""
    padded = np.full((height, label.shape[1]), IGNORE_INDEX, np.uint8)
    padded[: label.shape[0]] = label
    return padded


def rectify_events(events: EventBatch, rectify_map: np.ndarray) -> EventBatch:
    """Raw sensor events -> integer pixels of the rectified (H, W) frame, truncated toward zero (like the
    voxel grid); events landing outside the frame are dropped. rectify_map: float32 (H, W, 2)."""
    height, width = rectify_map.shape[:2]
    x_rect, y_rect = rectify(events.x, events.y, rectify_map)
    x, y = x_rect.astype(np.int32), y_rect.astype(np.int32)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return EventBatch(x[inside].astype(np.uint16), y[inside].astype(np.uint16), events.t[inside], events.p[inside])


# ---- DSEC-Semantic ---------------------------------------------------------------------------------------


def dsec_intrinsics(cam_to_cam: Path) -> Intrinsics:
    """The rectified event camera (camRect0, the ev_inf image frame) of a DSEC `cam_to_cam.yaml`."""
    try:
        fx, fy, cx, cy = yaml.safe_load(cam_to_cam.read_text())["intrinsics"]["camRect0"]["camera_matrix"]
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as err:
        raise DatasetError(cam_to_cam, f"no intrinsics.camRect0.camera_matrix [fx, fy, cx, cy] ({err})") from err
    return Intrinsics(float(fx), float(fy), float(cx), float(cy))


def dsec_source(
    sequence: str | Path,
    *,
    classes: int = 11,
    lead_ms: float = 500.0,
    tail_ms: float = 1.0,
    rectify_events_to_image: bool = True,
    calibration: str | Path | None = None,
) -> SequenceSource:
    """A DSEC-Semantic sequence folder in the layout MambaSeg reads (mambaseg_core.data.dsec): ev_inf images
    (RGB) at the label timestamps, the `classes`-class labels, the events (module docstring).

    Intrinsics come from `calibration` or `<sequence>/calibration/cam_to_cam.yaml` when present.
    Raises DatasetError naming a missing or inconsistent file.
    """
    files = DsecSequenceFiles(Path(sequence), classes)
    if len(files.timestamps) == 0:
        raise DatasetError(files.timestamps_path, "no timestamps")
    height, width = _read_png(files.images[0], "RGB").shape[:2]
    label_height = _png_size(files.labels[0])[1]  # DSEC: 440 of 480 rows (the car hood is cut)
    rectify_map = read_rectify_map(files.rectify_map_h5, (height, width)) if rectify_events_to_image else None
    calibration_path = Path(calibration) if calibration else files.path / "calibration" / "cam_to_cam.yaml"
    intrinsics = dsec_intrinsics(calibration_path) if calibration or calibration_path.is_file() else None

    def frames() -> Iterator[BagFrame]:
        with DsecEventReader(files.events_h5) as reader:
            # Image-clock span the ms_to_idx table covers (window() refuses times outside it).
            first_us = reader.t_offset
            last_us = reader.t_offset + (reader.ms_to_idx.size - 1) * 1000
            times = [int(t) for t in files.timestamps]
            start = min(max(first_us, times[0] - int(lead_ms * 1000)), last_us)
            for k, stamp_us in enumerate(times):
                end = stamp_us + int(tail_ms * 1000) if k == len(times) - 1 else stamp_us
                end = min(max(end, start), last_us)
                events = reader.window(start, end)
                start = end
                if rectify_map is not None:
                    events = rectify_events(events, rectify_map)
                image = _read_png(files.images[k], "RGB")
                if image.shape[:2] != (height, width):
                    raise DatasetError(
                        files.images[k], f"image is {image.shape[1]}x{image.shape[0]}, the first is {width}x{height}"
                    )
                label = _pad_label(read_label_pil(files.labels[k], label_height, width), height)
                yield BagFrame(stamp_us * 1000, image, events, label)

    return SequenceSource(files.path.name, height, width, len(files.timestamps), frames(), intrinsics)


# ---- DDD17 ---------------------------------------------------------------------------------------------


def ddd17_source(folder: str | Path, *, lead_ms: float = 50.0, tail_ms: float = 1.0) -> SequenceSource:
    """One `ddd17_seg` recording folder (`dirK`): every frame of `index/index_50ms.npy` as a gray image at its
    time, the frame's segmentation mask where one exists (200 rows, padded to 260 with 255), the events.

    Frames are `imgs/img_%08d.png` (decoded from `video.mp4` first when missing, as the dataset does).
    """
    folder = Path(folder)
    index = load_index(folder / "index" / "index_50ms.npy")
    try:
        events = Ddd17Events(folder)
    except (OSError, ValueError) as err:
        raise DatasetError(folder, f"cannot open events.dat.t/events.dat.xyp ({err})") from err
    masks = {mask_frame_id(p): p for p in sorted((folder / "segmentation_masks").glob("*.png"))}
    if len(index) and not frame_image_path(folder, 1).is_file():
        extract_video_frames(folder)
    times_ns = [int(t) for t in index[:, 0]]
    if not times_ns:
        raise DatasetError(folder / "index" / "index_50ms.npy", "no frame rows")
    height, width = ddd17.SENSOR_HEIGHT, ddd17.SENSOR_WIDTH

    def frames() -> Iterator[BagFrame]:
        start = int(np.searchsorted(events.t_ns, times_ns[0] - int(lead_ms * 1e6), side="left"))
        for j, stamp_ns in enumerate(times_ns):
            end_ns = stamp_ns + int(tail_ms * 1e6) if j == len(times_ns) - 1 else stamp_ns
            end = max(int(np.searchsorted(events.t_ns, end_ns, side="left")), start)
            batch = events.to_batch(start, end)
            start = end
            frame_id = j + 1
            image = _read_png(frame_image_path(folder, frame_id), "L")  # PIL luma, as the dataset reads frames
            if image.shape != (height, width):
                raise DatasetError(frame_image_path(folder, frame_id), f"frame must be {width}x{height} (WxH)")
            label = None
            if frame_id in masks:
                label = _pad_label(read_label_cv2(masks[frame_id], ddd17.LABEL_HEIGHT, width), height)
            yield BagFrame(stamp_ns, image, batch, label)

    return SequenceSource(folder.name, height, width, len(times_ns), frames())


# ---- synthetic -----------------------------------------------------------------------------------------


def synthetic_source(config: SequenceConfig, *, t_offset_us: int = 0) -> SequenceSource:
    """A synthetic sequence (mambaseg_core.synthetic) rendered frame by frame: RGB frames, 11-class labels,
    events; stamps are the sequence clock + `t_offset_us`."""
    scene = config.scene
    # The scene's pinhole camera (synthetic.scene.Scene): focal = focal_ratio * W, principal point below.
    focal = scene.focal_ratio * scene.width
    intrinsics = Intrinsics(focal, focal, (scene.width - 1) / 2.0, scene.horizon_ratio * scene.height)

    def frames() -> Iterator[BagFrame]:
        for frame in generate_sequence(config):
            events = frame.events
            if t_offset_us:
                events = EventBatch(events.x, events.y, events.t + t_offset_us, events.p)
            yield BagFrame((frame.t_us + t_offset_us) * 1000, frame.rgb, events, frame.label)

    name = f"synthetic_seed{scene.seed}_{scene.lighting}"
    return SequenceSource(name, scene.height, scene.width, config.num_frames, frames(), intrinsics)
