"""Slow compatibility path for dvs_msgs / prophesee_event_msgs EventArray (one object per event).

Duck-typed, no ROS import: each event needs x, y, polarity and ts.sec / ts.nanosec (builtin_interfaces/Time).
Times become µs (ns floored), like `decode_mono`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mambaseg_core.events.batch import EventBatch


def decode_event_array(events: Any) -> EventBatch:
    """EventArray message (anything with `.events`) or an iterable of Event-like objects → EventBatch."""
    items: Iterable[Any] = events.events if hasattr(events, "events") else events
    rows = [(e.x, e.y, e.ts.sec, e.ts.nanosec, e.polarity) for e in items]
    if not rows:
        return EventBatch.empty()
    table = np.array(rows, dtype=np.int64)
    x, y, sec, nanosec, polarity = table.T
    if x.min() < 0 or y.min() < 0 or max(x.max(), y.max()) >= 1 << 16:
        raise ValueError("EventArray coordinates must be in 0..65535")
    if sec.min() < 0 or nanosec.min() < 0 or nanosec.max() >= 1_000_000_000:
        raise ValueError("EventArray timestamps must have sec >= 0 and 0 <= nanosec < 1e9")
    return EventBatch.from_arrays(x, y, sec * 1_000_000 + nanosec // 1000, polarity != 0)
