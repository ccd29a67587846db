"""Streaming rosbag2 reader (sqlite3 or mcap): every message in log-time order, images and event packets decoded.

Memory stays bounded whatever the bag's length: messages come one at a time from the storage's cursor (sqlite3)
or chunk by chunk (mcap), and nothing is kept after it is yielded. A message that cannot be decoded (corrupt
CDR, inconsistent image fields, an unsupported image encoding) is counted per topic in `malformed` with its
first error, and yielded undecoded (`decoded is None`) so copies of the bag stay complete.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys.store import Typestore

from mambaseg_core.bags.typesys import register_bag_types, typestore
from mambaseg_core.pipeline.ros_messages import image_to_rgb_or_mono, stamp_ns


class BagError(ValueError):
    """A bag cannot be used as asked: missing, unreadable, or lacking a topic of the expected type."""


@dataclass(frozen=True)
class BagImage:
    """A decoded sensor_msgs/Image: `pixels` (H, W) gray or (H, W, 3) RGB, uint8 or uint16."""

    topic: str
    log_time_ns: int
    stamp_ns: int
    frame_id: str
    encoding: str
    pixels: np.ndarray


@dataclass(frozen=True)
class BagEventPacket:
    """A decoded event_camera_msgs/EventPacket; `payload` (N,) uint8 is still encoded (evt3 decoding is
    stateful across packets, so the consumer decodes)."""

    topic: str
    log_time_ns: int
    stamp_ns: int
    encoding: str
    width: int
    height: int
    seq: int
    time_base: int
    is_bigendian: bool
    payload: np.ndarray


@dataclass(frozen=True)
class BagRecord:
    """One stored message: its connection, log time (ns), CDR bytes, and the decoded image / packet when it is
    on a topic the caller asked to decode (None otherwise, or when malformed)."""

    connection: Connection
    log_time_ns: int
    data: bytes
    decoded: BagImage | BagEventPacket | None


class MalformedCounter:
    """Messages skipped because they could not be decoded, per topic, with the first error of each topic."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.first_error: dict[str, str] = {}

    def add(self, topic: str, error: str) -> None:
        self.counts[topic] += 1
        self.first_error.setdefault(topic, error)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return "; ".join(
            f"{topic}: {count} skipped (first: {self.first_error[topic]})" for topic, count in self.counts.items()
        )


class BagReader:
    """Reads one rosbag2 folder (metadata.yaml + .db3 or .mcap). Use as a context manager."""

    def __init__(self, path: str | Path, store: Typestore | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        self.store = store or typestore()
        try:
            self._reader = Reader(self.path)
        except ReaderError as exc:
            raise BagError(f"cannot read {self.path} as a rosbag2 folder: {exc}") from exc
        self.malformed = MalformedCounter()

    def __enter__(self) -> BagReader:
        try:
            self._reader.open()
        except ReaderError as exc:
            raise BagError(f"cannot open bag {self.path}: {exc}") from exc
        register_bag_types(self.store, self._reader.connections)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._reader.close()

    @property
    def connections(self) -> list[Connection]:
        return list(self._reader.connections)

    @property
    def topics(self) -> dict[str, str]:
        """{topic: message type}."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    def require_topic(self, topic: str, msgtype: str) -> None:
        """BagError naming the topic (and the bag's topics) unless `topic` exists with type `msgtype`."""
        topics = self.topics
        if topic not in topics:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
            raise BagError(f"{self.path}: no topic {topic!r} ({msgtype}); the bag has: {listing}")
        if topics[topic] != msgtype:
            raise BagError(f"{self.path}: topic {topic!r} is {topics[topic]}, expected {msgtype}")

    def records(
        self, image_topics: Sequence[str] = (), event_topics: Sequence[str] = (), *, only: Sequence[str] | None = None
    ) -> Iterator[BagRecord]:
        """Every message (of the topics `only`, if given) in log-time order; those on `image_topics` /
        `event_topics` decoded. A generator."""
        connections = self._reader.connections if only is None else [c for c in self.connections if c.topic in only]
        for connection, log_time, data in self._reader.messages(connections):
            decoded = None
            if connection.topic in image_topics or connection.topic in event_topics:
                decoded = self._decode(connection, log_time, data, connection.topic in image_topics)
            yield BagRecord(connection, int(log_time), data, decoded)

    def _decode(self, connection: Connection, log_time: int, data: bytes, is_image: bool) -> Any:
        try:
            msg: Any = self.store.deserialize_cdr(data, connection.msgtype)
            if is_image:
                pixels = image_to_rgb_or_mono(msg)
                if not pixels.flags.writeable:  # a view of the stored bytes; torch wants writable arrays
                    pixels = pixels.copy()
                return BagImage(
                    connection.topic,
                    int(log_time),
                    stamp_ns(msg.header.stamp),
                    msg.header.frame_id,
                    msg.encoding,
                    pixels,
                )
            return BagEventPacket(
                connection.topic,
                int(log_time),
                stamp_ns(msg.header.stamp),
                msg.encoding,
                int(msg.width),
                int(msg.height),
                int(msg.seq),
                int(msg.time_base),
                bool(msg.is_bigendian),
                np.asarray(msg.events, np.uint8),
            )
        except Exception as exc:  # untrusted bytes: any decoding failure makes the message malformed
            self.malformed.add(connection.topic, f"{type(exc).__name__}: {exc}")
            return None
