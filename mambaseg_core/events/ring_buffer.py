"""A time-indexed ring buffer of the most recent events of one stream (preallocated, bounded memory).

Policy:
- Capacity: at most `max_events` events and only events with t >= latest_time - max_duration_us; older ones
  are dropped (oldest first) and counted in `stats.dropped_overflow`.
- Storage is kept sorted by t so queries are binary searches.
- Time going backwards: an event older than the newest stored one by more than `backwards_tolerance_us`
  (bag loop, sensor reset, a new camera session) resets the buffer (the older history is discarded,
  `stats.resets_time_backwards` += 1) and the stream continues from that event.
- Small disorder within the tolerance (USB packet reordering, EVT3 TIME_HIGH jitter) is clamped: such an
  event is stored with t = the newest stored time (so at most `backwards_tolerance_us` late), counted in
  `stats.clamped_out_of_order`.
- Thread safety: one lock guards appends and queries (one writer and any readers). `window` and `last_n` return
  copies. `send_window` and `send_last_n` hand the result, in place, to a `Sink` as a `RingWindow`: where it lies
  in the storage, valid during the call. The sink may leave asynchronous reads of it running (a GPU upload straight
  from pinned storage, `pinned=True`, or a GPU kernel reading that storage in place) and return a `Fence`; a later
  append that may write into the window's slots waits for it first (one that writes elsewhere in the ring does not).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numba
import numpy as np
import torch

from mambaseg_core.events.batch import EventBatch

_FIELDS = ("x", "y", "t", "p")
_DTYPES = {"x": np.uint16, "y": np.uint16, "t": np.int64, "p": np.uint8}


class Fence(Protocol):
    """Something to wait for, e.g. a torch.cuda.Event recorded after asynchronous copies."""

    def query(self) -> bool: ...  # done?

    def synchronize(self) -> None: ...


@dataclass(frozen=True)
class RingWindow:
    """A query's result in place: `count` events from storage slot `first` on, oldest first, wrapping from the
    storage's last slot to slot 0. Valid only during the sink's call (the storage is the ring's own)."""

    storage: EventBatch  # the whole storage: max_events slots of x, y, t and p
    first: int
    count: int

    @property
    def slices(self) -> list[EventBatch]:
        """The window as storage views in order: one, two where it wraps, none when empty."""
        capacity = len(self.storage)
        head = min(self.count, capacity - self.first)
        spans = [slice(self.first, self.first + head), slice(0, self.count - head)]
        return [self.storage[span] for span in spans if span.stop > span.start]


# A query's consumer: the result in place -> a fence that appends into its slots wait for, or None
# (EventRingBuffer.send_window).
Sink = Callable[[RingWindow], Fence | None]


@numba.njit(cache=True, nogil=True)
def _search_ring(store_t, head, count, value):  # pragma: no cover - jit
    """Logical index of the first of the `count` events stored from `head` on (time-sorted) with t >= value."""
    capacity = len(store_t)
    low, high = 0, count
    while low < high:
        middle = (low + high) // 2
        slot = head + middle
        if store_t[slot - capacity if slot >= capacity else slot] < value:
            low = middle + 1
        else:
            high = middle
    return low


@numba.njit(cache=True, nogil=True)
def _copy_into_ring(store, first_slot, source, begin, end):  # pragma: no cover - jit
    """store[(first_slot + k) % capacity] = source[begin + k] for k < end - begin <= capacity (two block copies)."""
    capacity = len(store)
    head_part = min(end - begin, capacity - first_slot)
    store[first_slot : first_slot + head_part] = source[begin : begin + head_part]
    store[: end - begin - head_part] = source[begin + head_part : end]


@numba.njit(cache=True, nogil=True)
def _append_run(
    store_x, store_y, store_t, store_p, head, count, x, y, t, p, start, tolerance, max_duration
):  # pragma: no cover - jit
    """Copy events start.. of a packet into the ring (oldest dropped when full) until the first one older than the
    newest stored time by more than `tolerance`; smaller disorder is clamped to the newest time. Then drop the
    events older than the newest by more than `max_duration`.
    Returns (index of that event or len(t), head, count, clamped, dropped for capacity, dropped for age).

    One pass over the times finds the end of the run and stores the clamped times; x, y and p follow as block
    copies (a per-event loop over all four fields, with a modulo per event, took 2.4x as long)."""
    capacity = len(store_t)
    first_slot = (head + count) % capacity
    slot = first_slot
    clamped = 0
    end = len(t)
    newest = store_t[(head + count - 1) % capacity] if count > 0 else t[start] if start < end else 0
    for i in range(start, end):
        ti = t[i]
        if ti < newest:
            if ti < newest - tolerance:
                end = i
                break
            ti = newest
            clamped += 1
        newest = ti
        store_t[slot] = ti
        slot = slot + 1 if slot + 1 < capacity else 0
    run = end - start
    kept = min(run, capacity)  # a run longer than the ring keeps its newest `capacity` events
    kept_slot = (first_slot + run - kept) % capacity
    _copy_into_ring(store_x, kept_slot, x, end - kept, end)
    _copy_into_ring(store_y, kept_slot, y, end - kept, end)
    _copy_into_ring(store_p, kept_slot, p, end - kept, end)
    dropped = max(0, count + run - capacity)
    head, count = (head + dropped) % capacity, min(count + run, capacity)
    expired = _search_ring(store_t, head, count, newest - max_duration) if count else 0
    return end, (head + expired) % capacity, count - expired, clamped, dropped, expired


@dataclass
class RingBufferStats:
    appended: int = 0  # events passed to append()
    dropped_overflow: int = 0  # events dropped for capacity or age (oldest first)
    resets_time_backwards: int = 0  # resets caused by time jumping back beyond the tolerance
    clamped_out_of_order: int = 0  # events re-stamped to the newest time (disorder within the tolerance)


class EventRingBuffer:
    """Holds the last `max_duration_us` µs (and at most `max_events` events) of an event stream.

    pinned: the storage is page-locked host memory, so that a sink can copy slices of it to a GPU asynchronously.
    """

    def __init__(
        self, max_duration_us: int, max_events: int, *, backwards_tolerance_us: int = 1000, pinned: bool = False
    ) -> None:
        if max_duration_us <= 0 or max_events <= 0 or backwards_tolerance_us < 0:
            raise ValueError(
                f"EventRingBuffer needs max_duration_us > 0, max_events > 0, backwards_tolerance_us >= 0; got "
                f"{max_duration_us}, {max_events}, {backwards_tolerance_us}"
            )
        self.max_duration_us = int(max_duration_us)
        self.max_events = int(max_events)
        self.backwards_tolerance_us = int(backwards_tolerance_us)
        self._storage = EventBatch(**{name: _storage(self.max_events, _DTYPES[name], pinned) for name in _FIELDS})
        self._head = 0  # storage index of the oldest event
        self._count = 0
        # What sinks may still read: (fence, first slot, slots), waited for by appends that may write there.
        self._fences: list[tuple[Fence, int, int]] = []
        self._lock = threading.Lock()
        self.stats = RingBufferStats()

    def __len__(self) -> int:
        return self._count

    @property
    def latest_time(self) -> int | None:
        """t of the newest stored event (µs), None when empty."""
        with self._lock:
            return self._time_at(self._count - 1) if self._count else None

    @property
    def earliest_time(self) -> int | None:
        with self._lock:
            return self._time_at(0) if self._count else None

    def clear(self) -> None:
        with self._lock:
            self._head = self._count = 0

    def append(self, batch: EventBatch) -> None:
        """Add a packet (in stream order); applies the time-backwards and capacity policies above."""
        if len(batch) == 0:
            return
        waited: list[Fence] = []
        while True:
            with self._lock:
                self._fences = [entry for entry in self._fences if all(entry[0] is not w for w in waited)]
                # The slots this batch may write: on from the newest event, or on from slot 0 after a reset.
                start, n = (self._head + self._count) % self.max_events, len(batch)
                blocking = [
                    fence
                    for fence, first, slots in self._fences
                    if any(_overlap(written, n, first, slots, self.max_events) for written in (start, 0))
                    and not fence.query()
                ]
                if not blocking:
                    self._write(batch)
                    return
            # Wait without the lock: queries (and the reader that will release a fence) go on meanwhile; then look
            # again, for fences of reads made in the meantime.
            for fence in blocking:
                fence.synchronize()
            waited += blocking

    def _write(self, batch: EventBatch) -> None:
        """append's writing, lock held and no reader's fence pending."""
        self.stats.appended += len(batch)
        start = 0
        while True:
            store = self._storage
            end, self._head, self._count, clamped, dropped, expired = _append_run(
                store.x, store.y, store.t, store.p, self._head, self._count,
                batch.x, batch.y, batch.t, batch.p, start, self.backwards_tolerance_us, self.max_duration_us,
            )  # fmt: skip
            self.stats.clamped_out_of_order += clamped
            self.stats.dropped_overflow += dropped + expired
            if end == len(batch):
                break
            self.stats.resets_time_backwards += 1
            self._head = self._count = 0
            start = end

    def window(self, t0: int, t1: int) -> EventBatch:
        """Copy of the stored events with t0 <= t < t1 (empty when t1 <= t0)."""
        with self._lock:
            return EventBatch.concatenate(self._in_place(*self._window_range(t0, t1)).slices)

    def last_n(self, n: int, t_end: int) -> EventBatch:
        """Copy of the last (up to) n stored events with t < t_end."""
        with self._lock:
            return EventBatch.concatenate(self._in_place(*self._last_n_range(n, t_end)).slices)

    def send_window(self, t0: int, t1: int, sink: Sink) -> int:
        """`window`'s events handed to `sink` in place (module docstring); returns how many there are."""
        with self._lock:
            return self._send(*self._window_range(t0, t1), sink)

    def send_last_n(self, n: int, t_end: int, sink: Sink) -> int:
        """`last_n`'s events handed to `sink` in place; returns how many there are."""
        with self._lock:
            return self._send(*self._last_n_range(n, t_end), sink)

    # -- internals (lock held) -------------------------------------------------------------------------

    def _time_at(self, logical: int) -> int:
        return int(self._storage.t[(self._head + logical) % self.max_events])

    def _search(self, value: int) -> int:
        """Logical index of the first stored event with t >= value."""
        return int(_search_ring(self._storage.t, self._head, self._count, value))

    def _window_range(self, t0: int, t1: int) -> tuple[int, int]:
        i0 = self._search(t0)
        return i0, max(i0, self._search(t1))

    def _last_n_range(self, n: int, t_end: int) -> tuple[int, int]:
        if n < 0:
            raise ValueError(f"last_n needs n >= 0, got {n}")
        i1 = self._search(t_end)
        return max(0, i1 - n), i1

    def _in_place(self, i0: int, i1: int) -> RingWindow:
        """Logical [i0, i1) where it lies in the storage."""
        return RingWindow(self._storage, (self._head + i0) % self.max_events, i1 - i0)

    def _send(self, i0: int, i1: int, sink: Sink) -> int:
        window = self._in_place(i0, i1)
        fence = sink(window)
        if fence is not None:
            # Finished fences go: frames without events in between (a stalled stream) must not pile them up.
            pending = [entry for entry in self._fences if not entry[0].query()]
            self._fences = [*pending, (fence, window.first, window.count)]
        return window.count


def _overlap(first_a: int, length_a: int, first_b: int, length_b: int, capacity: int) -> bool:
    """Whether two runs of ring slots, [first, first + length) wrapping at `capacity`, share a slot: one holds the
    other's first slot."""
    if length_a <= 0 or length_b <= 0:
        return False
    return (first_b - first_a) % capacity < length_a or (first_a - first_b) % capacity < length_b


def _storage(length: int, dtype: type, pinned: bool) -> np.ndarray:
    """One field's storage, written through: np.empty and torch map pages lazily, and the first append into each page
    would take a page fault (4 KB at a time) until the ring had wrapped, minutes into a stream at the default size."""
    if pinned:
        # Page-locked through torch's host allocator; the array's base keeps the tensor, and so the memory, alive.
        array = torch.empty(length * np.dtype(dtype).itemsize, dtype=torch.uint8, pin_memory=True).numpy().view(dtype)
    else:
        array = np.empty(length, dtype)
    array.fill(0)
    return array
