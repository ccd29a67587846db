"""The MambaSeg/EISNet voxel grid (`generate_voxel_grid`, separate_pol=False), bit-exact, plus a GPU variant.

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

import os
import threading

import numba
import numpy as np
import torch

try:  # fused GPU kernel; CPU-only installs use the torch-ops path on every device
    import triton
    import triton.language as tl
except ImportError:
    triton = None

# Fewer grid cells per valid event than this: one sequential sweep of the whole grid (dense kernel) is cheaper
# than tracking the touched cells (sparse kernel). Measured crossover on a 10x480x640 grid: 50k-100k events.
_DENSE_BELOW_CELLS_PER_EVENT = 32


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _event_slots(x, y, t, polarity, bins, height, width, t0, delta):  # pragma: no cover - jit
    """The valid events' terms, in event order: (slot, right_weight, count).

    slot[j] = 2 * (left cell b*H*W + yi*W + xi) + (1 if negative), right_weight[j] = δ; entries past count
    are unused. Validity and τ, b, δ follow the module docstring exactly.
    """
    n = t.shape[0]
    plane = height * width
    scale = bins - 1
    slot = np.empty(n, np.int64)
    right_weight = np.empty(n, np.float64)
    count = 0
    for i in range(n):
        xv, yv = x[i], y[i]
        tau = (scale * (t[i] - t0)) / delta
        # -1 < v < W  <=>  0 <= trunc(v) < W, and false for NaN/inf (integer v: 0 <= v < W)
        if xv > -1 and xv < width and yv > -1 and yv < height and tau >= 0.0 and tau < bins:
            b = int(tau)
            slot[count] = 2 * (b * plane + int(yv) * width + int(xv)) + (polarity[i] != 1)
            right_weight[count] = tau - b
            count += 1
    return slot, right_weight, count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _accumulate_sparse(slot, right_weight, count, plane, out, marks, scratch):  # pragma: no cover - jit
    """Few events per cell: touch only the cells the events hit. out: (B*H*W,) float32, zeroed.

    marks: (B*H*W,) uint8, bit 0 / bit 1 = the cell gets a positive / negative term; scratch: (2*B*H*W,)
    float32 V+ (2c) / V- (2c+1) of the cells that get both. Both are zero on entry and on return.
    A cell of one polarity sums ±weight straight into out: rounding to nearest is symmetric under negation,
    so the running sum is exactly V+ or -V- (= V+ - V- there); mixed cells get out = V+ - V- at the end.
    """
    cells = out.shape[0]
    for j in range(count):
        left = slot[j] >> 1
        bit = 1 + (slot[j] & 1)
        marks[left] |= bit
        if left + plane < cells:
            marks[left + plane] |= bit
    for right in range(2):  # all left terms (bin b) in event order, then all right terms (bin b+1)
        for j in range(count):
            k = slot[j] + 2 * plane * right
            cell = k >> 1
            if cell >= cells:
                continue  # no right term in the last bin
            weight = right_weight[j] if right else 1.0 - right_weight[j]
            if marks[cell] == 3:  # float64 sum rounded to float32, as np.add.at on a float32 grid does
                scratch[k] = np.float32(np.float64(scratch[k]) + weight)
            else:
                out[cell] = np.float32(np.float64(out[cell]) + (-weight if k & 1 else weight))
    for j in range(count):
        left = slot[j] >> 1
        for c in (left, left + plane):
            if c < cells:
                if marks[c] == 3:
                    out[c] = scratch[2 * c] - scratch[2 * c + 1]
                    scratch[2 * c] = 0.0
                    scratch[2 * c + 1] = 0.0
                marks[c] = 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _accumulate_dense(slot, right_weight, count, plane, out, scratch):  # pragma: no cover - jit
    """Many events per cell: V+/V- of every cell in scratch ((2*B*H*W,) float32, zero on entry and on
    return), then one sequential sweep writes out = V+ - V- (out need not be zeroed) and clears scratch."""
    cells = out.shape[0]
    for right in range(2):  # all left terms (bin b) in event order, then all right terms (bin b+1)
        for j in range(count):
            k = slot[j] + 2 * plane * right
            if k >= 2 * cells:
                continue  # no right term in the last bin
            weight = right_weight[j] if right else 1.0 - right_weight[j]
            scratch[k] = np.float32(np.float64(scratch[k]) + weight)  # float64 sum rounded to float32
    for c in range(cells):
        out[c] = scratch[2 * c] - scratch[2 * c + 1]
        scratch[2 * c] = 0.0
        scratch[2 * c + 1] = 0.0


_work_per_thread = threading.local()


def _clean_work_buffers(cells: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's (cells,) uint8 marks and (2 * cells,) float32 scratch, all zero (the kernel leaves them
    so). Mostly untouched between calls, so little of the 27 MB (DSEC) becomes resident."""
    buffers = getattr(_work_per_thread, "buffers", None)
    if buffers is None or buffers[0].size != cells:
        buffers = (np.zeros(cells, np.uint8), np.zeros(2 * cells, np.float32))
        _work_per_thread.buffers = buffers
    return buffers


