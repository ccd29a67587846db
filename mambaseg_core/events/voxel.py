"""The MambaSeg/EISNet voxel grid (`generate_voxel_grid`, separate_pol=False), bit-exact, plus a torch variant.

For N events (x, y, t, p) and B bins over an H x W frame:
- t0 = t[0], t1 = t[-1] (first/last event, not min/max); Δ = t1 - t0, or 1.0 when 0;
- τ = (B-1)·(t - t0)/Δ in float64 (integer t: the product in int64, then converted); b = int(τ), δ = τ - b;
- xi, yi = x, y cast to int32 (truncation toward zero: a rectified -0.7 lands in column 0);
- valid: 0 <= xi < W, 0 <= yi < H, 0 <= τ < B; p == 1 is positive, any other value negative (weight 1);
- V±[b, yi, xi] += 1 - δ, and V±[b+1, yi, xi] += δ when b+1 < B, into float32 grids where each addition is
  done in float64 and rounded to float32, first all left (b) terms in event order, then all right (b+1) terms
  (the order of the official four `np.add.at` calls); V = V+ - V-  → float32 (B, H, W).
Differences from the official function, on inputs where it is undefined: no events → all zeros (it crashes);
non-finite t → ValueError; it rewrites p==0 to -1 in the caller's array, we never modify inputs.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import torch

_INT32_MIN = np.iinfo(np.int32).min


@numba.njit(cache=True, nogil=True)
def _accumulate(xi, yi, t, positive, bins, height, width, t0, delta, grid_pos, grid_neg):  # pragma: no cover
    """Add the events into zeroed float32 (B*H*W,) grids V+ (grid_pos) and V- (grid_neg), official rounding.

    The official order per cell is: all left (bin b) terms in event order, then all right (bin b+1) terms.
    Visiting events grouped by bin in descending bin order (event order inside a group) and adding both terms
    of an event at once gives every cell exactly that order, in a single pass over the events.
    """
    n = t.shape[0]
    plane = height * width
    scale = bins - 1
    event_bin = np.full(n, -1, np.int32)
    count = np.zeros(bins, np.int64)
    for i in range(n):
        x, y = xi[i], yi[i]
        if x < 0 or x >= width or y < 0 or y >= height:
            continue
        tau = (scale * (t[i] - t0)) / delta
        if tau >= 0.0 and tau < bins:
            event_bin[i] = int(tau)
            count[int(tau)] += 1
    slot = np.zeros(bins, np.int64)  # counting sort: bin B-1 first, stable inside a bin
    total = 0
    for b in range(bins - 1, -1, -1):
        slot[b] = total
        total += count[b]
    order = np.empty(total, np.int64)
    for i in range(n):
        b = event_bin[i]
        if b >= 0:
            order[slot[b]] = i
            slot[b] += 1
    for k in range(total):
        i = order[k]
        b = event_bin[i]
        tau = (scale * (t[i] - t0)) / delta
        grid = grid_pos if positive[i] else grid_neg
        index = b * plane + yi[i] * width + xi[i]
        grid[index] = np.float32(np.float64(grid[index]) + (1.0 - (tau - b)))  # float64 add, float32 round
        if b + 1 < bins:
            grid[index + plane] = np.float32(np.float64(grid[index + plane]) + (tau - b))


_grids_per_thread = threading.local()


def _zeroed_grids(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread V+/V- buffers reused across calls (2 x B*H*W float32; zeroed again after each use)."""
    grids = getattr(_grids_per_thread, "grids", None)
    if grids is None or grids[0].size != size:
        grids = (np.zeros(size, np.float32), np.zeros(size, np.float32))
        _grids_per_thread.grids = grids
    return grids


def _check_shape(bins: int, height: int, width: int) -> None:
    for name, value in (("bins", bins), ("height", height), ("width", width)):
        if int(value) != value or value <= 0:
            raise ValueError(f"voxel_grid {name} must be a positive integer, got {value!r}")


