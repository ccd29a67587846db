"""The `mono` EventPacket encoding: one little-endian uint64 per event.

Bit 63 polarity (1 = ON), bits 48..62 y (15 bit), bits 32..47 x (16 bit), bits 0..31 dt.
Event time in **nanoseconds** = time_base + dt (time_base is the packet's uint64 `time_base` field).
`EventBatch.t` is in µs, so decoding floors ns to µs: exact for µs-aligned streams (dt and time_base
multiples of 1000), sub-µs parts are dropped. Encoding writes dt = t_us * 1000 - time_base.
"""

from __future__ import annotations

import numpy as np

from mambaseg_core.events.batch import EventBatch
from mambaseg_core.events.buffers import as_byte_array

MAX_DT_NS = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1


def decode_mono(data: bytes | bytearray | memoryview | np.ndarray, time_base: int) -> EventBatch:
    """Decode a mono packet (N*8 bytes) whose time_base is in ns → EventBatch with t in µs (floored)."""
    raw = as_byte_array(data)
    if raw.size % 8:
        raise ValueError(f"mono packet must hold whole 8-byte events, got {raw.size} bytes")
    time_base = int(time_base)
    if not 0 <= time_base <= _UINT64_MAX - MAX_DT_NS:
        raise ValueError(f"mono time_base must be in 0..2**64-2**32 ns, got {time_base}")
    words = raw.view("<u8")
    t_ns = np.uint64(time_base) + (words & np.uint64(0xFFFFFFFF))
    return EventBatch(
        ((words >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16),
        ((words >> np.uint64(48)) & np.uint64(0x7FFF)).astype(np.uint16),
        (t_ns // np.uint64(1000)).astype(np.int64),
        (words >> np.uint64(63)).astype(np.uint8),
    )


def encode_mono(batch: EventBatch, time_base: int) -> bytes:
    """Encode a batch as mono words relative to `time_base` (ns); every t*1000 - time_base must fit 32 bits."""
    time_base = int(time_base)
    if time_base < 0:
        raise ValueError(f"mono time_base must be >= 0 ns, got {time_base}")
    if len(batch) == 0:
        return b""
    dt = batch.t * 1000 - time_base
    if dt.min() < 0 or dt.max() > MAX_DT_NS:
        raise ValueError(
            f"mono dt must be in 0..2**32-1 ns: events span [{batch.t.min()}, {batch.t.max()}] µs "
            f"against time_base {time_base} ns (split the packet or move time_base)"
        )
    if batch.y.max() >= 1 << 15:
        raise ValueError(f"mono y is 15-bit, got y={batch.y.max()}")
    if batch.p.max() > 1:
        raise ValueError(f"mono polarity must be 0 or 1, got {batch.p.max()}")
    words = (
        (batch.p.astype(np.uint64) << np.uint64(63))
        | (batch.y.astype(np.uint64) << np.uint64(48))
        | (batch.x.astype(np.uint64) << np.uint64(32))
        | dt.astype(np.uint64)
    )
    return words.astype("<u8").tobytes()
