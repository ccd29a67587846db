"""sensor_msgs / event_camera_msgs message objects of the rosbags type store <-> numpy and EventBatch.

The readers are duck-typed (any object with the message's fields: rosbags or rclpy messages). Image layout
rules (sensor_msgs/Image): `step` bytes per row (>= width x pixel size, the rest is padding), `is_bigendian`
for multi-byte channels, `data` holding at least step x height bytes; violations raise ValueError naming the
field. Times: header stamps are integer ns here (`stamp_ns`), EventBatch times µs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mambaseg_core.bags.typesys import typestore
from mambaseg_core.events import EventBatch, encode_evt3, encode_mono

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
EVENT_PACKET = "event_camera_msgs/msg/EventPacket"

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
EVENT_ENCODINGS = ("evt3", "mono")  # what the writers produce


# ---- reading -------------------------------------------------------------------------------------------


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


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


# ---- building ------------------------------------------------------------------------------------------


def header(stamp: int, frame_id: str) -> Any:
    """std_msgs/Header stamped `stamp` ns."""
    store = typestore()
    sec, nanosec = divmod(int(stamp), 1_000_000_000)
    return store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def image_message(array: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/Image holding `array` ((H, W) or (H, W, C) matching `encoding`), little-endian, unpadded."""
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
    return typestore().types[IMAGE](
        header=header(stamp, frame_id),
        height=int(array.shape[0]),
        width=int(array.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=int(array.strides[0]),
        data=array.reshape(-1).view(np.uint8),
    )


def event_packet_message(events: EventBatch, *, encoding: str, width: int, height: int, seq: int, frame_id: str) -> Any:
    """event_camera_msgs/EventPacket of `events` (t in µs, time-ordered), stamped with its first event's time,
    as the metavision driver stamps a packet. `mono` carries that time (ns) as `time_base`; `evt3` leaves it 0."""
    if len(events) == 0:
        raise ValueError("an EventPacket needs at least one event")
    first_ns = int(events.t[0]) * 1000
    if encoding == "evt3":
        payload, time_base = encode_evt3(events), 0
    elif encoding == "mono":
        payload, time_base = encode_mono(events, first_ns), first_ns
    else:
        raise ValueError(f"cannot encode event packets as {encoding!r}; supported: {', '.join(EVENT_ENCODINGS)}")
    return typestore().types[EVENT_PACKET](
        header=header(first_ns, frame_id),
        height=height,
        width=width,
        seq=seq,
        time_base=time_base,
        encoding=encoding,
        is_bigendian=False,
        events=np.frombuffer(payload, np.uint8),
    )


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a rectified camera, pixels."""

    fx: float
    fy: float
    cx: float
    cy: float


def camera_info_message(stamp: int, frame_id: str, height: int, width: int, intrinsics: Intrinsics | None) -> Any:
    """sensor_msgs/CameraInfo of a rectified (distortion-free) camera; all-zero K/P when `intrinsics` is None
    (the ROS convention for an uncalibrated camera)."""
    store = typestore()
    k = np.zeros(9)
    p = np.zeros(12)
    if intrinsics is not None:
        k[:] = [intrinsics.fx, 0, intrinsics.cx, 0, intrinsics.fy, intrinsics.cy, 0, 0, 1]
        p[:] = [intrinsics.fx, 0, intrinsics.cx, 0, 0, intrinsics.fy, intrinsics.cy, 0, 0, 0, 1, 0]
    return store.types[CAMERA_INFO](
        header=header(stamp, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k,
        r=np.eye(3).reshape(-1),
        p=p,
        binning_x=0,
        binning_y=0,
        roi=store.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )
