"""`mambaseg-bag play`: republish a bag's messages over rclpy at the recorded or a scaled rate.

For machines without the `ros2 bag` CLI. Messages go out exactly as stored (serialised CDR, no
re-serialisation), in log-time order, each topic with its recorded offered QoS (reliable, depth 100 when the
bag has none). Optional lock step for slow consumers: before each image on `lockstep_image_topic` is
published, every earlier image must have been answered on `lockstep_answer_topic` (a sensor_msgs/Image with
the same header stamp, e.g. /mambaseg_node/raw_mask); the playback clock pauses while it waits, so a CPU model
that needs a second per frame still sees every frame, with the events between frames at their recorded pace.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.interfaces import Qos
from sensor_msgs.msg import Image

from mambaseg_core.bags import BagReader
from mambaseg_core.pipeline.ros_messages import stamp_ns

_FALLBACK_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def message_class(msgtype: str) -> type:
    """`pkg/msg/Name` -> the rclpy message class; ValueError naming the package when it is not importable."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise ValueError(
            f"message type {msgtype} is not available to rclpy (is the {package} package built and sourced?)"
        ) from None


def spin_until(executor: Any, predicate: Callable[[], bool], deadline: float, step_s: float = 0.02) -> bool:
    """Spin `executor` until `predicate()` holds (True) or time.monotonic() passes `deadline` (False); with a
    predicate that never holds, a sleep that keeps serving callbacks."""
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        executor.spin_once(timeout_sec=min(remaining, step_s))
    return True


def rclpy_qos(profiles: Sequence[Qos]) -> QoSProfile:
    """The first recorded offered QoS profile as an rclpy profile (rmw enum values are shared)."""
    if not profiles:
        return _FALLBACK_QOS
    qos = profiles[0]
    history = HistoryPolicy.KEEP_ALL if qos.history.value == HistoryPolicy.KEEP_ALL.value else HistoryPolicy.KEEP_LAST
    reliability = (
        ReliabilityPolicy.BEST_EFFORT
        if qos.reliability.value == ReliabilityPolicy.BEST_EFFORT.value
        else ReliabilityPolicy.RELIABLE
    )
    durability = (
        DurabilityPolicy.TRANSIENT_LOCAL
        if qos.durability.value == DurabilityPolicy.TRANSIENT_LOCAL.value
        else DurabilityPolicy.VOLATILE
    )
    return QoSProfile(history=history, depth=max(int(qos.depth), 1), reliability=reliability, durability=durability)


@dataclass
class PlayOptions:
    rate: float = 1.0  # playback speed: 2.0 plays twice as fast
    topics: Sequence[str] | None = None  # bag topics to play (None: all)
    remap: dict[str, str] = field(default_factory=dict)  # bag topic -> published topic
    wait_for_subscribers: Sequence[str] = ()  # bag topics that need a subscriber before playback starts
    subscriber_timeout_s: float = 30.0
    lockstep_image_topic: str | None = None  # module docstring
    lockstep_answer_topic: str | None = None
    answer_timeout_s: float = 60.0  # per image; on a timeout playback goes on (counted)


@dataclass
class PlayReport:
    published: dict[str, int] = field(default_factory=dict)  # per published topic
    answered: int = 0  # lock step: images answered in time
    unanswered: int = 0  # lock step: images given up on after answer_timeout_s
    wall_s: float = 0.0

    def summary(self) -> str:
        counts = ", ".join(f"{topic} {count}" for topic, count in self.published.items())
        text = f"published in {self.wall_s:.1f} s: {counts or 'nothing'}"
        if self.answered or self.unanswered:
            text += f"; lock step: {self.answered} images answered, {self.unanswered} timed out"
        return text


