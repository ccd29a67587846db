"""DSEC events.h5 / rectify_map.h5 and DDD17 memmap readers on small synthetic files in the official layout."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from mambaseg_core.events import (
    Ddd17Events,
    DsecEventReader,
    EventRangeError,
    load_rectify_map,
    rectify,
    voxel_grid,
)

T_OFFSET = 49_599_300_000


@pytest.fixture(scope="module")
def dsec_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    n = 30_000
    t = np.sort(rng.integers(0, 400_000, n)).astype(np.uint32)
    t[1000:1010] = 50_000  # a run of equal times on an exact millisecond
    t.sort()
    events = {
        "x": rng.integers(0, 640, n).astype(np.uint16),
        "y": rng.integers(0, 480, n).astype(np.uint16),
        "t": t,
        "p": rng.integers(0, 2, n).astype(np.uint8),
    }
    ms_to_idx = np.searchsorted(t, 1000 * np.arange(t[-1] // 1000 + 2), side="left").astype(np.uint64)
    root = tmp_path_factory.mktemp("dsec")
    compression = hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)
    with h5py.File(root / "events.h5", "w") as f:
        for name, values in events.items():
            f.create_dataset(f"events/{name}", data=values, chunks=True, **compression)
        f.create_dataset("ms_to_idx", data=ms_to_idx, chunks=True, **compression)
        f.create_dataset("t_offset", data=np.int64(T_OFFSET))
    gy, gx = np.mgrid[0:480, 0:640].astype(np.float32)
    with h5py.File(root / "rectify_map.h5", "w") as f:
        f.create_dataset("rectify_map", data=np.stack([gx - 0.7, gy + 0.2], -1))
    return root / "events.h5", root / "rectify_map.h5", events


def official_fixed_num(events: dict[str, np.ndarray], ms_to_idx: np.ndarray, t_end: int, n: int) -> slice:
    """EventSlicer.get_events_fixed_num's index arithmetic (non-edge case), restated."""
    t_end -= T_OFFSET
    lo, hi = ms_to_idx[math.floor(t_end / 1000)], ms_to_idx[math.ceil(t_end / 1000)]
    window = events["t"][lo:hi]
    end = len(window)
    for i in range(len(window) - 1, -1, -1):
        if window[i] >= t_end:
            end = i
        else:
            break
    stop = int(lo) + end
    return slice(max(0, stop - n), stop)


def test_fixed_count_before_matches_official(dsec_files) -> None:
    h5_path, _, events = dsec_files
    with DsecEventReader(h5_path) as reader:
        assert reader.t_offset == T_OFFSET and len(reader) == len(events["t"])
        for t_rel, n in [(100_137, 5000), (50_001, 100_000), (399_999, 3), (200_500, 0)]:
            got = reader.fixed_count_before(T_OFFSET + t_rel, n)
            s = official_fixed_num(events, reader.ms_to_idx, T_OFFSET + t_rel, n)
            assert np.array_equal(got.t, events["t"][s].astype(np.int64))  # raw stream time, as official
            assert np.array_equal(got.x, events["x"][s]) and np.array_equal(got.p, events["p"][s])
            assert len(got) == min(n, int(np.searchsorted(events["t"], t_rel)))
            assert len(got) == 0 or got.t[-1] < t_rel


def test_exact_millisecond_and_window(dsec_files) -> None:
    h5_path, _, events = dsec_files
    t = events["t"].astype(np.int64)
    with DsecEventReader(h5_path) as reader:
        got = reader.fixed_count_before(T_OFFSET + 50_000, 20)  # official code is undefined here
        assert got.t.tolist() == t[t < 50_000][-20:].tolist()
        for t0, t1 in [(50_000, 50_001), (12_345, 98_765), (1_000, 1_000), (0, 1)]:
            window = reader.window(T_OFFSET + t0, T_OFFSET + t1)
            expected = (t >= t0) & (t < t1)
            assert np.array_equal(window.t, t[expected] + T_OFFSET)  # image clock, as official get_events
            assert np.array_equal(window.y, events["y"][expected])


def test_dsec_errors(dsec_files, tmp_path: Path) -> None:
    h5_path, _, _ = dsec_files
    with DsecEventReader(h5_path) as reader:
        with pytest.raises(EventRangeError, match="ms_to_idx covers"):
            reader.fixed_count_before(T_OFFSET + 10**9, 10)
        with pytest.raises(EventRangeError):
            reader.window(T_OFFSET - 5_000, T_OFFSET)
        with pytest.raises(ValueError, match="t0 <= t1"):
            reader.window(T_OFFSET + 5, T_OFFSET)
    with pytest.raises(FileNotFoundError):
        DsecEventReader(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.create_dataset("events/t", data=np.zeros(3, np.uint32))
    with pytest.raises(KeyError, match="ms_to_idx"):
        DsecEventReader(tmp_path / "partial.h5")


def test_rectify_and_voxelise(dsec_files) -> None:
    _, map_path, events = dsec_files
    rectify_map = load_rectify_map(map_path)
    assert rectify_map.shape == (480, 640, 2) and rectify_map.dtype == np.float32
    x_rect, y_rect = rectify(events["x"], events["y"], rectify_map)
    assert x_rect.dtype == np.float32 and np.array_equal(x_rect, events["x"] - np.float32(0.7))
    grid = voxel_grid(x_rect, y_rect, events["t"], events["p"], bins=10, height=480, width=640)
    # x = 0 maps to -0.7 → column 0 (kept); y = 479 maps to 479.2 → row 479 (kept): every event counts.
    expected = int(np.count_nonzero(events["p"] == 1)) - int(np.count_nonzero(events["p"] == 0))
    assert float(grid.sum(dtype=np.float64)) == pytest.approx(expected, abs=1e-2)
    with pytest.raises(ValueError, match="outside"):
        rectify(np.array([640]), np.array([0]), rectify_map)


def test_ddd17_memmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 1000
    t = np.sort(rng.integers(1_487_000_000_000_000_000, 1_487_000_001_000_000_000, n)).astype("<i8")
    xyp = np.stack([rng.integers(0, 346, n), rng.integers(0, 260, n), rng.integers(0, 2, n)], 1).astype("<i2")
    t.tofile(tmp_path / "events.dat.t")
    xyp.tofile(tmp_path / "events.dat.xyp")
    events = Ddd17Events(tmp_path)
    assert len(events) == n
    s = events.slice(-5, 200)  # negative start clamped like the official loader
    assert np.array_equal(s.t_ns, t[:200]) and np.array_equal(s.x, xyp[:200, 0]) and np.array_equal(s.p, xyp[:200, 2])
    assert events.to_batch(10, 20).t.tolist() == (t[10:20] // 1000).tolist()
    with pytest.raises(IndexError):
        events.slice(0, n + 1)
    (tmp_path / "events.dat.xyp").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="sizes disagree"):
        Ddd17Events(tmp_path)
