"""DSEC event files: `events.h5` slicing (the official EventSlicer's results) and the rectification map.

events.h5: /events/{x,y,t,p} (t: uint32 µs relative to the stream start), /ms_to_idx (uint64, first event
index at or after each millisecond), /t_offset (int64 µs, stream time -> image time; 0 if absent).
Datasets are Blosc/zstd compressed, hence `import hdf5plugin` before h5py opens them.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter used by DSEC)
import numpy as np

from mambaseg_core.events.batch import EventBatch

SENSOR_HEIGHT, SENSOR_WIDTH = 480, 640
_EVENT_DATASETS = ("events/x", "events/y", "events/t", "events/p", "ms_to_idx")


class EventRangeError(ValueError):
    """A requested time lies outside what the file's ms_to_idx table covers."""


class DsecEventReader:
    """Reads time windows of one DSEC `events.h5`; times passed in are in the image clock (µs)."""

    def __init__(self, h5_path: str | Path) -> None:
        self.path = Path(h5_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"DSEC events file not found: {self.path}")
        self._file = h5py.File(self.path, "r")
        missing = [name for name in _EVENT_DATASETS if name not in self._file]
        if missing:
            self._file.close()
            raise KeyError(f"{self.path} lacks dataset(s) {', '.join(missing)} (not a DSEC events.h5?)")
        self._events = {name: self._file[f"events/{name}"] for name in "xytp"}
        self.ms_to_idx = np.asarray(self._file["ms_to_idx"], dtype=np.int64)
        self.t_offset = int(np.asarray(self._file["t_offset"][()]).reshape(-1)[0]) if "t_offset" in self._file else 0

    def __len__(self) -> int:
        return int(self._events["t"].shape[0])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DsecEventReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _index_of_ms(self, ms: int, image_time: int) -> int:
        if ms < 0 or ms >= self.ms_to_idx.size:
            raise EventRangeError(
                f"{self.path}: time {image_time} µs (image clock) needs millisecond {ms} of the stream, but "
                f"ms_to_idx covers 0..{self.ms_to_idx.size - 1} (t_offset {self.t_offset})"
            )
        return int(self.ms_to_idx[ms])

    def _first_index_at_or_after(self, t_rel: int, image_time: int) -> int:
        """Index of the first event with t >= t_rel (stream clock), via the bracketing milliseconds."""
        lo = self._index_of_ms(t_rel // 1000, image_time)
        hi = self._index_of_ms(-(-t_rel // 1000), image_time)
        return lo + int(np.searchsorted(self._events["t"][lo:hi], t_rel, side="left"))

    def _read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: np.asarray(self._events[name][start:stop]) for name in "xytp"}

    def fixed_count_before(self, t_end_us: int, n: int) -> EventBatch:
        """The last `n` events strictly before `t_end_us` (image clock), like `get_events_fixed_num`.

        Returned t is **raw stream time** (no t_offset), as in the official loader; the voxel grid only uses
        differences. Unlike the official code, an exact-millisecond `t_end_us - t_offset` is handled correctly.
        """
        if n < 0:
            raise ValueError(f"fixed_count_before needs n >= 0, got {n}")
        stop = self._first_index_at_or_after(int(t_end_us) - self.t_offset, int(t_end_us))
        e = self._read(max(0, stop - n), stop)
        return EventBatch.from_arrays(e["x"], e["y"], e["t"], e["p"])

    def window(self, t0_us: int, t1_us: int) -> EventBatch:
        """Events with t0 <= t < t1 (image clock), like `get_events`; returned t is in the image clock."""
        if t1_us < t0_us:
            raise ValueError(f"window needs t0 <= t1, got [{t0_us}, {t1_us})")
        start = self._first_index_at_or_after(int(t0_us) - self.t_offset, int(t0_us))
        stop = self._first_index_at_or_after(int(t1_us) - self.t_offset, int(t1_us))
        e = self._read(start, stop)
        return EventBatch.from_arrays(e["x"], e["y"], e["t"].astype(np.int64) + self.t_offset, e["p"])


def load_rectify_map(path: str | Path, sensor_size: tuple[int, int] = (SENSOR_HEIGHT, SENSOR_WIDTH)) -> np.ndarray:
    """DSEC `rectify_map.h5` → float32 (H, W, 2): rectify_map[y, x] = (x_rect, y_rect); (H, W) = `sensor_size`
    (DSEC's 480x640 by default)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DSEC rectify map not found: {path}")
    with h5py.File(path, "r") as f:
        if "rectify_map" not in f:
            raise KeyError(f"{path} has no 'rectify_map' dataset")
        rectify_map = np.asarray(f["rectify_map"][()], dtype=np.float32)
    expected = (*sensor_size, 2)
    if rectify_map.shape != expected:
        raise ValueError(
            f"{path}: rectify_map has shape {rectify_map.shape}, expected {expected} for sensor_size {sensor_size}"
        )
    return rectify_map


def rectify(x: np.ndarray, y: np.ndarray, rectify_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw sensor pixels (N,) → rectified float32 coordinates (x_rect, y_rect), each (N,).

    Results may be negative or beyond the frame; the voxel grid truncates and drops them.
    """
    height, width = rectify_map.shape[:2]
    x, y = np.asarray(x), np.asarray(y)
    if x.size and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise ValueError(
            f"rectify: pixel outside the {width}x{height} sensor (x in [{x.min()}, {x.max()}], "
            f"y in [{y.min()}, {y.max()}])"
        )
    xy = rectify_map[y, x]
    return xy[..., 0].astype(np.float32, copy=False), xy[..., 1].astype(np.float32, copy=False)
