"""The one event container: a structure of arrays.

Fields and units (fixed across the project):
- x, y: uint16 pixel column/row on the sensor (rectified float coordinates never live here; they
  are produced on the fly for the voxel grid).
- t: int64 microseconds in the clock of whoever built the batch (sensor clock after decoding,
  image clock once the stream is aligned).
- p: uint8 polarity, 1 = ON (brighter), 0 = OFF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventBatch:
    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.t)
        for name, dtype in (("x", np.uint16), ("y", np.uint16), ("t", np.int64), ("p", np.uint8)):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise TypeError(f"EventBatch.{name} must be a 1-D numpy array")
            if arr.dtype != dtype:
                raise TypeError(f"EventBatch.{name} must be {np.dtype(dtype).name}, got {arr.dtype}")
            if len(arr) != n:
                raise ValueError(f"EventBatch.{name} has {len(arr)} entries, t has {n}")

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def empty(cls) -> EventBatch:
        return cls(np.empty(0, np.uint16), np.empty(0, np.uint16), np.empty(0, np.int64), np.empty(0, np.uint8))

    @classmethod
    def from_arrays(cls, x, y, t, p) -> EventBatch:
        """Build a batch, converting each array to the canonical dtype (no copy when it already is)."""
        return cls(
            np.asarray(x).astype(np.uint16, copy=False),
            np.asarray(y).astype(np.uint16, copy=False),
            np.asarray(t).astype(np.int64, copy=False),
            np.asarray(p).astype(np.uint8, copy=False),
        )

    def __getitem__(self, index: slice | np.ndarray) -> EventBatch:
        return EventBatch(self.x[index], self.y[index], self.t[index], self.p[index])

    @staticmethod
    def concatenate(batches: list[EventBatch]) -> EventBatch:
        if not batches:
            return EventBatch.empty()
        return EventBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in "xytp"))
