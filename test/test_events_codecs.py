"""EVT3 / mono / EventArray codecs: round trips, packet splits, the evt3 package vs the numpy reference,
hand-made words for each EVT3 rule, and malformed input."""

from __future__ import annotations

import itertools
from array import array
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambaseg_core.events import (
    EventBatch,
    Evt3Decoder,
    UnsupportedEncodingError,
    decode_event_array,
    decode_mono,
    decode_packet,
    encode_evt3,
    encode_mono,
)

try:  # an independent decoder (Metavision semantics), used as an oracle where they agree
    import evt3 as evt3_package
except ImportError:
    evt3_package = None

WRAP = 1 << 24


def words(*values: int) -> bytes:
    return np.array(values, "<u2").tobytes()


def TH(v: int) -> int:  # EVT3 word names
    return 0x8000 | v


def TL(v: int) -> int:
    return 0x6000 | v


def AY(y: int) -> int:
    return y


def AX(x: int, p: int = 1) -> int:
    return 0x2000 | (p << 11) | x


def random_stream(rng: np.random.Generator, n: int, span_us: int, *, runs: bool = True) -> EventBatch:
    """Sorted events; with runs, some groups share (t, y, p) with increasing x (vector candidates)."""
    t = np.sort(rng.integers(0, span_us, n))
    x, y, p = rng.integers(0, 1280, n), rng.integers(0, 720, n), rng.integers(0, 2, n)
    if runs and n > 40:
        for start in rng.integers(0, n - 30, 5):
            size = int(rng.integers(2, 30))
            t[start : start + size] = t[start]
            y[start : start + size], p[start : start + size] = y[start], p[start]
            x[start : start + size] = np.sort(rng.choice(np.arange(100, 400), size, replace=False))
    return EventBatch.from_arrays(x, y, t, p)


def expected_times(batch: EventBatch) -> np.ndarray:
    return batch.t - (batch.t[0] // WRAP) * WRAP


def decode_in_pieces(decoder: Evt3Decoder, data: bytes, cuts: list[int]) -> EventBatch:
    edges = [0, *sorted(cuts), len(data)]
    return EventBatch.concatenate([decoder.decode(data[a:b]) for a, b in itertools.pairwise(edges)])


def assert_same(a: EventBatch, b: EventBatch) -> None:
    assert len(a) == len(b), (len(a), len(b))
    for name in "xytp":
        va, vb = getattr(a, name), getattr(b, name)
        assert va.dtype == vb.dtype, name
        mismatch = np.flatnonzero(va != vb)
        assert mismatch.size == 0, f"{name} differs first at {mismatch[:5]}: {va[mismatch[:5]]} vs {vb[mismatch[:5]]}"


BACKENDS = ["numpy", "numba"]


# -- EVT3 round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vectors", [False, True])
def test_evt3_round_trip_with_wraps_and_odd_splits(backend: str, vectors: bool) -> None:
    rng = np.random.default_rng(0)
    batch = random_stream(rng, 5000, 70_000_000)  # ~4 rollovers of the 24-bit clock, gaps up to minutes apart
    data = encode_evt3(batch, vectors=vectors)
    cuts = [int(c) for c in rng.integers(0, len(data), 60)] + [1, 3, len(data) - 1]  # odd offsets included
    decoder = Evt3Decoder(backend=backend)
    out = decode_in_pieces(decoder, data, cuts)
    assert_same(out, EventBatch(batch.x, batch.y, expected_times(batch), batch.p))
    assert decoder.stats.time_wraps == (batch.t[-1] - batch.t[0] // WRAP * WRAP) // WRAP
    assert decoder.stats.events == len(batch) and decoder.stats.unknown_codes == 0


def test_evt3_encoder_emits_vectors_and_vect8() -> None:
    batch = EventBatch.from_arrays(np.arange(10, 30), np.full(20, 7), np.full(20, 5), np.ones(20))
    codes = np.frombuffer(encode_evt3(batch, vectors=True), "<u2") >> 12
    print("codes", codes)
    assert list(codes) == [0x8, 0x6, 0x0, 0x3, 0x4, 0x5]  # 20 events = VECT_12 + VECT_8
    assert_same(Evt3Decoder(backend="numpy").decode(encode_evt3(batch, vectors=True)), batch)


def test_evt3_long_gap_gets_intermediate_time_high() -> None:
    batch = EventBatch.from_arrays([1, 2], [1, 2], [0, 3 * WRAP + 17], [1, 0])
    out = Evt3Decoder(backend="numpy").decode(encode_evt3(batch))
    assert_same(out, batch)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    span=st.sampled_from([1, 5000, 3 * WRAP]),
    vectors=st.booleans(),
    n_cuts=st.integers(0, 12),
)
def test_evt3_round_trip_property(seed: int, n: int, span: int, vectors: bool, n_cuts: int) -> None:
    rng = np.random.default_rng(seed)
    batch = random_stream(rng, n, span)
    data = encode_evt3(batch, vectors=vectors)
    cuts = [int(c) for c in rng.integers(0, len(data) + 1, n_cuts)]
    expected = EventBatch(batch.x, batch.y, expected_times(batch), batch.p)
    for backend in BACKENDS:
        assert_same(decode_in_pieces(Evt3Decoder(backend=backend), data, cuts), expected)


@pytest.mark.skipif(evt3_package is None, reason="the PyPI evt3 package (test oracle) is not installed")
@pytest.mark.parametrize("backend", BACKENDS)
def test_decoders_match_the_evt3_package_on_same_bytes(backend: str) -> None:
    rng = np.random.default_rng(3)
    batch = random_stream(rng, 20000, 2_000_000)  # dense stream: consecutive TIME_HIGHs, no wrap ambiguity
    data = encode_evt3(batch, vectors=True)
    package = evt3_package.Decoder(sensor_width=2048, sensor_height=2048).feed(data)
    ours = Evt3Decoder(backend=backend).decode(data)
    assert_same(ours, EventBatch(package.x, package.y, package.t.astype(np.int64), package.p))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_words=st.integers(0, 3000), n_cuts=st.integers(0, 8))