def _coordinate_as_int32(values: np.ndarray, name: str) -> np.ndarray:
    """Truncate toward zero like `astype(np.int32)`; NaN/overflow become INT32_MIN (dropped as out of frame)."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"voxel_grid {name} must be 1-D, got shape {values.shape}")
    if values.dtype.kind == "f":
        out = np.full(values.shape, _INT32_MIN, np.int32)
        finite = np.abs(values) < 2**31
        out[finite] = values[finite].astype(np.int32)
        return out
    if values.dtype.kind in "iub":
        return values.astype(np.int32, copy=False)
    raise TypeError(f"voxel_grid {name} must be integer or float, got {values.dtype}")


def _time_as_arithmetic(t: np.ndarray) -> np.ndarray:
    """int64 for integer times (exact differences), float64 for float times."""
    t = np.asarray(t)
    if t.ndim != 1:
        raise ValueError(f"voxel_grid t must be 1-D, got shape {t.shape}")
    if t.dtype.kind in "iu":
        return t.astype(np.int64, copy=False)
    if t.dtype.kind == "f":
        t = t.astype(np.float64, copy=False)
        if not np.isfinite(t).all():
            raise ValueError("voxel_grid t contains NaN or inf")
        return t
    raise TypeError(f"voxel_grid t must be integer or float, got {t.dtype}")


def voxel_grid(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray, *, bins: int, height: int, width: int
) -> np.ndarray:
    """Voxel grid of N events → float32 (bins, height, width), bit-identical to the official loader's.

    x, y: (N,) int or float (rectified) pixel coordinates; t: (N,) any integer or float time unit (only
    differences matter); p: (N,) polarity, 1 positive, anything else negative. Inputs are not modified.
    Single-threaded numba kernel that releases the GIL; each calling thread keeps two B*H*W float32 scratch
    grids (24 MB for DSEC) between calls.
    """
    _check_shape(bins, height, width)
    n = len(t)
    if not len(x) == len(y) == len(p) == n:
        raise ValueError(f"voxel_grid inputs differ in length: x {len(x)}, y {len(y)}, t {n}, p {len(p)}")
    size = bins * height * width
    if n == 0:
        return np.zeros((bins, height, width), np.float32)
    times = _time_as_arithmetic(t)
    delta = float(times[-1] - times[0])
    if delta == 0.0:
        delta = 1.0
    positive = np.asarray(p) == 1
    grid_pos, grid_neg = _zeroed_grids(size)
    try:
        _accumulate(
            _coordinate_as_int32(x, "x"),
            _coordinate_as_int32(y, "y"),
            times,
            positive,
            bins,
            height,
            width,
            times[0],
            delta,
            grid_pos,
            grid_neg,
        )
        grid = np.subtract(grid_pos, grid_neg)
    finally:
        grid_pos.fill(0.0)
        grid_neg.fill(0.0)
    return grid.reshape(bins, height, width)


def voxel_grid_torch(
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    p: torch.Tensor,
    *,
    bins: int,
    height: int,
    width: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Same grid with torch ops (scatter-add, GPU-capable) → float32 (bins, height, width) on `device`.

    Agrees with `voxel_grid` to float32 rounding: τ is computed identically (float64), but the weights are
    summed in float32 in an unspecified order. device: defaults to x's device. No host synchronisation
    (except the NaN check for float t): dropped events are routed to a spare cell past the grid instead of
    being filtered out.
    """
    _check_shape(bins, height, width)
    device = torch.device(device) if device is not None else x.device
    size = bins * height * width
    grid = torch.zeros(size + 1, dtype=torch.float32, device=device)  # [size] collects dropped events
    if t.numel() == 0:
        return grid[:size].view(bins, height, width)
    x, y, t, p = (v.to(device).reshape(-1) for v in (x, y, t, p))
    if t.is_floating_point():
        t = t.to(torch.float64)
        if not bool(torch.isfinite(t).all()):
            raise ValueError("voxel_grid_torch t contains NaN or inf")
        offset = (bins - 1) * (t - t[0])
    else:
        t = t.to(torch.int64)
        offset = ((bins - 1) * (t - t[0])).to(torch.float64)
    delta = (t[-1] - t[0]).to(torch.float64)
    tau = offset / torch.where(delta == 0, torch.ones_like(delta), delta)
    xt, yt = (torch.trunc(v.to(torch.float64)) if v.is_floating_point() else v.to(torch.int64) for v in (x, y))
    valid = (xt >= 0) & (xt < width) & (yt >= 0) & (yt < height) & (tau >= 0) & (tau < bins)
    b = torch.where(valid, tau, 0.0).to(torch.int64)
    frac = tau - b
    cell = torch.where(valid, yt * width + xt, 0).to(torch.int64)
    sign = torch.where(p == 1, 1.0, -1.0).to(torch.float64)
    spare = torch.full_like(cell, size)
    left = torch.where(valid, b * (height * width) + cell, spare)
    right = torch.where(valid & (b + 1 < bins), left + height * width, spare)
    grid.index_add_(0, left, (sign * (1.0 - frac)).to(torch.float32))
    grid.index_add_(0, right, (sign * frac).to(torch.float32))
    return grid[:size].view(bins, height, width)


def crop_bottom(grid: np.ndarray | torch.Tensor, rows: int) -> np.ndarray | torch.Tensor:
    """Drop the last `rows` rows of a (..., H, W) grid or image (DSEC: 40 rows, DDD17: 60); returns a view."""
    if rows < 0 or rows >= grid.shape[-2]:
        raise ValueError(f"crop_bottom rows must be in 0..{grid.shape[-2] - 1}, got {rows}")
    return grid[..., : grid.shape[-2] - rows, :]
