"""The ROS 2 message layouts the pipeline reads and writes, duck-typed: one implementation for rclpy messages
(the node, the player) and rosbags messages (the bag tools). Imports no ROS package.

- sensor_msgs/Image: `step` bytes per row (>= width x pixel size, the rest is padding), `is_bigendian` for
  multi-byte channels, `data` holding at least step x height bytes; violations raise ValueError naming the field.
- builtin_interfaces/Time: integer ns here (`stamp_ns`).
- event_camera_msgs/EventPacket as a driver publishes it: ~`packet_us` of events per packet, cut on absolute
  multiples of `packet_us`, stamped with the packet's first event time; evt3 or mono payloads (payload encoding
  and packet cuts: `mambaseg_core.events.packets`).
- The node's mask outputs: raw_mask (mono8 class ids, 255 = unlabeled), colored_mask and overlay (rgb8).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from mambaseg_core.pipeline.segmenter import SegmentationResult

# encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8UC1": ("u1", 1),
    "8UC3": ("u1", 3),
    "rgb16": ("u2", 3),
    "bgr16": ("u2", 3),
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "bayer_rggb8": ("u1", 1),
    "bayer_bggr8": ("u1", 1),
    "bayer_gbrg8": ("u1", 1),
    "bayer_grbg8": ("u1", 1),
    "bayer_rggb16": ("u2", 1),
    "bayer_bggr16": ("u2", 1),
    "bayer_gbrg16": ("u2", 1),
    "bayer_grbg16": ("u2", 1),
}
# OpenCV names a Bayer pattern after its second row's first two pixels: rggb <-> BG, etc.
_BAYER_TO_RGB = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
_BGR_ORDER = ("bgr8", "bgra8", "bgr16", "8UC3")  # 8UC3 is OpenCV's default BGR order
MASK_ENCODINGS = {"raw_mask": "mono8", "colored_mask": "rgb8", "overlay": "rgb8"}  # the node's outputs, in order


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _encoding_layout(encoding: str) -> tuple[str, int]:
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    return IMAGE_ENCODINGS[encoding]


def image_to_numpy(msg: Any) -> np.ndarray:
    """The pixels of a sensor_msgs/Image as stored: (H, W) or (H, W, C), native byte order.

    Zero-copy (a view of msg.data) for unpadded native-endian images. Raises ValueError for an unknown
    encoding or inconsistent height/width/step/data.
    """
    kind, channels = _encoding_layout(msg.encoding)
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise ValueError(f"image height and width must be >= 1, got {height}x{width}")
    row_bytes = dtype.itemsize * channels * width
    if step < row_bytes:
        raise ValueError(f"image step {step} is less than width * pixel size = {row_bytes} ({msg.encoding})")
    buffer = np.frombuffer(msg.data, np.uint8)
    if buffer.size < step * height:
        raise ValueError(f"image data holds {buffer.size} bytes, step * height needs {step * height}")
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
    if step != row_bytes:  # padded rows: copy out the pixels so they can be viewed as one array
        rows = np.ascontiguousarray(rows)
    pixels = rows.view(dtype).reshape((height, width) if channels == 1 else (height, width, channels))
    return pixels.astype(dtype.newbyteorder("="), copy=False)


def image_to_rgb_or_mono(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image as the Segmenter's input: (H, W) gray or (H, W, 3) RGB, uint8 or uint16.

    Colour orders become RGB, alpha is dropped, Bayer mosaics are demosaiced (OpenCV bilinear).
    """
    pixels = image_to_numpy(msg)
    encoding = msg.encoding
    if encoding.startswith("bayer_"):
        return cv2.cvtColor(pixels, _BAYER_TO_RGB[encoding[6:10]])
    if pixels.ndim == 3:
        pixels = pixels[:, :, :3]
        if encoding in _BGR_ORDER:
            pixels = pixels[:, :, ::-1]
        return np.ascontiguousarray(pixels)
    return pixels


def image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """The sensor_msgs/Image fields but `header` of an unpadded little-endian image holding `array` ((H, W) or
    (H, W, C), checked against `encoding`); `data` is a (step x H,) uint8 view, no copy when already so laid out."""
    kind, channels = _encoding_layout(encoding)
    shape_channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else -1
    if array.dtype != np.dtype(kind) or shape_channels != channels:
        raise ValueError(
            f"{encoding} needs a {np.dtype(kind).name} array with {channels} channel(s), "
            f"got {array.dtype} {array.shape}"
        )
    array = np.ascontiguousarray(array, dtype=np.dtype(kind).newbyteorder("<"))
    return {
        "height": int(array.shape[0]),
        "width": int(array.shape[1]),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(array.strides[0]),
        "data": array.reshape(-1).view(np.uint8),
    }


def mask_image(result: SegmentationResult, name: str) -> np.ndarray:
    """The array of output `name` (a MASK_ENCODINGS key) of one result; colored masks and overlays are rendered
    only when asked for."""
    if name == "raw_mask":
        return result.class_ids
    if name == "colored_mask":
        return result.colored
    if name == "overlay":
        return result.overlay
    raise KeyError(f"unknown output {name!r}; expected one of {list(MASK_ENCODINGS)}")