def test_evt3_backends_agree_on_arbitrary_words(seed: int, n_words: int, n_cuts: int) -> None:
    """Any word sequence (unknown codes, jittering TIME_HIGH, vector x past the sensor): identical events,
    stats and carried state from the numba kernel and the numpy reference."""
    rng = np.random.default_rng(seed)
    weights = np.array([4, 0.2, 3, 2, 3, 1, 2, 0.2, 1.5, 0.1, 0.2, 0.1, 0.1, 0.1, 0.2, 0.2])  # per code 0..15
    codes = rng.choice(np.arange(16), n_words, p=weights / weights.sum())
    payload = rng.integers(0, 1 << 12, n_words)
    high = np.flatnonzero(codes == 0x8)
    payload[high] = np.clip(np.cumsum(rng.integers(-12, 40, high.size)) % 4096, 0, 4095)  # drifts, jitters, wraps
    data = ((codes << 12) | payload).astype("<u2").tobytes()
    cuts = [int(c) for c in rng.integers(0, len(data) + 1, n_cuts)]
    decoders = [Evt3Decoder(width=1000, height=600, backend=backend) for backend in BACKENDS]
    outputs = [decode_in_pieces(decoder, data, cuts) for decoder in decoders]
    assert_same(outputs[0], outputs[1])
    assert decoders[0].stats == decoders[1].stats and decoders[0]._state == decoders[1]._state


# -- EVT3 rules on hand-made words ------------------------------------------------------------------


def test_evt3_waits_for_time_high_then_time_low() -> None:
    decoder = Evt3Decoder(backend="numpy")
    # Events and ADDR_Y before the clock is valid are ignored; TIME_LOW before TIME_HIGH does not count.
    out = decoder.decode(words(AY(9), AX(1), TL(3), AX(2), TH(1), AX(3), TL(5), AY(4), AX(6)))
    assert_same(out, EventBatch.from_arrays([6], [4], [(1 << 12) | 5], [1]))
    assert decoder.stats.skipped_words == 7


@pytest.mark.parametrize("backend", BACKENDS)
def test_evt3_rollover_tolerance(backend: str) -> None:
    decoder = Evt3Decoder(backend=backend)
    # 100 -> 95: jitter (no rollover, time steps back); 95 -> 50: drop of 45 > 10 -> rollover.
    stream = words(TH(100), TL(0), AY(1), AX(1), TH(95), TL(1), AX(2), TH(50), TL(2), AX(3))
    out = decoder.decode(stream)
    assert out.t.tolist() == [100 << 12, (95 << 12) | 1, WRAP + ((50 << 12) | 2)]
    assert decoder.stats.time_wraps == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_evt3_vectors_time_high_keeps_time_low_and_unknown_codes(backend: str) -> None:
    decoder = Evt3Decoder(backend=backend)
    stream = words(
        TH(2), TL(7), AY(3),
        0x3000 | (1 << 11) | 20,  # VECT_BASE_X x=20, p=1
        0x4000 | 0b100000000101,  # VECT_12 → 20, 22, 31
        0x5000 | 0b10000001,  # VECT_8 at base 32 → 32, 39
        0x9ABC, 0xB000, 0xE123, 0x7000, 0xF000, 0xA001,  # unknown 9, B; OTHERS, CONT_4, CONT_12, EXT_TRIGGER
        TH(3), AX(5, 0),  # TIME_HIGH without a new TIME_LOW: the old low bits stay (ROS driver semantics)
    )  # fmt: skip
    out = decoder.decode(stream)
    print(out)
    assert out.x.tolist() == [20, 22, 31, 32, 39, 5]
    assert out.p.tolist() == [1, 1, 1, 1, 1, 0]
    assert out.t.tolist() == [(2 << 12) | 7] * 5 + [(3 << 12) | 7]
    assert decoder.stats.unknown_codes == 2 and decoder.stats.skipped_words == 2 + 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_evt3_time_high_at_packet_end_keeps_time_low(backend: str) -> None:
    decoder = Evt3Decoder(backend=backend)
    first = decoder.decode(words(TH(0), TL(1), AY(2), AX(3), TH(5)))
    second = decoder.decode(words(AX(4), TL(9), AX(5)))
    assert first.t.tolist() == [1] and second.t.tolist() == [(5 << 12) | 1, (5 << 12) | 9]


