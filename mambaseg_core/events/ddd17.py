"""DDD17 (ddd17_seg) event files: `events.dat.t` (int64 ns, N) and `events.dat.xyp` (int16, N x 3), memmapped.

Times stay in **nanoseconds** and arrays stay raw: the MambaSeg DDD17 loader feeds ns straight into the voxel
grid, whose time normalisation only uses differences; converting to µs (as EventBatch would) floors times
and changes τ, so the grid would no longer match the official one bit for bit. Use `to_batch` only where µs
suffice (bag tools, visualisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from mambaseg_core.events.batch import EventBatch


class Ddd17Slice(NamedTuple):
    """Raw event arrays of a DDD17 slice, each (N,): x, y, p int16 and t_ns int64 (copies)."""

    x: np.ndarray
    y: np.ndarray
    t_ns: np.ndarray
    p: np.ndarray


class Ddd17Events:
    """Memmapped events of one `dirK` folder of ddd17_seg."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        t_path, xyp_path = self.directory / "events.dat.t", self.directory / "events.dat.xyp"
        for path in (t_path, xyp_path):
            if not path.is_file():
                raise FileNotFoundError(f"DDD17 event file not found: {path}")
        t_bytes, xyp_bytes = t_path.stat().st_size, xyp_path.stat().st_size
        if t_bytes % 8 or xyp_bytes != t_bytes // 8 * 6:
            raise ValueError(
                f"{self.directory}: events.dat.t has {t_bytes} B (8 per event), events.dat.xyp {xyp_bytes} B "
                f"(6 per event): sizes disagree"
            )
        n = t_bytes // 8
        self.t_ns = np.memmap(t_path, dtype="<i8", mode="r", shape=(n,)) if n else np.empty(0, np.int64)
        self.xyp = np.memmap(xyp_path, dtype="<i2", mode="r", shape=(n, 3)) if n else np.empty((0, 3), np.int16)

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])

    def slice(self, start: int, end: int) -> Ddd17Slice:
        """Events [start, end) as raw arrays (indices as in index_*ms.npy; start is clamped at 0)."""
        start, end = max(int(start), 0), int(end)
        if end > len(self) or end < start:
            raise IndexError(f"{self.directory}: slice [{start}, {end}) outside 0..{len(self)}")
        xyp = np.asarray(self.xyp[start:end])
        return Ddd17Slice(xyp[:, 0].copy(), xyp[:, 1].copy(), np.array(self.t_ns[start:end]), xyp[:, 2].copy())

    def to_batch(self, start: int, end: int) -> EventBatch:
        """Events [start, end) as an EventBatch; t = floor(t_ns / 1000) µs (lossy, see module docstring)."""
        s = self.slice(start, end)
        return EventBatch.from_arrays(s.x, s.y, s.t_ns // 1000, s.p)
