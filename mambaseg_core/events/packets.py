"""Dispatch an event_camera_msgs/EventPacket payload to the decoder for its `encoding` field."""

from __future__ import annotations

import numpy as np

from mambaseg_core.events.batch import EventBatch
from mambaseg_core.events.evt3 import Evt3Decoder
from mambaseg_core.events.mono import decode_mono

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
