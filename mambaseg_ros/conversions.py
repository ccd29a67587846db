"""Conversions between ROS 2 (rclpy) messages and numpy / mambaseg_core types (no cv_bridge: see docs/spec ros.md §6).

The message layouts and the image readers are mambaseg_core.pipeline.ros_messages' (duck-typed, shared with the
bag tools; re-exported here); this module builds the rclpy message objects. Every malformed input raises
ValueError naming the field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mambaseg_core.events import EventBatch, decode_event_array
from mambaseg_core.pipeline.event_clock import EventStream
from mambaseg_core.pipeline.ros_messages import (
    IMAGE_ENCODINGS,
    image_fields,
    image_to_numpy,
    image_to_rgb_or_mono,
    stamp_ns,
)

__all__ = [
    "IMAGE_ENCODINGS",
    "event_array_to_batch",
    "event_packet_to_batch",
    "image_to_numpy",
    "image_to_rgb_or_mono",
    "numpy_to_image",
    "stamp_to_us",
    "us_to_stamp",
]


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """A sensor_msgs/Image holding `array` ((H, W) or (H, W, C) matching `encoding`), little-endian, unpadded."""
    fields = image_fields(array, encoding)
    data = fields.pop("data")
    msg = Image(**fields)
    if header is not None:
        msg.header = header
    msg.data = data.tobytes()  # bytes assignment is ~200x faster than a memoryview
    return msg


def stamp_to_us(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer µs (ns floored)."""
    return stamp_ns(stamp) // 1000


def us_to_stamp(time_us: int) -> Time:
    """Integer µs -> builtin_interfaces/Time."""
    sec, usec = divmod(int(time_us), 1_000_000)
    return Time(sec=sec, nanosec=usec * 1000)


def event_packet_to_batch(msg: Any, stream: EventStream) -> EventBatch:
    """An event_camera_msgs/EventPacket as an EventBatch in the packet's own clock, decoded by its topic's
    `stream` (evt3: unwrapped sensor µs; mono: (time_base + dt) ns -> µs).

    Raises UnsupportedEncodingError (a ValueError) for other encodings, ValueError for malformed payloads.
    """
    return stream.decode(msg.encoding, msg.events, time_base=int(msg.time_base), is_bigendian=bool(msg.is_bigendian))


def event_array_to_batch(msg: Any) -> EventBatch:
    """A dvs_msgs / prophesee_event_msgs EventArray as an EventBatch (ROS time, µs)."""
    return decode_event_array(msg)