def _check_shape(bins: int, height: int, width: int) -> None:
    for name, value in (("bins", bins), ("height", height), ("width", width)):
        if int(value) != value or value <= 0:
            raise ValueError(f"voxel_grid {name} must be a positive integer, got {value!r}")


def _coordinate_for_kernel(values: np.ndarray, name: str) -> np.ndarray:
    """float32/float64/int32/uint16 pass through (the kernel truncates toward zero, dropping NaN and
    out-of-range values); other integers wrap to int32 like `astype(np.int32)`, other floats widen."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"voxel_grid {name} must be 1-D, got shape {values.shape}")
    if values.dtype in (np.float32, np.float64, np.int32, np.uint16):
        return values
    if values.dtype.kind == "f":
        return values.astype(np.float64)
    if values.dtype.kind in "iub":
        return values.astype(np.int32)
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


def _check_out(out: np.ndarray, bins: int, height: int, width: int) -> None:
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (bins, height, width):
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"voxel_grid out must be a float32 ({bins}, {height}, {width}) array, got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("voxel_grid out must be C-contiguous and writeable")


def voxel_grid(
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    *,
    bins: int,
    height: int,
    width: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Voxel grid of N events → float32 (bins, height, width), bit-identical to the official loader's.

    x, y: (N,) int or float (rectified) pixel coordinates; t: (N,) any integer or float time unit (only
    differences matter); p: (N,) polarity, 1 positive, anything else negative. Inputs are not modified.
    out: optional float32 (bins, height, width) C-contiguous array to overwrite and return (a caller-owned
    grid, e.g. pinned memory for the upload); without it a fresh zeroed grid is returned.
    Single-threaded numba kernels that release the GIL: a sparse one that touches only the cells the events
    hit (below one valid event per 32 cells) and a dense one that sweeps the grid once. Each calling thread
    keeps B*H*W uint8 marks and a 2*B*H*W float32 scratch grid (27 MB for DSEC) between calls.
    """
    _check_shape(bins, height, width)
    n = len(t)
    if not len(x) == len(y) == len(p) == n:
        raise ValueError(f"voxel_grid inputs differ in length: x {len(x)}, y {len(y)}, t {n}, p {len(p)}")
    if out is not None:
        _check_out(out, bins, height, width)
    if n == 0:
        grid = np.zeros((bins, height, width), np.float32) if out is None else out
        grid.fill(0.0)
        return grid
    times = _time_as_arithmetic(t)
    delta = float(times[-1] - times[0])
    if delta == 0.0:
        delta = 1.0
    p = np.asarray(p)
    polarity = p if p.dtype == np.uint8 else (p == 1).view(np.uint8)  # the kernels test == 1
    x, y = _coordinate_for_kernel(x, "x"), _coordinate_for_kernel(y, "y")
    slot, right_weight, count = _event_slots(x, y, times, polarity, bins, height, width, times[0], delta)
    cells = bins * height * width
    marks, scratch = _clean_work_buffers(cells)
    try:
        if count * _DENSE_BELOW_CELLS_PER_EVENT >= cells:
            grid = np.empty((bins, height, width), np.float32) if out is None else out
            _accumulate_dense(slot, right_weight, count, height * width, grid.reshape(-1), scratch)
        else:
            grid = np.zeros((bins, height, width), np.float32) if out is None else out
            if out is not None:
                grid.fill(0.0)
            _accumulate_sparse(slot, right_weight, count, height * width, grid.reshape(-1), marks, scratch)
    except BaseException:
        _work_per_thread.buffers = None  # interrupted mid-way: the buffers may not be zero any more
        raise
    return grid


