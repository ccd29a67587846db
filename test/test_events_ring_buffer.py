"""EventRingBuffer: queries vs brute force, capacity/age drops, time-backwards policy, one writer + one reader."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mambaseg_core.events import EventBatch, EventRingBuffer, RingWindow, ring_buffer


def packets(rng: np.random.Generator, count: int, start: int = 0, *, max_size: int = 40, step: int = 1000):
    out, now = [], start
    for _ in range(count):
        n = int(rng.integers(0, max_size))
        t = now + np.sort(rng.integers(0, step, n))
        now += step
        out.append(EventBatch.from_arrays(rng.integers(0, 640, n), rng.integers(0, 480, n), t, rng.integers(0, 2, n)))
    return out


def assert_same(a: EventBatch, b: EventBatch) -> None:
    assert len(a) == len(b)
    for name in "xytp":
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    max_events=st.integers(1, 300),
    max_duration=st.integers(1, 40_000),
    queries=st.lists(
        st.tuples(st.integers(-5_000, 80_000), st.integers(-5_000, 80_000), st.integers(0, 500)), max_size=8
    ),
)
def test_queries_match_brute_force(seed: int, max_events: int, max_duration: int, queries: list) -> None:
    rng = np.random.default_rng(seed)
    buffer = EventRingBuffer(max_duration, max_events)
    stream = packets(rng, int(rng.integers(1, 70)))
    for batch in stream:
        buffer.append(batch)
    everything = EventBatch.concatenate(stream)
    if len(everything):
        keep = everything.t >= everything.t[-1] - max_duration
        kept = everything[keep][-max_events:]
    else:
        kept = everything
    assert len(buffer) == len(kept)
    assert buffer.stats.appended == len(everything)
    assert buffer.stats.dropped_overflow == len(everything) - len(kept)
    assert buffer.latest_time == (int(kept.t[-1]) if len(kept) else None)
    for t0, t1, n in queries:
        expected = kept[(kept.t >= t0) & (kept.t < t1)]
        assert_same(buffer.window(t0, t1), expected)
        before = kept[kept.t < t1]
        assert_same(buffer.last_n(n, t1), before[max(0, len(before) - n) :])
        # The same events handed to a sink in place: `count` storage slots from `first` on, wrapping; at most two
        # non-empty storage slices, oldest first.
        windows: list[RingWindow] = []
        assert buffer.send_window(t0, t1, windows.append) == len(expected)
        assert buffer.send_last_n(n, t1, windows.append) == min(n, len(before))
        for window, wanted in zip(windows, (expected, before[max(0, len(before) - n) :]), strict=True):
            assert len(window.slices) <= 2 and all(len(piece) for piece in window.slices)
            assert_same(EventBatch.concatenate(window.slices), wanted)
            slots = (window.first + np.arange(window.count)) % max_events
            assert window.count == len(wanted) and window.storage.t[slots].tolist() == wanted.t.tolist()


class RecordingFence:
    def __init__(self, log: list[str], name: str, done: bool = False) -> None:
        self.log, self.name, self.done = log, name, done

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.log.append(self.name)


def test_a_write_waits_for_the_fences_of_the_sinks_that_read_before_it() -> None:
    buffer = EventRingBuffer(10_000, 4)
    buffer.append(EventBatch.from_arrays([1, 2, 3], [1, 2, 3], [10, 20, 30], [0, 1, 0]))
    log: list[str] = []
    pieces: list[EventBatch] = []

    def sink(name: str):
        def read(window: RingWindow) -> RecordingFence:
            pieces.extend(window.slices)  # the storage itself: what an asynchronous copy would still be reading
            return RecordingFence(log, name)

        return read

    assert buffer.send_last_n(2, 100, sink("a")) == 2 and buffer.send_window(0, 100, sink("b")) == 3
    buffer.window(0, 100)
    assert log == []  # reading never waits
    buffer.append(EventBatch.from_arrays([4, 5], [4, 5], [40, 50], [1, 1]))  # wraps onto the slots read above
    assert log == ["a", "b"]
    assert pieces[1].t.tolist() == [50, 20, 30]  # the views were of the storage: slot 0 is overwritten
    buffer.append(EventBatch.from_arrays([6], [6], [60], [1]))
    assert log == ["a", "b"]  # each fence is waited for once
    slices: list[list[EventBatch]] = []
    buffer.send_window(0, 100, lambda w: slices.append(w.slices))  # 30, 40, 50, 60 over slots 2, 3, 0, 1: two slices
    assert [piece.t.tolist() for piece in slices[0]] == [[30, 40], [50, 60]]
    # Fences already passed are dropped when the next one comes (a stream without events piles none up).
    fences = [RecordingFence(log, f"f{k}", done=k < 99) for k in range(100)]
    for fence in fences:
        buffer.send_window(0, 100, lambda s, fence=fence: fence)
    log.clear()
    buffer.append(EventBatch.from_arrays([7], [7], [70], [1]))
    assert log == ["f99"]


@given(st.integers(1, 12), st.integers(0, 11), st.integers(0, 14), st.integers(0, 11), st.integers(0, 14))
def test_slot_runs_overlap_as_sets_of_slots(capacity, first_a, length_a, first_b, length_b) -> None:
    def slots(first: int, length: int) -> set[int]:
        return {(first + k) % capacity for k in range(length)}

    expected = bool(slots(first_a, length_a) & slots(first_b, length_b))
    assert ring_buffer._overlap(first_a % capacity, length_a, first_b % capacity, length_b, capacity) == expected


class HeldFence:
    """A reader that has not finished until released (a GPU reading the ring in place)."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def query(self) -> bool:
        return self.released.is_set()

    def synchronize(self) -> None:
        self.released.wait()


