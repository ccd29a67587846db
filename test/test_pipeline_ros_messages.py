"""The message layouts shared by the node, the player and the bag tools (pipeline/ros_messages.py) and the
per-topic EventStream (pipeline/event_clock.py), without ROS: duck-typed messages are SimpleNamespaces."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from mambaseg_core.events import EventBatch
from mambaseg_core.events.packets import encode_packet, packet_bounds
from mambaseg_core.pipeline.event_clock import EventStream
from mambaseg_core.pipeline.ros_messages import MASK_ENCODINGS, image_fields, image_to_numpy, stamp_ns


def _events(n: int = 400, t0: int = 5_000_300, t1: int = 5_009_700, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    return EventBatch.from_arrays(
        rng.integers(0, 64, n), rng.integers(0, 48, n), np.sort(rng.integers(t0, t1, n)), rng.integers(0, 2, n)
    )


def test_packet_bounds_cut_on_absolute_multiples_and_line_up_across_calls():
    t = _events().t
    bounds = packet_bounds(t, 1000)
    assert len(bounds) == len(np.unique(t // 1000))
    assert bounds[0][0] == 0 and bounds[-1][1] == t.size
    for (_, stop), (start, _) in itertools.pairwise(bounds):
        assert stop == start  # contiguous, nothing lost
    for start, stop in bounds:
        assert t[start] // 1000 == t[stop - 1] // 1000, "a packet stays within one absolute 1 ms slot"
    # A stream written in two calls split on a slot boundary gives the same packets as in one call.
    split = bounds[3][0]
    second = [(a + split, b + split) for a, b in packet_bounds(t[split:], 1000)]
    assert packet_bounds(t[:split], 1000) + second == bounds
    assert packet_bounds(t, None) == [(0, t.size)]
    assert packet_bounds(t[:0], 1000) == []
    with pytest.raises(ValueError, match="packet_us"):
        packet_bounds(t, 0)


@pytest.mark.parametrize("encoding", ["evt3", "mono"])
def test_encode_packet_decodes_back_through_event_stream(encoding):
    events = _events()
    payload, time_base = encode_packet(events, encoding)
    assert time_base == (int(events.t[0]) * 1000 if encoding == "mono" else 0)
    stream = EventStream()
    decoded = stream.decode(encoding, payload, time_base=time_base)
    # evt3 carries the sensor's own clock; auto picks header_offset for it and moves it onto the stamp.
    aligned, jumped = stream.align(decoded, int(events.t[0]), encoding)
    assert not jumped
    for name in "xytp":
        np.testing.assert_array_equal(getattr(aligned, name), getattr(events, name))
    with pytest.raises(ValueError, match="libcaer"):
        encode_packet(events, "libcaer")
    with pytest.raises(ValueError, match="big-endian"):
        stream.decode(encoding, payload, time_base=time_base, is_bigendian=True)


def test_event_stream_picks_the_clock_per_source_and_restarts_on_a_change():
    events = _events()
    offset = 1_700_000_000_000_000 - int(events.t[0])
    stamp = int(events.t[0]) + offset
    auto = EventStream("auto")
    shifted, _ = auto.align(events, stamp, "evt3")  # header_offset: first event lands on the stamp
    np.testing.assert_array_equal(shifted.t, events.t + offset)
    kept, jumped = auto.align(events, stamp, "event_array")  # a new source: a fresh as_is clock, no jump
    np.testing.assert_array_equal(kept.t, events.t)
    assert not jumped
    forced, _ = EventStream("as_is").align(events, stamp, "evt3")
    np.testing.assert_array_equal(forced.t, events.t)
    with pytest.raises(ValueError, match="event clock"):
        EventStream("sensor")  # type: ignore[arg-type]


def test_image_fields_round_trip_through_the_duck_typed_reader():
    rng = np.random.default_rng(1)
    strided = rng.integers(0, 65536, (5, 14, 3)).astype(np.uint16)[:, ::2]  # not contiguous: gets copied
    fields = image_fields(strided, "rgb16")
    assert (fields["is_bigendian"], fields["step"], fields["data"].dtype) == (0, 7 * 3 * 2, np.uint8)
    np.testing.assert_array_equal(image_to_numpy(SimpleNamespace(**fields)), strided)
    with pytest.raises(ValueError, match="rgb8 needs a uint8"):
        image_fields(np.zeros((2, 2, 3), np.uint16), "rgb8")
    assert stamp_ns(SimpleNamespace(sec=12, nanosec=345)) == 12_000_000_345
    assert list(MASK_ENCODINGS) == ["raw_mask", "colored_mask", "overlay"]