if triton is not None:

    @triton.jit(do_not_specialize=["n", "ring"])  # one compilation for every event count and ring size
    def _voxel_kernel(  # pragma: no cover - GPU
        x_ptr, y_ptr, t_ptr, p_ptr, count_ptr, first_ptr, grid_ptr, n, ring, bins, height, width,
        HAS_COUNT: tl.constexpr, RING: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """One program per BLOCK events: τ, b, δ exactly as on the CPU (float64), then float32 atomic adds of
        both terms into the zeroed (B*H*W,) grid; invalid events and the last bin's right term are masked.
        RING: event k is at slot first + k of a `ring`-slot storage, wrapping to slot 0."""
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        if HAS_COUNT:
            count = tl.load(count_ptr).to(tl.int64)
        else:
            count = tl.zeros([], tl.int64) + n
        in_range = (offsets < n) & (offsets < count)
        last = tl.maximum(count - 1, 0)
        if RING:
            first = tl.load(first_ptr).to(tl.int64)
            slots = first + offsets
            slots = tl.where(slots >= ring, slots - ring, slots)
            last = first + last
            last = tl.where(last >= ring, last - ring, last)
        else:
            first = tl.zeros([], tl.int64)
            slots = offsets
        t0 = tl.load(t_ptr + first)
        span = (tl.load(t_ptr + last) - t0).to(tl.float64)
        span = tl.where(span == 0.0, 1.0, span)
        t = tl.load(t_ptr + slots, mask=in_range, other=0)
        tau = ((t - t0) * (bins - 1)).to(tl.float64) / span  # int64 product, then an IEEE float64 division
        x = tl.load(x_ptr + slots, mask=in_range, other=-1).to(tl.float64)
        y = tl.load(y_ptr + slots, mask=in_range, other=-1).to(tl.float64)
        # -1 < v < W  <=>  0 <= trunc(v) < W, and false for NaN
        valid = in_range & (x > -1.0) & (x < width) & (y > -1.0) & (y < height) & (tau >= 0.0) & (tau < bins)
        b = tl.where(valid, tau, 0.0).to(tl.int64)
        right_weight = tau - b.to(tl.float64)
        sign = tl.where(tl.load(p_ptr + slots, mask=in_range, other=0).to(tl.float64) == 1.0, 1.0, -1.0)
        left = (
            b * (height * width) + tl.where(valid, y, 0.0).to(tl.int64) * width + tl.where(valid, x, 0.0).to(tl.int64)
        )
        tl.atomic_add(grid_ptr + left, (sign * (1.0 - right_weight)).to(tl.float32), mask=valid, sem="relaxed")
        has_right = valid & (b + 1 < bins)
        tl.atomic_add(
            grid_ptr + left + height * width, (sign * right_weight).to(tl.float32), mask=has_right, sem="relaxed"
        )


def _voxel_grid_triton(
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    p: torch.Tensor,
    count: torch.Tensor | None,
    out: torch.Tensor,
    first: torch.Tensor | None = None,
    capacity: int | None = None,
) -> torch.Tensor:
    """The fused kernel: out.zero_() and one launch (t int64 or float64; inputs on out's device, or pinned host
    memory that the kernel reads in place). With `first`, x, y, t, p are a ring's storage (voxel_grid_torch)."""
    bins, height, width = out.shape
    ring = t.shape[0]
    n = capacity if first is not None and capacity is not None else ring
    out.zero_()
    block = 1024
    _voxel_kernel[(triton.cdiv(n, block),)](
        x, y, t, p, count if count is not None else t, first if first is not None else t, out, n, ring,
        bins, height, width, HAS_COUNT=count is not None, RING=first is not None, BLOCK=block,
    )  # fmt: skip
    return out


def reads_host_memory_in_place(device: torch.device | str) -> bool:
    """Whether voxel_grid_torch on `device` reads a ring's pinned host storage where it lies (the fused kernel on a
    CUDA device), rather than needing it on the device."""
    return triton is not None and torch.device(device).type == "cuda"


def _torch_voxel_backend(backend: str, device: torch.device) -> str:
    """Resolve voxel_grid_torch's backend argument ("auto" | "triton" | "torch") for `device`."""
    if backend == "auto":
        return "triton" if triton is not None and device.type == "cuda" else "torch"
    if backend == "triton":
        if triton is None:
            raise ValueError("voxel_grid_torch backend='triton' needs the triton package (pip install triton)")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"voxel_grid_torch backend='triton' runs on CUDA (or with TRITON_INTERPRET=1), not {device}"
            )
        return backend
    if backend != "torch":
        raise ValueError(f"voxel_grid_torch backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    return backend


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
    count: torch.Tensor | None = None,
    first: torch.Tensor | None = None,
    capacity: int | None = None,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Same grid on `device` (GPU-capable) → float32 (bins, height, width).

    Agrees with `voxel_grid` to float32 rounding: τ, b and δ are computed identically (float64), but the
    weights are summed in float32 in an unspecified order. device: defaults to x's device.
    count: optional 0-d integer tensor; only the first `count` events are used (x, y, t, p are then padded
    buffers of a fixed length N, t1 = t[count - 1]). out: optional float32 (bins, height, width) tensor on
    `device` to overwrite and return. With integer t there is no host synchronisation and every shape depends
    on N only, so the call can be captured in a CUDA graph once and replayed for any count (float t costs one
    sync for its NaN check).
    first (0-d integer tensor) with count and capacity: x, y, t, p (integer t) are a ring buffer's whole storage
    and the events are the `count` <= `capacity` slots from `first` on, wrapping from the last slot to slot 0;
    `capacity` fixes the work, so a CUDA graph replays for any first and count. On a CUDA device the fused kernel
    reads pinned host storage in place (reads_host_memory_in_place); elsewhere the storage is moved to `device`.
    backend: "triton" (one fused kernel plus the zeroing of out; CUDA, or TRITON_INTERPRET=1), "torch" (about
    30 small kernels, any device), "auto" (triton on CUDA when the package is importable, else torch).
    The torch path does no filtering: coordinates are clamped into a grid padded by one cell on each side of
    a row and column and two planes before and after the bins; out-of-frame events, events outside the time
    window (or past count) and the right term of the last bin land in the padding; the result is the interior.
    """
    _check_shape(bins, height, width)
    target = torch.device(device) if device is not None else x.device
    n = t.shape[0]
    for name, values in (("x", x), ("y", y), ("t", t), ("p", p)):
        if values.dim() != 1 or values.shape[0] != n:
            raise ValueError(f"voxel_grid_torch {name} must be 1-D with {n} entries like t, got {tuple(values.shape)}")
    if first is not None and (count is None or capacity is None or capacity < 0 or t.is_floating_point()):
        raise ValueError(
            "voxel_grid_torch first (a ring's storage) needs count, capacity >= 0 and integer t, got "
            f"count={count}, capacity={capacity}, t {t.dtype}"
        )
    if out is None:
        out = torch.empty(bins, height, width, dtype=torch.float32, device=target)
    elif (
        out.dtype != torch.float32
        or tuple(out.shape) != (bins, height, width)
        or out.device.type != target.type
        or target.index not in (None, out.device.index)
    ):
        raise ValueError(
            f"voxel_grid_torch out must be float32 ({bins}, {height}, {width}) on {target}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    if n == 0 or capacity == 0:
        return out.zero_()
    fused = _torch_voxel_backend(backend, target) == "triton"
    in_place = (
        fused and first is not None and target.type == "cuda" and all(v.is_pinned() for v in (x, y, t, p))
    )  # pinned host storage: read where it lies
    if not in_place:
        x, y, t, p = (v.to(target) for v in (x, y, t, p))
    if t.is_floating_point():
        t = t.to(torch.float64)
        if not bool(torch.isfinite(t if count is None else t[: int(count)]).all()):
            raise ValueError("voxel_grid_torch t contains NaN or inf")
    else:
        t = t.to(torch.int64)
    # In place, a window's (first, count) in pinned host memory are read there too (a frame's packed host buffer).
    if count is not None and not (in_place and count.is_pinned() and count.dtype == torch.int64):
        count = count.to(device=target, dtype=torch.int64)
    if first is not None and not (in_place and first.is_pinned() and first.dtype == torch.int64):
        first = first.to(device=target, dtype=torch.int64)
    if fused:
        return _voxel_grid_triton(
            x.contiguous(), y.contiguous(), t.contiguous(), p.contiguous(), count, out, first, capacity
        )
    if first is not None and capacity is not None:  # the window's slots in order, then the padded-buffer path below
        slots = torch.arange(capacity, device=target).add_(first).remainder_(n)
        x, y, t, p = (v[slots] for v in (x, y, t, p))
        n = capacity

    since_first = t - t[0]
    if count is None:
        span = since_first[-1]
    else:
        span = since_first.gather(0, (count - 1).clamp_min(0).view(1))  # (1,): a 0-d index would sync
    span = span.to(torch.float64)
    tau = (since_first * (bins - 1)) / torch.where(span == 0, 1.0, span)  # float64, as on the CPU
    in_window = tau >= 0
    if count is not None:
        in_window &= torch.arange(n, device=target) < count
    tau = torch.where(in_window, tau, -2.0)
    b = tau.clamp(max=bins).floor_()  # -2 or bins: both terms land in padding planes; else int(τ)
    right_weight = tau - b

    def padded_coordinate(v: torch.Tensor, size: int) -> torch.Tensor:
        """trunc(v) clamped to -1..size (NaN → -1): -1 and size are the padding cells."""
        if v.is_floating_point():
            return torch.nan_to_num(v, nan=-1.0).clamp_(-1, size).trunc_()
        return v.to(torch.int64).clamp(-1, size)

    padded_w, padded_plane = width + 2, (height + 2) * (width + 2)
    row_col = torch.add(padded_coordinate(x, width), padded_coordinate(y, height), alpha=padded_w)
    left = torch.add(row_col, b, alpha=padded_plane).add_(2 * padded_plane + padded_w + 1).long()
    sign = torch.where(p == 1, 1.0, -1.0)
    grid = torch.zeros((bins + 4) * padded_plane, dtype=torch.float32, device=target)
    grid.index_add_(0, left, torch.addcmul(sign, sign, right_weight, value=-1).float())  # sign * (1 - δ)
    grid.index_add_(0, left + padded_plane, (sign * right_weight).float())
    interior = grid.view(bins + 4, height + 2, width + 2)[2 : bins + 2, 1 : height + 1, 1 : width + 1]
    return out.copy_(interior)


def crop_bottom(grid: np.ndarray | torch.Tensor, rows: int) -> np.ndarray | torch.Tensor:
    """Drop the last `rows` rows of a (..., H, W) grid or image (DSEC: 40 rows, DDD17: 60); returns a view."""
    if rows < 0 or rows >= grid.shape[-2]:
        raise ValueError(f"crop_bottom rows must be in 0..{grid.shape[-2] - 1}, got {rows}")
    return grid[..., : grid.shape[-2] - rows, :]
