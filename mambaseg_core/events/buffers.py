"""Zero-copy byte views of packet payloads (bytes, bytearray, memoryview, array('B') from rclpy, numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_byte_array(data: Any) -> np.ndarray:
    """A uint8 (N,) view of `data` without copying; numpy arrays are taken as their raw bytes."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, str):
        raise TypeError("event packet data must be bytes-like, got str")
    try:
        return np.frombuffer(data, np.uint8)
    except TypeError:
        raise TypeError(f"event packet data must be bytes-like, got {type(data).__name__}") from None