class BagPlayer:
    """Plays one bag through `node` (a plain rclpy node the caller owns; the player spins it)."""

    def __init__(self, node: Any, bag: str | Path, options: PlayOptions | None = None):
        self.node, self.bag, self.options = node, Path(bag), options or PlayOptions()
        if self.options.rate <= 0:
            raise ValueError(f"play rate must be > 0, got {self.options.rate}")
        if (self.options.lockstep_image_topic is None) != (self.options.lockstep_answer_topic is None):
            raise ValueError("lock step needs both an image topic and an answer topic")
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._answered: set[int] = set()  # header stamps (ns) answered on the answer topic
        self._waiting: list[int] = []  # stamps of published lock-step images not yet answered
        self.report = PlayReport()

    def _on_answer(self, msg: Image) -> None:
        self._answered.add(stamp_ns(msg.header.stamp))

    def play(self) -> PlayReport:
        options, report = self.options, self.report
        with BagReader(self.bag) as reader:
            topics = reader.topics
            wanted = set(options.topics) if options.topics is not None else set(topics)
            missing = sorted(wanted - set(topics)) + sorted(set(options.wait_for_subscribers) - set(topics))
            if options.lockstep_image_topic is not None and options.lockstep_image_topic not in topics:
                missing.append(options.lockstep_image_topic)
            if missing:
                raise ValueError(f"{self.bag} has no topic(s) {missing}; it has {sorted(topics)}")
            if options.lockstep_image_topic is not None and options.lockstep_image_topic not in wanted:
                raise ValueError(f"lock-step image topic {options.lockstep_image_topic} is not among the played topics")
            publishers = {}
            for connection in reader.connections:
                if connection.topic in wanted and connection.topic not in publishers:
                    publishers[connection.topic] = self.node.create_publisher(
                        message_class(connection.msgtype),
                        options.remap.get(connection.topic, connection.topic),
                        rclpy_qos(connection.ext.offered_qos_profiles),  # type: ignore[union-attr]
                    )
            if options.lockstep_answer_topic is not None:
                answers = self.node.create_subscription(
                    Image, options.lockstep_answer_topic, self._on_answer, QoSProfile(depth=100)
                )
                ready = spin_until(
                    self.executor,
                    lambda: answers.get_publisher_count() > 0,
                    time.monotonic() + options.subscriber_timeout_s,
                )
                if not ready:
                    raise TimeoutError(f"nobody publishes {options.lockstep_answer_topic} (lock step answers)")
            for topic in options.wait_for_subscribers:
                if not spin_until(
                    self.executor,
                    lambda t=topic: publishers[t].get_subscription_count() > 0,
                    time.monotonic() + options.subscriber_timeout_s,
                ):
                    raise TimeoutError(
                        f"no subscriber on {options.remap.get(topic, topic)} after {options.subscriber_timeout_s:.0f} s"
                    )
            report.published = {options.remap.get(t, t): 0 for t in publishers}
            start_wall = time.monotonic()
            first_log: int | None = None
            paused = 0.0
            for record in reader.records(only=list(publishers)):
                topic = record.connection.topic
                if first_log is None:
                    first_log = record.log_time_ns
                if topic == options.lockstep_image_topic:
                    paused += self._wait_for_answers()
                    self._waiting.append(self._stamp_of_image(record.data))
                due = start_wall + paused + (record.log_time_ns - first_log) / 1e9 / options.rate
                spin_until(self.executor, lambda: False, due)
                publishers[topic].publish(record.data)
                report.published[options.remap.get(topic, topic)] += 1
            paused += self._wait_for_answers()
            report.wall_s = time.monotonic() - start_wall
        return report

    def _stamp_of_image(self, data: bytes) -> int:
        return stamp_ns(deserialize_message(data, Image).header.stamp)

    def _wait_for_answers(self) -> float:
        """Wait until every published lock-step image was answered; returns the seconds waited."""
        start = time.monotonic()
        for stamp in self._waiting:
            if spin_until(
                self.executor, lambda s=stamp: s in self._answered, time.monotonic() + self.options.answer_timeout_s
            ):
                self.report.answered += 1
            else:
                self.report.unanswered += 1
        self._waiting.clear()
        return time.monotonic() - start
