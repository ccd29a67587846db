"""rosbag2 writer (sqlite3 or mcap) in the current format, without a ROS runtime.

Bags are rosbag2 metadata version 9 (Jazzy/Kilted) with the full message definitions, RIHS01 type hashes and
offered QoS profiles per topic -- what `ros2 bag info` / `ros2 bag play` need. mcap uses profile `ros2`,
schema encoding `ros2msg`, message encoding `cdr`; sqlite3 uses the schema-4 layout.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from mambaseg_core.bags.typesys import typestore

BAG_VERSION: Literal[9] = 9
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_UNSET = QosTime(0, 0)  # rosbag2's "infinite"/default for deadline, lifespan and lease duration


def qos_profile(depth: int = 10, reliable: bool = True, transient_local: bool = False) -> Qos:
    """A KEEP_LAST offered QoS profile (VOLATILE unless `transient_local`), as a driver's publisher offers."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=_UNSET,
        lifespan=_UNSET,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_UNSET,
        avoid_ros_namespace_conventions=False,
    )


# Reliable publishers match both reliable and best-effort subscribers (the node's inputs default to best
# effort); event streams get a deep queue like the metavision driver's 1 ms packets.
IMAGE_QOS = qos_profile(depth=10)
EVENTS_QOS = qos_profile(depth=1000)


class BagWriter:
    """Writes one rosbag2 folder. Use as a context manager; `path` must not exist yet.

    Topics are declared once (`add_topic`, or `copy_connection` for a topic of another bag), then messages are
    written with their log time (ns): `write` serialises a type-store message, `write_raw` takes CDR bytes.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", store: Typestore | None = None):
        if storage not in STORAGES:
            raise ValueError(f"unknown bag storage {storage!r}; choose one of {sorted(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"output bag {self.path} already exists")
        self.storage = storage
        self.store = store or typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._writer.close()  # also after an error: what was written stays readable

    def add_topic(self, topic: str, msgtype: str, qos: Qos = IMAGE_QOS) -> None:
        """Declare `topic` of `msgtype` (a type-store name, e.g. sensor_msgs/msg/Image)."""
        if msgtype not in self.store.fielddefs:
            raise ValueError(f"topic {topic}: message type {msgtype!r} is not in the type store")
        self._add(topic, self._writer.add_connection(topic, msgtype, typestore=self.store, offered_qos_profiles=[qos]))

    def copy_connection(self, connection: Connection, topic: str | None = None) -> None:
        """Declare a topic exactly as `connection` (of another bag) declares it: type, definition, hash, QoS."""
        ext: Any = connection.ext
        self._add(
            topic or connection.topic,
            self._writer.add_connection(
                topic or connection.topic,
                connection.msgtype,
                msgdef=connection.msgdef.data,
                rihs01=connection.digest,
                serialization_format=ext.serialization_format,
                offered_qos_profiles=ext.offered_qos_profiles,
            ),
        )

    def _add(self, topic: str, connection: Connection) -> None:
        if topic in self._connections:
            raise ValueError(f"topic {topic} declared twice")
        self._connections[topic] = connection
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def write(self, topic: str, log_time_ns: int, message: Any) -> None:
        """Serialise `message` (a type-store object of the topic's type) and write it at `log_time_ns`."""
        connection = self._connection(topic)
        self.write_raw(topic, log_time_ns, self.store.serialize_cdr(message, connection.msgtype))

    def write_raw(self, topic: str, log_time_ns: int, data: bytes | memoryview) -> None:
        """Write serialised CDR `data` at `log_time_ns`."""
        self._writer.write(self._connection(topic), int(log_time_ns), data)
        self.counts[topic] += 1

    def _connection(self, topic: str) -> Connection:
        try:
            return self._connections[topic]
        except KeyError:
            raise KeyError(f"topic {topic} was not declared (add_topic)") from None