def test_an_append_waits_only_for_readers_of_the_slots_it_may_write() -> None:
    buffer = EventRingBuffer(10**9, 1000)
    buffer.append(EventBatch.from_arrays(np.zeros(300), np.zeros(300), np.arange(300), np.ones(300)))
    fence = HeldFence()
    assert buffer.send_last_n(100, 10**9, lambda window: fence) == 100  # slots 200..299

    def append_in_thread(t0: int, n: int) -> threading.Event:
        done = threading.Event()
        batch = EventBatch.from_arrays(np.zeros(n), np.zeros(n), np.arange(t0, t0 + n), np.ones(n))
        threading.Thread(target=lambda: (buffer.append(batch), done.set()), daemon=True).start()
        return done

    assert append_in_thread(300, 50).wait(10)  # slots 300..349 (or 0..49 after a reset): no wait
    blocked = append_in_thread(350, 900)  # wraps round onto slots 200..299
    assert not blocked.wait(0.3)
    fence.released.set()
    assert blocked.wait(10) and buffer.latest_time == 1249


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: pinned host memory is page-locked by the driver")
def test_pinned_storage_hands_page_locked_slices_to_the_sink() -> None:
    buffer = EventRingBuffer(1000, 8, pinned=True)
    buffer.append(EventBatch.from_arrays([1], [2], [3], [1]))
    seen: list[bool] = []
    buffer.send_window(0, 10, lambda window: seen.append(torch.from_numpy(window.slices[0].t).is_pinned()))
    assert seen == [True]


def test_packet_larger_than_capacity_keeps_newest() -> None:
    buffer = EventRingBuffer(10**9, 5)
    buffer.append(EventBatch.from_arrays(np.arange(3), np.zeros(3), [1, 2, 3], np.ones(3)))
    buffer.append(EventBatch.from_arrays(np.arange(8), np.zeros(8), np.arange(10, 18), np.ones(8)))
    assert buffer.window(0, 100).t.tolist() == [13, 14, 15, 16, 17]
    assert buffer.stats.dropped_overflow == 6


def test_time_backwards_resets_and_small_disorder_is_clamped() -> None:
    buffer = EventRingBuffer(10**6, 100, backwards_tolerance_us=50)
    buffer.append(EventBatch.from_arrays([0, 1], [0, 0], [1000, 2000], [1, 1]))
    buffer.append(EventBatch.from_arrays([2, 3], [0, 0], [1970, 2100], [0, 0]))  # 30 µs late: clamped to 2000
    assert buffer.window(0, 10**6).t.tolist() == [1000, 2000, 2000, 2100]
    assert buffer.stats.clamped_out_of_order == 1 and buffer.stats.resets_time_backwards == 0
    # A bag loop inside a packet: everything before the jump is kept until the jump, then the buffer restarts.
    buffer.append(EventBatch.from_arrays([4, 5, 6], [0, 0, 0], [2200, 10, 20], [1, 1, 1]))
    assert buffer.window(-10, 10**6).t.tolist() == [10, 20]
    assert buffer.stats.resets_time_backwards == 1 and buffer.latest_time == 20
    assert len(buffer.window(30, 10)) == 0 and len(buffer.last_n(0, 100)) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_events"):
        EventRingBuffer(100, 0)
    with pytest.raises(ValueError, match="n >= 0"):
        EventRingBuffer(100, 10).last_n(-1, 0)


def test_one_writer_one_reader_threads() -> None:
    """Every query result must be a sorted, contiguous piece of the written stream, whatever the interleaving."""
    rng = np.random.default_rng(5)
    stream = packets(rng, 3000, max_size=60, step=100)
    t_all = EventBatch.concatenate(stream).t
    x_all = EventBatch.concatenate(stream).x
    buffer = EventRingBuffer(20_000, 2_000)
    done = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        for batch in stream:
            buffer.append(batch)
        done.set()

    def reader() -> None:
        checks = 0
        while not done.is_set() or checks < 50:
            latest = buffer.latest_time
            if latest is None:
                continue
            got = buffer.window(latest - 5_000, latest + 1) if checks % 2 else buffer.last_n(500, latest + 1)
            checks += 1
            if len(got) == 0:
                continue
            start = int(np.searchsorted(t_all, got.t[0]))
            # The piece must appear verbatim in the stream (match x too, the t values are not unique).
            candidates = np.flatnonzero(
                (t_all[start : start + 200] == got.t[0]) & (x_all[start : start + 200] == got.x[0])
            )
            ok = any(
                np.array_equal(t_all[start + c : start + c + len(got)], got.t)
                and np.array_equal(x_all[start + c : start + c + len(got)], got.x)
                for c in candidates
            )
            if not ok or np.any(np.diff(got.t) < 0):
                errors.append(f"query {checks}: torn or unsorted result starting at t={got.t[0]}")
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert buffer.stats.appended == len(t_all)
    assert len(buffer) <= 2_000 and buffer.latest_time == int(t_all[-1])
