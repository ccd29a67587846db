"""Prophesee EVT 3.0 codec: a stateful streaming decoder and an encoder that round-trips with it.

EVT3 is a stream of little-endian 16-bit words; the code is bits 15..12 (Prophesee's EVT 3.0 spec).
Semantics follow the ROS driver's decoder (ros-event-camera/event_camera_codecs), not the Metavision SDK:
- decoding starts once a TIME_HIGH and then a TIME_LOW were seen; words before that only update the clock;
- time = TIME_HIGH bits | last TIME_LOW (a TIME_HIGH does not clear TIME_LOW);
- the 24-bit µs time wraps every 2**24 µs; a rollover is counted when TIME_HIGH decreases by more than
  `ROLLOVER_TOLERANCE` (smaller decreases are sensor jitter: time steps back without a rollover);
- OTHERS / CONTINUED_4 / CONTINUED_12 / EXT_TRIGGER are skipped; unknown codes are skipped and counted
  (the C++ decoder throws on them, which newer firmware triggers);
- with a sensor size given, events outside it are dropped and counted.

Output times are unwrapped sensor µs (int64) starting from the first TIME_HIGH's 24-bit value.

Two decoders produce identical batches: a numba kernel (the default: a counting pass, then one decoding pass;
vector words visit only their set bits) and a vectorised numpy one (the slow, obvious reference the tests
compare it with). The PyPI `evt3` package follows Metavision semantics (a TIME_HIGH clears TIME_LOW, another
rollover rule), so it would need a per-packet check and fallback, and is no faster than the kernel on one core
(benchmarks/events.py); it serves only as an independent oracle in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numba
import numpy as np

from mambaseg_core.events.batch import EventBatch
from mambaseg_core.events.buffers import as_byte_array

# Word codes (bits 15..12).
ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
TIME_LOW, CONTINUED_4, TIME_HIGH, EXT_TRIGGER = 0x6, 0x7, 0x8, 0xA
OTHERS, CONTINUED_12 = 0xE, 0xF

ROLLOVER_TOLERANCE = 10  # TIME_HIGH units (4096 µs); same constant as event_camera_codecs
_MAX_COORD = (1 << 11) - 1

_POPCOUNT12 = np.array([bin(i).count("1") for i in range(1 << 12)], np.int64)
_BIT_INDEX = np.arange(12, dtype=np.uint16)
_LOWEST_BIT = np.array([(i & -i).bit_length() - 1 for i in range(1 << 12)], np.int64)  # of i > 0
_NO_LIMIT = 1 << 16  # width/height bound that keeps every uint16 coordinate
_SKIPPED_CODES = (CONTINUED_4, EXT_TRIGGER, OTHERS, CONTINUED_12)


@dataclass
class Evt3Stats:
    """Running counters of one decoder (since construction or the last `reset`)."""

    events: int = 0  # CD events returned
    words: int = 0  # 16-bit words consumed
    skipped_words: int = 0  # words before the clock was valid, plus OTHERS/CONTINUED/EXT_TRIGGER words
    unknown_codes: int = 0  # words with a code EVT3 does not define (skipped)
    out_of_sensor: int = 0  # events dropped because x >= width or y >= height
    time_wraps: int = 0  # 24-bit rollovers detected


@dataclass
class _ClockState:
    """Decoder state carried from one packet to the next (all plain ints)."""

    time_valid: bool = False  # TIME_HIGH then TIME_LOW seen: events are decoded from here on
    seen_high: bool = False  # a TIME_HIGH was seen while waiting for the clock
    wraps: int = 0
    high_raw: int = 0  # last TIME_HIGH payload (12 bits)
    low: int = 0  # last TIME_LOW payload
    y: int = 0
    base_x: int = 0  # vector base x (unbounded: VECT_12/VECT_8 advance it past 2047 on bad streams)
    polarity: int = 0

    @property
    def high_full(self) -> int:
        return (self.wraps << 24) | (self.high_raw << 12)


@numba.njit(cache=True, nogil=True)
def _count_events(words):  # pragma: no cover - jit
    """CD events encoded in `words` (before out-of-sensor drops): one per ADDR_X, one per VECT_12/VECT_8 mask bit."""
    count = 0
    for i in range(words.shape[0]):
        code = words[i] >> 12
        if code == ADDR_X:
            count += 1
        elif code == VECT_12:
            count += _POPCOUNT12[words[i] & 0xFFF]
        elif code == VECT_8:
            count += _POPCOUNT12[words[i] & 0xFF]
    return count


@numba.njit(cache=True, nogil=True)
def _decode_words_numba(words, wraps, high_raw, low, y, base_x, polarity, width, height):  # pragma: no cover - jit
    """Decode words after the clock became valid, given the state at the packet start (a counting pass, then
    one decoding pass).

    Events outside width x height are dropped and counted. Vector words visit only their set mask bits
    (lowest-bit table); each event is written, and kept by advancing the output index only when inside.
    Returns (x, y, t, p, skipped, unknown, out_of_sensor, wraps, high_raw, low, y, base_x, polarity).
    """
    capacity = _count_events(words)
    xs = np.empty(capacity, np.uint16)
    ys = np.empty(capacity, np.uint16)
    ts = np.empty(capacity, np.int64)
    ps = np.empty(capacity, np.uint8)
    n = 0
    skipped = 0
    unknown = 0
    candidates = 0
    time = (wraps << 24) | (high_raw << 12) | low
    y_inside = y < height
    for i in range(words.shape[0]):
        code = words[i] >> 12
        value = np.int64(words[i] & 0xFFF)
        if code == ADDR_X:
            x = value & _MAX_COORD
            xs[n], ys[n], ts[n], ps[n] = x, y, time, value >> 11
            candidates += 1
            n += y_inside & (x < width)
        elif code in (VECT_12, VECT_8):
            mask = value if code == VECT_12 else value & 0xFF
            if y_inside:
                while mask:
                    k = _LOWEST_BIT[mask]
                    x = (base_x + k) & 0xFFFF
                    xs[n], ys[n], ts[n], ps[n] = x, y, time, polarity
                    candidates += 1
                    n += x < width
                    mask &= mask - 1
            else:
                candidates += _POPCOUNT12[mask]
            base_x += 12 if code == VECT_12 else 8
        elif code == ADDR_Y:
            y = value & _MAX_COORD
            y_inside = y < height
        elif code == VECT_BASE_X:
            base_x = value & _MAX_COORD
            polarity = value >> 11
        elif code == TIME_LOW:
            low = value
            time = (wraps << 24) | (high_raw << 12) | low
        elif code == TIME_HIGH:
            if high_raw - value > ROLLOVER_TOLERANCE:
                wraps += 1
            high_raw = value
            time = (wraps << 24) | (high_raw << 12) | low
        elif code in _SKIPPED_CODES:
            skipped += 1
        else:
            unknown += 1
    return (xs[:n], ys[:n], ts[:n], ps[:n], skipped, unknown, candidates - n, wraps, high_raw, low, y, base_x, polarity)


def _forward_fill(positions: np.ndarray, values: np.ndarray, initial: int, queries: np.ndarray) -> np.ndarray:
    """Value of the last `positions` entry at or before each query position (`initial` if none).

    positions: (K,) increasing word indices; values: (K,); queries: (Q,) increasing → (Q,) int64.
    """
    table = np.concatenate([np.array([initial], np.int64), values.astype(np.int64)])
    return table[np.searchsorted(positions, queries, side="right")]


def _unwrap_time_high(high_values: np.ndarray, wraps: int, high_raw: int) -> np.ndarray:
    """Unwrapped times (µs, int64) of consecutive TIME_HIGH payloads, given the state before the first."""
    values = high_values.astype(np.int64)
    previous = np.concatenate([[high_raw], values[:-1]])
    rollover = (values < previous) & (previous - values > ROLLOVER_TOLERANCE)
    return ((wraps + np.cumsum(rollover)) << 24) | (values << 12)


class Evt3Decoder:
    """Stateful EVT3 decoder: feed packets in stream order, get an `EventBatch` per packet.

    width/height: sensor size; when given, events with x >= width or y >= height are dropped and counted.
    backend: "numba" (the fast kernel) or "numpy" (the vectorised reference); both give identical batches.
    A packet may end in the middle of a 16-bit word: the odd byte is carried into the next packet.
    """

    def __init__(self, width: int | None = None, height: int | None = None, *, backend: str = "numba") -> None:
        if backend not in ("numba", "numpy"):
            raise ValueError(f"Evt3Decoder backend must be 'numba' or 'numpy', got {backend!r}")
        for name, value in (("width", width), ("height", height)):
            if value is not None and not 0 < value <= 1 << 16:
                raise ValueError(f"Evt3Decoder {name} must be in 1..65536, got {value}")
        self.width, self.height = width, height
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        """Forget all stream state (clock, rollovers, carried byte) and the stats."""
        self.stats = Evt3Stats()
        self._state = _ClockState()
        self._carry = np.empty(0, np.uint8)

    def decode(self, data: bytes | bytearray | memoryview | np.ndarray) -> EventBatch:
        """Decode one packet (any byte count) → the CD events it completes, in stream order."""
        raw = as_byte_array(data)
        if self._carry.size:
            raw = np.concatenate([self._carry, raw])
        n_words = raw.size // 2
        self._carry = raw[2 * n_words :].copy()
        words = raw[: 2 * n_words].view("<u2")
        self.stats.words += n_words
        if not self._state.time_valid:
            start = self._find_valid_time(words)
            self.stats.skipped_words += start
            words = words[start:]
        if words.size == 0:
            return EventBatch.empty()

        s = self._state
        if self.backend == "numba":
            x, y, t, p, skipped, unknown, dropped, *end = _decode_words_numba(
                words, s.wraps, s.high_raw, s.low, s.y, s.base_x, s.polarity,
                self.width or _NO_LIMIT, self.height or _NO_LIMIT,
            )  # fmt: skip
            batch = EventBatch(x, y, t, p)
            s.wraps, s.high_raw, s.low, s.y, s.base_x, s.polarity = (int(v) for v in end)
        else:
            batch, self._state, skipped, unknown = _decode_words_numpy(words, s)
            batch, dropped = self._drop_out_of_sensor(batch)
        self.stats.skipped_words += int(skipped)
        self.stats.unknown_codes += int(unknown)
        self.stats.out_of_sensor += int(dropped)
        self.stats.time_wraps = self._state.wraps
        self.stats.events += len(batch)
        return batch

    def _find_valid_time(self, words: np.ndarray) -> int:
        """Consume the clock-only prefix (up to the first TIME_LOW after a TIME_HIGH); return its length."""
        state = self._state
        codes = words >> 12
        for i in np.flatnonzero((codes == TIME_HIGH) | (codes == TIME_LOW)):
            payload = int(words[i]) & 0xFFF
            if codes[i] == TIME_HIGH:
                state.wraps = int(_unwrap_time_high(np.array([payload]), state.wraps, state.high_raw)[0] >> 24)
                state.high_raw = payload
                state.seen_high = True
            else:
                state.low = payload
                if state.seen_high:
                    state.time_valid = True
                    return int(i) + 1
        return len(words)

    def _drop_out_of_sensor(self, batch: EventBatch) -> tuple[EventBatch, int]:
        """(the events inside the sensor, how many were dropped)."""
        inside = (batch.x < (self.width or _NO_LIMIT)) & (batch.y < (self.height or _NO_LIMIT))
        dropped = len(batch) - int(np.count_nonzero(inside))
        return (batch[inside] if dropped else batch), dropped


def _decode_words_numpy(words: np.ndarray, state: _ClockState) -> tuple[EventBatch, _ClockState, int, int]:
    """Reference decoder for words after the clock became valid, given the state at the packet start.

    Returns (events, state at the packet end, skipped words, words with unknown codes).
    """
    codes = words >> 12
    payload = (words & 0xFFF).astype(np.int64)
    pos = {c: np.flatnonzero(codes == c) for c in (ADDR_Y, VECT_BASE_X, TIME_LOW, TIME_HIGH)}
    event_pos = np.flatnonzero((codes == ADDR_X) | (codes == VECT_12) | (codes == VECT_8))
    event_code = codes[event_pos]

    high_times = _unwrap_time_high(payload[pos[TIME_HIGH]], state.wraps, state.high_raw)
    high = _forward_fill(pos[TIME_HIGH], high_times, state.high_full, event_pos)
    low = _forward_fill(pos[TIME_LOW], payload[pos[TIME_LOW]], state.low, event_pos)
    y = _forward_fill(pos[ADDR_Y], payload[pos[ADDR_Y]] & _MAX_COORD, state.y, event_pos)

    # Vector base x: the last VECT_BASE_X value plus 12 / 8 per vector word since it.
    vector_pos = event_pos[event_code != ADDR_X]
    increments = np.where(codes[vector_pos] == VECT_12, 12, 8)
    done_before = np.concatenate([[0], np.cumsum(increments)])  # increments of vector words [0, j)
    base_pos = pos[VECT_BASE_X]
    vectors_before_base = np.searchsorted(vector_pos, base_pos)
    last_base = np.searchsorted(base_pos, vector_pos, side="right") - 1
    start_x = np.concatenate([[state.base_x], payload[base_pos] & _MAX_COORD])[last_base + 1]
    start_done = np.concatenate([[0], done_before[vectors_before_base]])[last_base + 1]
    vector_base = start_x + done_before[:-1] - start_done
    vector_polarity = np.concatenate([[state.polarity], payload[base_pos] >> 11])[last_base + 1]

    # Per event word: base x, polarity and validity mask (ADDR_X is a one-bit vector at its own x).
    event_payload = payload[event_pos]
    base = event_payload & _MAX_COORD
    polarity = event_payload >> 11
    mask = np.ones(event_pos.size, np.int64)
    is_vector = event_code != ADDR_X
    base[is_vector] = vector_base
    polarity[is_vector] = vector_polarity
    vector_payload = event_payload[is_vector]
    mask[is_vector] = np.where(event_code[is_vector] == VECT_12, vector_payload, vector_payload & 0xFF)

    row = np.repeat(np.arange(event_pos.size), _POPCOUNT12[mask])
    offset = np.zeros(row.size, np.int64)
    if is_vector.any():
        bits = ((mask[is_vector, None] >> _BIT_INDEX) & 1).astype(bool)  # (V, 12), row-major = stream order
        offset[is_vector[row]] = np.nonzero(bits)[1]
    x = (base[row] + offset) & 0xFFFF
    t = high[row] | low[row]
    batch = EventBatch(x.astype(np.uint16), y[row].astype(np.uint16), t, polarity[row].astype(np.uint8))

    def last(code: int, default: int) -> int:
        return int(payload[pos[code][-1]]) if pos[code].size else default

    if base_pos.size:  # vector base x after the packet: the last VECT_BASE_X plus the vector words since it
        base_x = int(payload[base_pos[-1]] & _MAX_COORD) + int(done_before[-1] - done_before[vectors_before_base[-1]])
    else:
        base_x = state.base_x + int(done_before[-1])
    end = replace(
        state,
        wraps=int(high_times[-1] >> 24) if high_times.size else state.wraps,
        high_raw=last(TIME_HIGH, state.high_raw),
        low=last(TIME_LOW, state.low),
        y=last(ADDR_Y, state.y) & _MAX_COORD,
        base_x=base_x,
        polarity=int(payload[base_pos[-1]] >> 11) if base_pos.size else state.polarity,
    )
    skipped = int(np.isin(codes, _SKIPPED_CODES).sum())
    known = (ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8, TIME_LOW, TIME_HIGH, *_SKIPPED_CODES)
    return batch, end, skipped, int(codes.size - np.isin(codes, known).sum())


def _word(code: int, payload: np.ndarray | int) -> np.ndarray:
    return (np.int64(code) << 12) | (np.asarray(payload, np.int64) & 0xFFF)


def encode_evt3(batch: EventBatch, *, vectors: bool = False) -> bytes:
    """Encode a time-sorted batch as an EVT3 byte stream that `Evt3Decoder` decodes back exactly.

    Emits TIME_HIGH/TIME_LOW/ADDR_Y words only when they change, then ADDR_X per event; with `vectors=True`,
    runs of >= 2 events with equal (t, y, p) and increasing x (gaps <= 12) become VECT_BASE_X + VECT_12 words
    (the last one VECT_8 when it fits). Gaps of more than 2048 TIME_HIGH periods (8.4 s) get intermediate
    TIME_HIGH words so the decoder can unwrap them, as a sensor's periodic TIME_HIGH would.
    EVT3 carries time modulo 2**24 µs: decoding yields t - (t[0] // 2**24) * 2**24.
    Requires non-decreasing t >= 0 and x, y < 2048 (11-bit fields).
    """
    n = len(batch)
    if n == 0:
        return b""
    t, x, y, p = batch.t, batch.x.astype(np.int64), batch.y.astype(np.int64), batch.p.astype(np.int64)
    if t[0] < 0 or np.any(np.diff(t) < 0):
        raise ValueError("encode_evt3 needs non-negative, non-decreasing times")
    if x.max() > _MAX_COORD or y.max() > _MAX_COORD:
        raise ValueError(f"encode_evt3: x and y must be < 2048 (11-bit), got max x={x.max()}, y={y.max()}")
    if p.max() > 1:
        raise ValueError(f"encode_evt3: polarity must be 0 or 1, got {p.max()}")

    # Units: one ADDR_X event, or one vector group (events sharing t, y, p with increasing, close x).
    starts_unit = np.ones(n, bool)
    if vectors:
        same = (t[1:] == t[:-1]) & (y[1:] == y[:-1]) & (p[1:] == p[:-1])
        step = x[1:] - x[:-1]
        starts_unit[1:] = ~(same & (step > 0) & (step <= 12))
    unit_first = np.flatnonzero(starts_unit)
    unit_of_event = np.cumsum(starts_unit) - 1
    unit_size = np.diff(np.append(unit_first, n))
    is_vector = unit_size > 1
    ut, uy, up, base = t[unit_first], y[unit_first], p[unit_first], x[unit_first]
    unit_last_x = x[np.append(unit_first[1:], n) - 1]
    n_masks = np.where(is_vector, (unit_last_x - base) // 12 + 1, 0)

    high = ut >> 12
    prev_high = np.concatenate([[high[0] - 1], high[:-1]])
    n_high = -((prev_high - high) // 2048)  # ceil(step / 2048): intermediate TIME_HIGHs for long gaps
    has_low = (n_high > 0) | np.concatenate([[True], ut[1:] != ut[:-1]])
    has_y = np.concatenate([[True], uy[1:] != uy[:-1]])
    n_payload = np.where(is_vector, 1 + n_masks, 1)
    n_words = n_high + has_low + has_y + n_payload
    offset = np.concatenate([[0], np.cumsum(n_words)[:-1]])
    out = np.zeros(int(n_words.sum()), np.int64)

    rep = np.repeat(np.arange(len(ut)), n_high)
    k = np.arange(rep.size) - np.repeat(np.cumsum(n_high) - n_high, n_high) + 1
    out[offset[rep] + k - 1] = _word(TIME_HIGH, np.minimum(prev_high[rep] + 2048 * k, high[rep]))
    low_at = offset + n_high
    out[low_at[has_low]] = _word(TIME_LOW, ut[has_low])
    y_at = low_at + has_low
    out[y_at[has_y]] = _word(ADDR_Y, uy[has_y])
    payload_at = y_at + has_y
    single = ~is_vector
    out[payload_at[single]] = _word(ADDR_X, (up[single] << 11) | base[single])
    if is_vector.any():
        out[payload_at[is_vector]] = _word(VECT_BASE_X, (up[is_vector] << 11) | base[is_vector])
        mask_offset = np.concatenate([[0], np.cumsum(n_masks)[:-1]])
        masks = np.zeros(int(n_masks.sum()), np.int64)
        in_vector = is_vector[unit_of_event]
        u = unit_of_event[in_vector]
        rel = x[in_vector] - base[u]
        np.bitwise_or.at(masks, mask_offset[u] + rel // 12, 1 << (rel % 12))
        mask_unit = np.repeat(np.arange(len(ut)), n_masks)
        j = np.arange(masks.size) - mask_offset[mask_unit]
        last = j == n_masks[mask_unit] - 1
        codes = np.where(last & (masks < 256), VECT_8, VECT_12)
        out[payload_at[mask_unit] + 1 + j] = (codes << 12) | masks
    return out.astype("<u2").tobytes()