@pytest.mark.parametrize("backend", BACKENDS)
def test_evt3_out_of_sensor_events_dropped_and_counted(backend: str) -> None:
    decoder = Evt3Decoder(width=100, height=50, backend=backend)
    out = decoder.decode(words(TH(0), TL(1), AY(10), AX(99), AX(100), AY(50), AX(3)))
    assert out.x.tolist() == [99] and decoder.stats.out_of_sensor == 2


def test_evt3_state_survives_packets_and_reset_clears_it() -> None:
    decoder = Evt3Decoder(backend="numpy")
    data = words(TH(1), TL(2), AY(3), AX(4))
    assert len(decoder.decode(data[:5])) == 0  # odd split inside ADDR_Y
    assert_same(decoder.decode(array("B", data[5:])), EventBatch.from_arrays([4], [3], [(1 << 12) | 2], [1]))
    decoder.reset()
    assert len(decoder.decode(words(AY(1), AX(1)))) == 0 and decoder.stats.skipped_words == 2


# -- mono and EventArray ----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300))
def test_mono_round_trip(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    time_base = int(rng.integers(0, 2**40)) * 1000
    t = time_base // 1000 + np.sort(rng.integers(0, 4_000_000, n))
    batch = EventBatch.from_arrays(rng.integers(0, 65536, n), rng.integers(0, 32768, n), t, rng.integers(0, 2, n))
    assert_same(decode_mono(encode_mono(batch, time_base), time_base), batch)


def test_mono_layout_and_sub_microsecond_floor() -> None:
    word = (1 << 63) | (7 << 48) | (300 << 32) | 2_999
    payload = array("B", np.array([word], "<u8").tobytes())  # rclpy delivers uint8[] as array('B')
    out = decode_mono(payload, time_base=10_000)
    assert (out.x[0], out.y[0], out.t[0], out.p[0]) == (300, 7, 12, 1)  # (10_000 + 2_999) ns → 12 µs


def test_event_array_duck_typed() -> None:
    def event(x: int, y: int, sec: int, nanosec: int, polarity: bool) -> SimpleNamespace:
        return SimpleNamespace(x=x, y=y, ts=SimpleNamespace(sec=sec, nanosec=nanosec), polarity=polarity)

    msg = SimpleNamespace(events=[event(1, 2, 3, 4_000, True), event(5, 6, 3, 999_999_999, False)])
    out = decode_event_array(msg)
    assert_same(out, EventBatch.from_arrays([1, 5], [2, 6], [3_000_004, 3_999_999], [1, 0]))
    assert len(decode_event_array([])) == 0


# -- dispatch and malformed input -------------------------------------------------------------------


def test_decode_packet_dispatch_and_unknown_encoding() -> None:
    batch = EventBatch.from_arrays([1], [2], [3], [1])
    assert_same(decode_packet("mono", encode_mono(batch, 0)), batch)
    decoder = Evt3Decoder()
    assert_same(decode_packet("evt3", encode_evt3(batch), decoder=decoder), batch)
    with pytest.raises(UnsupportedEncodingError, match=r"'libcaer_cmp'.*evt3, mono"):
        decode_packet("libcaer_cmp", b"")
    assert issubclass(UnsupportedEncodingError, ValueError)


def test_malformed_input_errors() -> None:
    with pytest.raises(ValueError, match="8-byte"):
        decode_mono(b"\x00" * 12, 0)
    with pytest.raises(ValueError, match="time_base"):
        decode_mono(b"", -1)
    batch = EventBatch.from_arrays([1], [2], [10], [1])
    with pytest.raises(ValueError, match="dt"):
        encode_mono(batch, 20_000)  # event before time_base
    with pytest.raises(ValueError, match="non-decreasing"):
        encode_evt3(EventBatch.from_arrays([1, 2], [1, 1], [5, 4], [0, 1]))
    with pytest.raises(ValueError, match="2048"):
        encode_evt3(EventBatch.from_arrays([4000], [1], [5], [0]))
    with pytest.raises(TypeError, match="bytes-like"):
        Evt3Decoder().decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        decode_mono(3.5, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nanosec"):
        decode_event_array([SimpleNamespace(x=1, y=1, ts=SimpleNamespace(sec=0, nanosec=-1), polarity=True)])
    # A truncated packet (cut mid-word, stream ends) yields the complete events and keeps the odd byte.
    decoder = Evt3Decoder()
    out = decoder.decode(words(TH(0), TL(1), AY(2), AX(3))[:-1])
    assert len(out) == 0 and decoder.stats.words == 3
