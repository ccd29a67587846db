"""`mambaseg-bag record`: subscribe to topics and write them to a rosbag2 with the project's writer.

Messages are stored as received (serialised CDR, `raw=True` subscriptions) at their receive time, like
`ros2 bag record`. Topics are discovered while recording (new publishers are picked up every 0.5 s). Each
subscription is reliable when every publisher of the topic offers reliable (else best effort, which matches
any publisher), and the first publisher's offered QoS is stored for playback. Types must be in the type
store (standard messages, event_camera_msgs); others are skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mambaseg_core.bags import BagWriter, qos_profile
from mambaseg_ros.bag_play import message_class

IGNORED_TOPICS = ("/rosout", "/parameter_events")  # skipped when recording every topic


class BagRecorder:
    """Records `topics` (None: every topic but IGNORED_TOPICS) through `node` until `close()`.

    The caller spins `node` on the thread that made the recorder (sqlite3 objects stay on their thread);
    `close()`, on that thread too, finalises the bag (metadata.yaml)."""

    def __init__(self, node: Any, path: str | Path, topics: Sequence[str] | None = None, storage: str = "mcap"):
        self.node = node
        self.topics = set(topics) if topics is not None else None
        self.writer = BagWriter(path, storage)
        self.writer.__enter__()
        self._subscriptions: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self._timer = node.create_timer(0.5, self.discover)
        self.discover()

    def _wanted(self, topic: str) -> bool:
        return topic not in IGNORED_TOPICS if self.topics is None else topic in self.topics

    def discover(self) -> None:
        """Subscribe to wanted topics that gained a publisher since the last call."""
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self._subscriptions or topic in self._skipped or not self._wanted(topic):
                continue
            msgtype = types[0]
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            try:
                if msgtype not in self.writer.store.fielddefs:
                    raise ValueError(f"type {msgtype} is not in the type store")
                message_type = message_class(msgtype)
            except ValueError as exc:
                self.node.get_logger().warning(f"not recording {topic}: {exc}")
                self._skipped.add(topic)
                continue
            offered = [p.qos_profile for p in publishers]
            reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
            transient = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
            self.writer.add_topic(
                topic, msgtype, qos_profile(max(offered[0].depth, 1), reliable=reliable, transient_local=transient)
            )
            qos = QoSProfile(
                depth=1000,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
            )
            self._subscriptions[topic] = self.node.create_subscription(
                message_type, topic, self._writer_for(topic), qos, raw=True
            )

    def _writer_for(self, topic: str) -> Any:
        def write(data: bytes) -> None:
            self.writer.write_raw(topic, self.node.get_clock().now().nanoseconds, data)

        return write

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.writer.counts)

    def close(self) -> None:
        self.node.destroy_timer(self._timer)
        for subscription in self._subscriptions.values():
            self.node.destroy_subscription(subscription)
        self._subscriptions.clear()
        self.writer.__exit__(None, None, None)
