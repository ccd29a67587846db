"""numpy arrays and EventBatches -> sensor_msgs / event_camera_msgs message objects of the rosbags type store.

The layouts (and the duck-typed readers, shared with the node) are mambaseg_core.pipeline.ros_messages'.
Times: header stamps are integer ns here, EventBatch times µs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mambaseg_core.bags.typesys import typestore
from mambaseg_core.events import EventBatch
from mambaseg_core.events.packets import encode_packet
from mambaseg_core.pipeline.ros_messages import image_fields

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
EVENT_PACKET = "event_camera_msgs/msg/EventPacket"


def header(stamp: int, frame_id: str) -> Any:
    """std_msgs/Header stamped `stamp` ns."""
    store = typestore()
    sec, nanosec = divmod(int(stamp), 1_000_000_000)
    return store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def image_message(array: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/Image holding `array` ((H, W) or (H, W, C) matching `encoding`), little-endian, unpadded."""
    return typestore().types[IMAGE](header=header(stamp, frame_id), **image_fields(array, encoding))


def event_packet_message(events: EventBatch, *, encoding: str, width: int, height: int, seq: int, frame_id: str) -> Any:
    """event_camera_msgs/EventPacket of `events` (t in µs, time-ordered), stamped with its first event's time,
    as the metavision driver stamps a packet. `mono` carries that time (ns) as `time_base`; `evt3` leaves it 0."""
    payload, time_base = encode_packet(events, encoding)
    first_ns = int(events.t[0]) * 1000
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
