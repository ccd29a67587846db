"""Event times -> the image clock, and detection of clock jumps (bag loops, sensor resets).

Segmenter windows are defined in the image clock (header stamps of the frames, µs). Decoded events arrive
in one of two clocks:
- `header_offset`: the sensor's own clock with an unknown offset (evt3: unwrapped 24-bit sensor µs). The
  offset is estimated once per stream as `packet stamp - first event time of that packet` on the first
  packet with events, and then applied to every event. The metavision driver stamps a packet with the host
  time at which its first SDK buffer arrived, so the estimate includes the USB/driver latency (typically
  ~1 ms): events land that much late relative to host-stamped frames. Sensor/host drift (~tens of ppm) is
  not tracked; when it exceeds `tolerance_us` the offset is re-estimated (reported as a jump).
- `as_is`: the times are already in the image clock (mono packets whose time_base is ROS time, EventArray).

A jump is reported when a packet stamp goes back by more than `tolerance_us` (bag loop), when the first
event of a packet is older than the newest event seen by more than `tolerance_us`, or (header_offset) when a
packet's aligned time strays from its stamp by more than `tolerance_us`. The caller should then drop the
buffered events (`Segmenter.reset`); the clock restarts its estimate from the jumping packet itself.
"""

from __future__ import annotations

from typing import Literal

from mambaseg_core.events import EventBatch

EventClockMode = Literal["header_offset", "as_is"]


class EventClock:
    """Stateful per-stream aligner (module docstring). `align` returns (batch in the image clock, jumped)."""

    def __init__(self, mode: EventClockMode, tolerance_us: int = 500_000):
        if mode not in ("header_offset", "as_is"):
            raise ValueError(f"event clock mode must be 'header_offset' or 'as_is', got {mode!r}")
        if tolerance_us < 1:
            raise ValueError(f"event clock tolerance_us must be >= 1, got {tolerance_us}")
        self.mode = mode
        self.tolerance_us = tolerance_us
        self.jumps = 0
        self.reset()

    def reset(self) -> None:
        """Forget the offset and the stream history."""
        self.offset_us: int | None = None if self.mode == "header_offset" else 0
        self._last_stamp_us: int | None = None
        self._newest_us: int | None = None

    def align(self, batch: EventBatch, stamp_us: int) -> tuple[EventBatch, bool]:
        """Shift `batch` (decoded times, µs) into the image clock; `stamp_us` is its packet's header stamp."""
        tolerance = self.tolerance_us
        jumped = self._last_stamp_us is not None and stamp_us < self._last_stamp_us - tolerance
        if len(batch) and self.offset_us is not None:
            first_aligned = int(batch.t[0]) + self.offset_us
            strays = self.mode == "header_offset" and abs(first_aligned - stamp_us) > tolerance
            goes_back = self._newest_us is not None and first_aligned < self._newest_us - tolerance
            jumped = jumped or strays or goes_back
        if jumped:
            self.reset()
            self.jumps += 1
        self._last_stamp_us = stamp_us
        if len(batch) == 0:
            return batch, jumped
        if self.offset_us is None:
            self.offset_us = stamp_us - int(batch.t[0])
        if self.offset_us:
            batch = EventBatch(batch.x, batch.y, batch.t + self.offset_us, batch.p)
        newest = int(batch.t.max())
        self._newest_us = newest if self._newest_us is None else max(self._newest_us, newest)
        return batch, jumped
