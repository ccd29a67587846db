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

`EventStream` is one event topic as the node and the bag tools consume it: its stateful EVT3 decoder and an
`EventClock` whose mode `auto` picks per source (evt3: header_offset, anything else: as_is), restarted when
the source changes.
"""

from __future__ import annotations

import array
from typing import Literal, get_args

import numpy as np

from mambaseg_core.events import EventBatch, Evt3Decoder, decode_packet

EventClockMode = Literal["header_offset", "as_is"]
EventClockSetting = Literal["auto", "header_offset", "as_is"]
EVENT_CLOCK_SETTINGS: tuple[str, ...] = get_args(EventClockSetting)


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


class EventStream:
    """One event topic -> EventBatches in the image clock (module docstring). Not thread-safe: one caller."""

    def __init__(
        self,
        clock: EventClockSetting = "auto",
        tolerance_us: int = 500_000,
        sensor_size: tuple[int, int] | None = None,
    ):
        """`sensor_size` (H, W) bounds the EVT3 decoder's coordinates (None: unchecked)."""
        if clock not in EVENT_CLOCK_SETTINGS:
            raise ValueError(f"event clock must be one of {', '.join(EVENT_CLOCK_SETTINGS)}, got {clock!r}")
        self.clock_setting, self.tolerance_us = clock, tolerance_us
        self._evt3 = Evt3Decoder(sensor_size[1], sensor_size[0]) if sensor_size else Evt3Decoder()
        self._clock: EventClock | None = None
        self._clock_source: str | None = None

    def decode(
        self,
        encoding: str,
        payload: bytes | bytearray | memoryview | array.array | np.ndarray,
        *,
        time_base: int = 0,
        is_bigendian: bool = False,
    ) -> EventBatch:
        """An EventPacket's payload (any buffer: bytes, array('B'), (N,) uint8) as events in the packet's own
        clock. Raises UnsupportedEncodingError (a ValueError) for other encodings, ValueError when malformed."""
        if is_bigendian:
            raise ValueError("big-endian EventPacket payloads are not supported (evt3 and mono are little-endian)")
        data = np.frombuffer(payload, np.uint8)  # a zero-copy view
        return decode_packet(encoding, data, time_base=int(time_base), decoder=self._evt3)

    def align(self, batch: EventBatch, stamp_us: int, source: str) -> tuple[EventBatch, bool]:
        """(`batch` moved into the image clock, whether the clock jumped). `stamp_us` is the packet's header
        stamp, `source` its encoding (or any other name, e.g. "event_array", for already-aligned streams)."""
        if self._clock is None or self._clock_source != source:  # first packet, or the stream changed encoding
            mode: EventClockMode
            if self.clock_setting == "auto":
                mode = "header_offset" if source == "evt3" else "as_is"
            else:
                mode = self.clock_setting
            self._clock = EventClock(mode, self.tolerance_us)
            self._clock_source = source
        return self._clock.align(batch, stamp_us)
