"""Drive a running segmentation node: publish frames (event packets, then the image) and collect its outputs.

Used by `make demo` (mambaseg_ros.demo) and the node tests. Frames can be sent in lock step (the next frame
only after every output topic answered the previous one) so that a slow CPU model drops nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from event_camera_msgs.msg import EventPacket
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mambaseg_core.events import EventBatch
from mambaseg_core.events.packets import encode_packet, packet_bounds
from mambaseg_ros.bag_play import spin_until
from mambaseg_ros.conversions import numpy_to_image, stamp_to_us, us_to_stamp


@dataclass
class PlayerFrame:
    image: np.ndarray  # (H, W, 3) uint8 RGB or (H, W) uint8 mono
    stamp_us: int  # image time; the events are in the same clock
    events: EventBatch  # usually those since the previous frame, in time order


def event_packets(
    events: EventBatch, *, width: int, height: int, encoding: str = "evt3", packet_us: int | None = None
) -> list[EventPacket]:
    """Time-sorted events as EventPacket messages cut on absolute multiples of `packet_us` µs (one packet if None),
    stamped with their first event's time, as a driver stamps them (layout: mambaseg_core.pipeline.ros_messages)."""
    packets = []
    for start, stop in packet_bounds(events.t, packet_us):
        chunk = events[start:stop]
        payload, time_base = encode_packet(chunk, encoding)
        msg = EventPacket(encoding=encoding, width=width, height=height, is_bigendian=False, time_base=time_base)
        msg.header.stamp = us_to_stamp(int(chunk.t[0]))
        msg.events = payload
        packets.append(msg)
    return packets


class FramePlayer:
    """Publishes frames into a node and records every message on `output_topics` with its arrival time.

    Spins its own executor over `node` (a plain rclpy node owned by the caller).
    """

    def __init__(
        self,
        node: Any,
        image_topic: str,
        events_topic: str,
        output_topics: Sequence[str],
        *,
        encoding: str = "evt3",
        packet_us: int | None = None,
        frame_id: str = "camera",
    ):
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.encoding, self.packet_us, self.frame_id = encoding, packet_us, frame_id
        self.image_pub = node.create_publisher(Image, image_topic, reliable)
        self.events_pub = node.create_publisher(
            EventPacket, events_topic, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.received: dict[str, list[Any]] = {topic: [] for topic in output_topics}
        self.arrival: dict[str, dict[int, float]] = {topic: {} for topic in output_topics}  # stamp µs -> time
        self.sent: dict[int, float] = {}  # image stamp µs -> monotonic publish time
        self._subscriptions = [
            node.create_subscription(Image, topic, self._recorder(topic), reliable) for topic in output_topics
        ]
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)

    def _recorder(self, topic: str) -> Callable[[Any], None]:
        def record(msg: Any) -> None:
            self.arrival[topic][stamp_to_us(msg.header.stamp)] = time.monotonic()
            self.received[topic].append(msg)

        return record

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Spin until `predicate()` holds (True) or `timeout` seconds passed (False)."""
        return spin_until(self.executor, predicate, time.monotonic() + timeout, step_s=0.05)

    def connected(self) -> bool:
        """The node subscribes to both inputs and publishes every output topic."""
        return (
            self.image_pub.get_subscription_count() > 0
            and self.events_pub.get_subscription_count() > 0
            and all(sub.get_publisher_count() > 0 for sub in self._subscriptions)
        )

    def wait_for_connections(self, timeout: float = 60.0) -> bool:
        return self.wait_for(self.connected, timeout)

    def send(self, frame: PlayerFrame, events_first: bool = True) -> None:
        height, width = frame.image.shape[:2]
        packets = event_packets(
            frame.events, width=width, height=height, encoding=self.encoding, packet_us=self.packet_us
        )
        encoding = "rgb8" if frame.image.ndim == 3 else "mono8"
        image = numpy_to_image(frame.image, encoding, Header(stamp=us_to_stamp(frame.stamp_us), frame_id=self.frame_id))
        for packet in packets if events_first else ():
            self.events_pub.publish(packet)
        self.sent[frame.stamp_us] = time.monotonic()
        self.image_pub.publish(image)
        for packet in () if events_first else packets:
            self.events_pub.publish(packet)

    def run_lockstep(self, frames: Sequence[PlayerFrame], timeout_per_frame: float = 60.0) -> bool:
        """Send each frame once the previous one's outputs arrived on every output topic; False on a timeout."""
        for frame in frames:
            self.send(frame)
            if not self.wait_for(lambda f=frame: self.answered(f.stamp_us), timeout_per_frame):
                return False
        return True

    def answered(self, stamp_us: int) -> bool:
        """Every output topic delivered a message for the image stamped `stamp_us`."""
        return all(stamp_us in arrivals for arrivals in self.arrival.values())

    def latencies_ms(self, topic: str) -> dict[int, float]:
        """Image published → message on `topic` received, per image stamp (µs), in milliseconds."""
        return {s: (t - self.sent[s]) * 1000.0 for s, t in self.arrival[topic].items() if s in self.sent}
