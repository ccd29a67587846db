"""event_camera_msgs/EventPacket payloads: decode by the `encoding` field, encode events into one, and cut a
stream into ~1 ms packets."""

from __future__ import annotations

import itertools

import numpy as np

from mambaseg_core.events.batch import EventBatch
from mambaseg_core.events.evt3 import Evt3Decoder, encode_evt3
from mambaseg_core.events.mono import decode_mono, encode_mono

SUPPORTED_ENCODINGS = ("evt3", "mono")


class UnsupportedEncodingError(ValueError):
    """An EventPacket encoding this project cannot decode (e.g. libcaer_cmp)."""


def decode_packet(
    encoding: str,
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    time_base: int = 0,
    decoder: Evt3Decoder | None = None,
) -> EventBatch:
    """Decode one packet. evt3 is stateful across packets: pass the stream's `Evt3Decoder` (a fresh one is
    used otherwise, which only works for self-contained packets). `time_base` (ns) is used by mono only."""
    if encoding == "evt3":
        return (decoder if decoder is not None else Evt3Decoder()).decode(data)
    if encoding == "mono":
        return decode_mono(data, time_base)
    raise UnsupportedEncodingError(
        f"unsupported EventPacket encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
    )


def encode_packet(events: EventBatch, encoding: str) -> tuple[bytes, int]:
    """(EventPacket `events` bytes, `time_base` ns) of a non-empty time-sorted packet. `mono` times are relative
    to the first event's time, carried as `time_base`; `evt3` carries sensor time itself (time_base 0)."""
    if len(events) == 0:
        raise ValueError("an EventPacket needs at least one event")
    if encoding == "evt3":
        return encode_evt3(events), 0
    if encoding == "mono":
        time_base = int(events.t[0]) * 1000
        return encode_mono(events, time_base), time_base
    raise ValueError(f"cannot encode event packets as {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def packet_bounds(t: np.ndarray, packet_us: int | None) -> list[tuple[int, int]]:
    """[start, stop) index ranges of time-sorted `t` (N,) µs cut at every multiple of `packet_us` (absolute,
    so packets of consecutive calls line up); one range for all of `t` when `packet_us` is None."""
    if t.size == 0:
        return []
    if packet_us is None:
        return [(0, int(t.size))]
    if packet_us < 1:
        raise ValueError(f"packet_us must be >= 1, got {packet_us}")
    slot = t // packet_us
    cuts = [0, *(np.flatnonzero(np.diff(slot)) + 1).tolist(), int(t.size)]
    return list(itertools.pairwise(cuts))
