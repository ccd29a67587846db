"""Writing DSEC-style event files: `events.h5` (spec §1.3) and `rectify_map.h5` (spec §1.5).

`DsecEventsWriter` streams time-sorted `EventBatch`es into resizable Blosc-zstd datasets and builds `ms_to_idx`
on the fly, so streams too long for memory (the synthetic world, `mambaseg-simulate-events`) can be written;
`write_dsec_events_h5` is the same writer fed whole arrays (the test fixtures).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import h5py
import hdf5plugin
import numpy as np

from mambaseg_core.events.batch import EventBatch

_CHUNK = 1 << 16
_FLUSH_EVENTS = 1 << 20


class DsecEventsWriter:
    """Append time-sorted events (absolute µs) and close to finalise; a context manager.

    On disk: `events/{p,t,x,y}` (t = absolute time − `t_offset`, uint32), `ms_to_idx` (uint64) with
    `ms_to_idx[ms] = searchsorted(t, 1000·ms, 'left')` for ms in `0 .. t[-1]//1000 + 1`, scalar int64 `t_offset`.
    """

    def __init__(self, path: str | Path, t_offset: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t_offset = int(t_offset)
        self._h5: h5py.File | None = h5py.File(self.path, "w")
        blosc = hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)
        self._datasets = {
            name: self._h5.create_dataset(f"events/{name}", (0,), dtype, maxshape=(None,), chunks=(_CHUNK,), **blosc)
            for name, dtype in (("p", np.uint8), ("t", np.uint32), ("x", np.uint16), ("y", np.uint16))
        }
        self._blosc = blosc
        self._count = 0
        self._last_t = -1
        self._ms_hist = np.zeros(1024, np.int64)  # events per millisecond of t_rel (grown by doubling)
        self._pending: list[EventBatch] = []  # appended batches not yet written (t relative to t_offset)
        self._pending_count = 0
        self._written = 0

    def __len__(self) -> int:
        return self._count

    def append(self, events: EventBatch) -> None:
        """Add a batch; its times must be >= t_offset, sorted and not before the previous batch's last event."""
        if len(events) == 0:
            return
        t_rel = events.t - self.t_offset
        if t_rel[0] < 0 or t_rel[-1] >= 2**32 or np.any(np.diff(t_rel) < 0) or t_rel[0] < self._last_t:
            raise ValueError(f"{self.path}: events must be time-sorted, after the previous batch, within uint32 µs")
        self._pending.append(EventBatch(events.x, events.y, t_rel, events.p))
        self._pending_count += len(events)
        if self._pending_count >= _FLUSH_EVENTS:
            self._flush()
        ms = t_rel // 1000
        lo = int(ms[0])
        counts = np.bincount(ms - lo)
        need = lo + len(counts)
        if need > len(self._ms_hist):
            self._ms_hist = np.pad(self._ms_hist, (0, max(need, 2 * len(self._ms_hist)) - len(self._ms_hist)))
        self._ms_hist[lo:need] += counts
        self._count += len(events)
        self._last_t = int(t_rel[-1])

    def _flush(self) -> None:
        """Move the buffered batches into the (resizable) datasets; few large writes keep HDF5 fast."""
        if not self._pending:
            return
        batch = EventBatch.concatenate(self._pending)
        start = self._written
        end = start + len(batch)
        for name, values in (("p", batch.p), ("t", batch.t.astype(np.uint32)), ("x", batch.x), ("y", batch.y)):
            dataset = self._datasets[name]
            dataset.resize((end,))
            dataset[start:end] = values
        self._written = end
        self._pending, self._pending_count = [], 0

    def close(self) -> None:
        """Write `ms_to_idx` and `t_offset`, then close the file."""
        if self._h5 is None:
            return
        self._flush()
        num_ms = (self._last_t // 1000 + 2) if self._count else 1
        counts = np.pad(self._ms_hist, (0, max(num_ms - len(self._ms_hist), 0)))[:num_ms]
        # ms_to_idx[ms] = number of events with t < 1000·ms.
        ms_to_idx = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.uint64)
        self._h5.create_dataset("ms_to_idx", data=ms_to_idx, chunks=True, **self._blosc)
        self._h5.create_dataset("t_offset", data=np.int64(self.t_offset))
        self._h5.close()
        self._h5 = None

    def __enter__(self) -> DsecEventsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None):
        self.close()


def write_dsec_events_h5(
    path: str | Path, t_rel: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, t_offset: int
) -> None:
    """Whole (N,) arrays as one `events.h5`; `t_rel` is stream time (µs, relative to `t_offset`), sorted."""
    with DsecEventsWriter(path, t_offset=t_offset) as writer:
        writer.append(EventBatch.from_arrays(x, y, np.asarray(t_rel, np.int64) + int(t_offset), p))


def identity_rectify_map(height: int, width: int) -> np.ndarray:
    """float32 (H, W, 2) with [y, x] = (x, y): a sensor that needs no rectification."""
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.stack([grid_x, grid_y], -1)


def write_rectify_map(path: str | Path, rectify_map: np.ndarray) -> None:
    """A `rectify_map.h5`: dataset `rectify_map`, float32 (H, W, 2), [y, x] = (x_rect, y_rect), gzip-compressed."""
    rectify_map = np.asarray(rectify_map, np.float32)
    if rectify_map.ndim != 3 or rectify_map.shape[2] != 2:
        raise ValueError(f"rectify_map must be (H, W, 2), got {rectify_map.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("rectify_map", data=rectify_map, compression="gzip", shuffle=True)
