"""The rosbags type store used for bag I/O without a ROS runtime.

ROS 2 Kilted's standard messages (the distribution of the project's rclpy wheels, so type hashes agree with
the real typesupport) plus every `event_camera_msgs/msg/*.msg` definition, read from the repository's
`interfaces/` folder or from an installed `share/event_camera_msgs/msg/` (colcon / a ROS install). Types a bag
brings along (their definitions are stored in it) are registered when the bag is opened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from rosbags.interfaces import Connection
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

ROS_DISTRO_STORE = Stores.ROS2_KILTED
INTERFACE_PACKAGES = ("event_camera_msgs",)
_REPO_INTERFACES = Path(__file__).resolve().parents[2] / "interfaces"


def interface_folder(package: str) -> Path:
    """The `msg/` folder of an interface package: the source tree's, else an installed one.

    Raises FileNotFoundError listing the places searched.
    """
    candidates = [_REPO_INTERFACES / package / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(prefix) / "share" / package / "msg" for prefix in prefixes]
    for folder in candidates:
        if any(folder.glob("*.msg")):
            return folder
    raise FileNotFoundError(f"no {package}/msg/*.msg definitions found; searched {[str(c) for c in candidates]}")


@cache
def typestore() -> Typestore:
    """The shared type store (built once): Kilted standard messages + `INTERFACE_PACKAGES`."""
    store = get_typestore(ROS_DISTRO_STORE)
    for package in INTERFACE_PACKAGES:
        for path in sorted(interface_folder(package).glob("*.msg")):
            store.register(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    return store


def register_bag_types(store: Typestore, connections: Iterable[Connection]) -> list[str]:
    """Register the types of `connections` that `store` lacks from the definitions stored in the bag.

    Returns the message types that stay unknown (the bag stores no definition for them).
    """
    unknown = []
    for connection in connections:
        if connection.msgtype in store.fielddefs:
            continue
        if connection.msgdef.data:
            store.register(get_types_from_msg(connection.msgdef.data, connection.msgtype))
        else:
            unknown.append(connection.msgtype)
    return unknown
