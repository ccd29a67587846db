"""Stateless conversions between ROS 2 messages and numpy / mambaseg_core types (no cv_bridge: see docs/spec ros.md §6).

Image layout rules (sensor_msgs/Image): `step` bytes per row (>= width · pixel size, extra bytes are
padding), `is_bigendian` for multi-byte channels, `data` holding at least step · height bytes. Every
violation raises ValueError naming the field.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mambaseg_core.events import EventBatch, Evt3Decoder, decode_event_array, decode_packet

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
# Encodings whose channels are stored blue first; 8UC3 is OpenCV's default BGR order.
_BGR_ORDER = ("bgr8", "bgra8", "bgr16", "8UC3")


def image_to_numpy(msg: Any) -> np.ndarray:
    """The pixels of a sensor_msgs/Image as stored: (H, W) or (H, W, C), native byte order.

    Zero-copy (a view of msg.data) for unpadded native-endian images. Raises ValueError for an unknown
    encoding or inconsistent height/width/step/data.
    """
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    kind, channels = IMAGE_ENCODINGS[msg.encoding]
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


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """A sensor_msgs/Image holding `array` ((H, W) or (H, W, C) matching `encoding`), little-endian, unpadded."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    kind, channels = IMAGE_ENCODINGS[encoding]
    shape_channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else -1
    if array.dtype != np.dtype(kind) or shape_channels != channels:
        raise ValueError(
            f"{encoding} needs a {np.dtype(kind).name} array with {channels} channel(s), "
            f"got {array.dtype} {array.shape}"
        )
    array = np.ascontiguousarray(array, dtype=np.dtype(kind).newbyteorder("<"))
    msg = Image(
        height=int(array.shape[0]),
        width=int(array.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=int(array.strides[0]),
    )
    if header is not None:
        msg.header = header
    msg.data = array.tobytes()  # bytes assignment is ~200x faster than a memoryview
    return msg


def stamp_to_us(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer µs (ns floored)."""
    return int(stamp.sec) * 1_000_000 + int(stamp.nanosec) // 1000


def us_to_stamp(time_us: int) -> Time:
    """Integer µs -> builtin_interfaces/Time."""
    sec, usec = divmod(int(time_us), 1_000_000)
    return Time(sec=sec, nanosec=usec * 1000)


def event_packet_to_batch(msg: Any, decoder: Evt3Decoder | None = None) -> EventBatch:
    """An event_camera_msgs/EventPacket as an EventBatch in the packet's own clock.

    evt3: unwrapped sensor µs (pass the stream's stateful `decoder`); mono: (time_base + dt) ns -> µs.
    Raises UnsupportedEncodingError (a ValueError) for other encodings, ValueError for malformed payloads.
    """
    if msg.is_bigendian:
        raise ValueError("big-endian EventPacket payloads are not supported (evt3 and mono are little-endian)")
    payload = np.frombuffer(msg.events, np.uint8)  # rclpy gives array('B') (or bytes): a zero-copy view
    return decode_packet(msg.encoding, payload, time_base=int(msg.time_base), decoder=decoder)


def event_array_to_batch(msg: Any) -> EventBatch:
    """A dvs_msgs / prophesee_event_msgs EventArray as an EventBatch (ROS time, µs)."""
    return decode_event_array(msg)
