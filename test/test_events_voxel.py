"""Voxel grid: bit-exact against a literal restatement of the official formula, torch agreement, edge cases."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mambaseg_core.events import crop_bottom, voxel_grid, voxel_grid_torch
from mambaseg_core.events import voxel as voxel_module


def literal_voxel_grid(x, y, t, p, bins: int, height: int, width: int) -> np.ndarray:
    """The official generate_voxel_grid (separate_pol=False), restated one event at a time in plain Python.

    Mirrors its order of float32 additions: per polarity grid, all left terms in event order, then all right.
    """
    t = [int(v) if np.issubdtype(np.asarray(t).dtype, np.integer) else float(v) for v in t]
    delta = t[-1] - t[0]
    if delta == 0:
        delta = 1.0
    positive = np.zeros(bins * height * width, np.float32)
    negative = np.zeros(bins * height * width, np.float32)
    terms = []
    for xv, yv, tv, pv in zip(x, y, t, p):
        tau = float((bins - 1) * (tv - t[0])) / float(delta)
        xi, yi = int(np.int32(xv)), int(np.int32(yv))  # truncation toward zero
        if not (0 <= xi < width and 0 <= yi < height and 0 <= tau < bins):
            continue
        b = int(tau)
        terms.append((positive if pv == 1 else negative, b * height * width + yi * width + xi, b, tau - b))
    for right in (False, True):
        for grid, index, b, frac in terms:
            if right and b + 1 >= bins:
                continue
            target = index + height * width if right else index
            grid[target] = np.float32(float(grid[target]) + (frac if right else 1.0 - frac))
    return (positive - negative).reshape(bins, height, width)


def add_at_voxel_grid(x, y, t, p, bins: int, height: int, width: int) -> np.ndarray:
    """The official vectorised form (np.add.at on float32 grids) on a float64 (N, 4) event array."""
    events = np.stack([x, y, t, p], -1).astype(np.float64)
    delta = events[-1, 2] - events[0, 2]
    delta = 1.0 if delta == 0 else delta
    xs, ys = events[:, 0].astype(np.int32), events[:, 1].astype(np.int32)
    ts = (bins - 1) * (events[:, 2] - events[0, 2]) / delta
    tis = ts.astype(np.int32)
    frac = ts - tis
    valid = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height) & (ts >= 0) & (ts < bins)
    grids = []
    for sel in (events[:, 3] == 1, events[:, 3] != 1):
        grid = np.zeros(bins * height * width, np.float32)
        m = valid & sel
        np.add.at(grid, xs[m] + ys[m] * width + tis[m] * width * height, 1.0 - frac[m])
        m = valid & sel & (tis + 1 < bins)
        np.add.at(grid, xs[m] + ys[m] * width + (tis[m] + 1) * width * height, frac[m])
        grids.append(grid.reshape(bins, height, width))
    return grids[0] - grids[1]


def random_events(rng: np.random.Generator, n: int, height: int, width: int, *, rectified: bool):
    if rectified:  # DSEC: float32 rectified coordinates, some negative (-0.7 → 0) and some beyond the frame
        x = rng.uniform(-1.5, width + 1.5, n).astype(np.float32)
        y = rng.uniform(-1.5, height + 1.5, n).astype(np.float32)
    else:  # DDD17: integer coordinates
        x, y = rng.integers(0, width, n).astype(np.int16), rng.integers(0, height, n).astype(np.int16)
    t = np.sort(rng.integers(0, 50_000, n)).astype(np.int64)
    p = rng.integers(0, 2, n).astype(np.uint8)
    return x, y, t, p


def assert_bit_exact(a: np.ndarray, b: np.ndarray) -> None:
    print("max abs diff", float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0)
    assert a.dtype == np.float32 and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.fixture(params=["sparse", "dense"])
def kernel(request, monkeypatch) -> str:
    """Force voxel_grid's sparse (touched cells only) or dense (whole-grid sweep) kernel."""
    monkeypatch.setattr(voxel_module, "_DENSE_BELOW_CELLS_PER_EVENT", 0 if request.param == "sparse" else 10**12)
    return request.param


@pytest.mark.parametrize("rectified", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_bit_exact_against_literal_and_add_at(seed: int, rectified: bool, kernel: str) -> None:
    rng = np.random.default_rng(seed)
    bins, height, width = int(rng.integers(1, 11)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    n = int(rng.integers(1, 400))  # small frames: many collisions, so the addition order matters
    x, y, t, p = random_events(rng, n, height, width, rectified=rectified)
    ours = voxel_grid(x, y, t, p, bins=bins, height=height, width=width)
    assert_bit_exact(ours, literal_voxel_grid(x, y, t, p, bins, height, width))
    assert_bit_exact(ours, add_at_voxel_grid(x, y, t, p, bins, height, width))


def test_bit_exact_on_unsorted_float_times_and_signed_polarity(kernel: str) -> None:
    rng = np.random.default_rng(7)
    n, bins, height, width = 500, 5, 4, 6
    x, y = rng.integers(-2, 8, n), rng.integers(-2, 6, n)
    t = rng.uniform(0.0, 1.0, n)  # unsorted: τ may be < 0 or >= bins → dropped
    p = rng.choice([-1, 1], n)
    ours = voxel_grid(x, y, t, p, bins=bins, height=height, width=width)
    assert_bit_exact(ours, literal_voxel_grid(x, y, t, p, bins, height, width))
    assert_bit_exact(ours, add_at_voxel_grid(x, y, t, p, bins, height, width))


@pytest.mark.parametrize(
    "coord_dtype, time_dtype, polarity",
    [
        (np.uint16, np.int64, "01"),  # EventBatch
        (np.int32, np.uint32, "signed"),
        (np.int64, np.float32, "bool"),
        (np.float64, np.float64, "01"),
        (np.float16, np.int16, "float"),
    ],
)
def test_bit_exact_for_each_input_dtype(coord_dtype, time_dtype, polarity: str, kernel: str) -> None:
    rng = np.random.default_rng(11)
    n, bins, height, width = 3000, 6, 7, 9
    kind = np.dtype(coord_dtype).kind
    x = rng.uniform(-1.5, width + 1, n) if kind == "f" else rng.integers(0, width + 2, n)
    y = rng.uniform(-1.5, height + 1, n) if kind == "f" else rng.integers(0, height + 2, n)
    x, y = x.astype(coord_dtype), y.astype(coord_dtype)
    t = np.sort(rng.integers(0, 3000, n)).astype(time_dtype)
    on = rng.integers(0, 2, n).astype(bool)
    p = {"01": on.astype(np.uint8), "signed": np.where(on, 1, -1), "bool": on, "float": on.astype(np.float32)}[polarity]
    ours = voxel_grid(x, y, t, p, bins=bins, height=height, width=width)
    assert_bit_exact(ours, literal_voxel_grid(x, y, t, p, bins, height, width))


def test_full_size_grid_with_dense_mixed_cells(kernel: str) -> None:
    """DSEC size (10x480x640): 100k events on a 24x24 patch, so most cells get both polarities."""
    rng = np.random.default_rng(5)
    n = 100_000
    x = rng.uniform(300, 324, n).astype(np.float32)
    y = rng.uniform(200, 224, n).astype(np.float32)
    t = np.sort(rng.integers(0, 50_000, n))
    p = rng.integers(0, 2, n).astype(np.uint8)
    ours = voxel_grid(x, y, t, p, bins=10, height=480, width=640)
    assert_bit_exact(ours, add_at_voxel_grid(x, y, t, p, 10, 480, 640))


def test_out_buffer_is_overwritten_and_work_buffers_stay_zero(kernel: str) -> None:
    rng = np.random.default_rng(9)
    out = np.full((4, 6, 5), 7.0, np.float32)  # stale content must not leak into the result
    for seed_events in range(3):  # repeated calls on one thread reuse its marks/scratch buffers
        x, y, t, p = random_events(rng, 400 + 100 * seed_events, 6, 5, rectified=True)
        got = voxel_grid(x, y, t, p, bins=4, height=6, width=5, out=out)
        assert got is out
        assert_bit_exact(out, literal_voxel_grid(x, y, t, p, 4, 6, 5))
        marks, scratch = voxel_module._work_per_thread.buffers  # the kernel's invariant: zero between calls
        assert not marks.any() and not scratch.any()
    for bad in (
        np.zeros((4, 6, 5), np.float64),
        np.zeros((4, 5, 6), np.float32),
        np.zeros((4, 6, 10), np.float32)[..., ::2],
    ):
        with pytest.raises(ValueError, match="out must be"):
            voxel_grid(x, y, t, p, bins=4, height=6, width=5, out=bad)


def test_rectified_negative_fraction_kept_and_out_of_frame_dropped() -> None:
    x = np.array([-0.7, -1.0, 3.9, 4.0, 0.0], np.float32)
    y = np.array([0.5, 0.0, 2.99, 0.0, -0.2], np.float32)
    t = np.array([0, 1, 2, 3, 4])
    p = np.array([1, 1, 0, 1, 1], np.uint8)
    grid = voxel_grid(x, y, t, p, bins=2, height=3, width=4)
    assert grid[:, 0, 0].sum() == pytest.approx(2.0)  # x=-0.7 → column 0; y=-0.2 → row 0
    assert grid[:, 2, 3].sum() == pytest.approx(-1.0)  # (3.9, 2.99) → (3, 2), OFF
    assert np.abs(grid).sum() == pytest.approx(3.0)  # x=-1.0 and x=4.0 dropped


def test_inputs_unchanged_and_empty_and_constant_time() -> None:
    rng = np.random.default_rng(1)
    x, y, t, p = random_events(rng, 200, 8, 8, rectified=True)
    p[::3] = 0
    copies = [a.copy() for a in (x, y, t, p)]
    voxel_grid(x, y, t, p, bins=4, height=8, width=8)
    for before, after in zip(copies, (x, y, t, p)):
        assert np.array_equal(before, after)
    empty = np.empty(0)
    assert not voxel_grid(empty, empty, empty, empty, bins=3, height=2, width=2).any()
    same_t = voxel_grid([0, 1], [0, 0], [5, 5], [1, 1], bins=3, height=1, width=2)  # Δ = 0 → Δ = 1.0
    assert same_t[0].tolist() == [[1.0, 1.0]] and not same_t[1:].any()


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        voxel_grid([0, 0], [0, 0], [0.0, np.nan], [1, 1], bins=2, height=1, width=1)
    with pytest.raises(ValueError, match="length"):
        voxel_grid([0], [0, 0], [0, 1], [1, 1], bins=2, height=1, width=1)
    with pytest.raises(ValueError, match="bins"):
        voxel_grid([0], [0], [0], [1], bins=0, height=1, width=1)
    with pytest.raises(TypeError, match="t must be integer or float"):
        voxel_grid([0], [0], np.array(["a"]), [1], bins=1, height=1, width=1)


def test_sum_equals_signed_event_count() -> None:
    rng = np.random.default_rng(2)
    x, y, t, p = random_events(rng, 5000, 48, 64, rectified=False)
    grid = voxel_grid(x, y, t, p, bins=10, height=48, width=64)
    expected = int(np.count_nonzero(p == 1)) - int(np.count_nonzero(p != 1))
    print("sum", float(grid.sum(dtype=np.float64)), "expected", expected)
    assert float(grid.sum(dtype=np.float64)) == pytest.approx(expected, abs=1e-3)


def _torch_matches_numpy(device: str, backend: str = "torch") -> None:
    rng = np.random.default_rng(4)
    for rectified in (True, False):
        x, y, t, p = random_events(rng, 20_000, 30, 40, rectified=rectified)
        expected = voxel_grid(x, y, t, p, bins=10, height=30, width=40)
        tensors = [torch.from_numpy(a.astype(np.int64) if a.dtype == np.uint8 else a) for a in (x, y, t, p)]
        got = voxel_grid_torch(*tensors, bins=10, height=30, width=40, device=device, backend=backend)
        diff = float((got.cpu() - torch.from_numpy(expected)).abs().max())
        print(device, backend, "rectified" if rectified else "integer", "max abs diff", diff)
        assert got.dtype == torch.float32 and got.device.type == device
        assert diff < 1e-4  # float32 sums of up to ~100 unit weights per cell, different order
    empty = torch.empty(0)
    assert not voxel_grid_torch(
        empty, empty, empty, empty, bins=2, height=3, width=4, device=device, backend=backend
    ).any()


def test_torch_edge_cases_match_numpy() -> None:
    """Unsorted float times (τ < 0 and τ >= B dropped), ±1 polarity, NaN/inf/boundary coordinates, int64 x."""
    rng = np.random.default_rng(8)
    n, bins, height, width = 4000, 5, 6, 7
    x = rng.uniform(-2, width + 1, n)
    x[:6] = [np.nan, np.inf, -np.inf, -1.0, -0.999, width - 1e-9]
    y = rng.uniform(-2, height + 1, n).astype(np.float32)
    t = rng.uniform(0.0, 1.0, n)
    p = rng.choice([-1, 1], n)
    for xs in (x, np.floor(np.nan_to_num(x, nan=-5, posinf=50, neginf=-50)).astype(np.int64)):
        expected = voxel_grid(xs, y, t, p, bins=bins, height=height, width=width)
        got = voxel_grid_torch(*(torch.from_numpy(a) for a in (xs, y, t, p)), bins=bins, height=height, width=width)
        diff = float((got - torch.from_numpy(expected)).abs().max())
        print(xs.dtype, "max abs diff", diff)
        assert diff < 1e-4


def test_torch_padded_buffer_with_count_and_out() -> None:
    """A fixed-size buffer + count (the CUDA-graph form) equals the call on the first count events."""
    rng = np.random.default_rng(6)
    x, y, t, p = random_events(rng, 3000, 30, 40, rectified=True)
    junk = random_events(rng, 700, 30, 40, rectified=True)  # padding: in-frame, later times; must be ignored
    padded = [torch.from_numpy(np.concatenate([a, b + 10**6 if a is t else b])) for a, b in zip((x, y, t, p), junk)]
    out = torch.full((10, 30, 40), 5.0)
    for count in (3000, 1):
        expected = voxel_grid(x[:count], y[:count], t[:count], p[:count], bins=10, height=30, width=40)
        got = voxel_grid_torch(*padded, bins=10, height=30, width=40, count=torch.tensor(count), out=out)
        diff = float((got - torch.from_numpy(expected)).abs().max())
        print("count", count, "max abs diff", diff)
        assert got is out and diff < 1e-4
    assert not voxel_grid_torch(*padded, bins=10, height=30, width=40, count=torch.tensor(0)).any()
    with pytest.raises(ValueError, match="out must be"):
        voxel_grid_torch(*padded, bins=10, height=30, width=40, out=torch.zeros(10, 30, 41))


def test_torch_matches_numpy_cpu() -> None:
    _torch_matches_numpy("cpu")


GPU_BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(voxel_module.triton is None, reason="no triton")),
]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: voxel_grid_torch on device")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_torch_matches_numpy_cuda(backend: str) -> None:
    _torch_matches_numpy("cuda", backend)


def test_torch_backend_errors() -> None:
    events = [torch.zeros(3)] * 4
    with pytest.raises(ValueError, match="backend must be"):
        voxel_grid_torch(*events, bins=2, height=2, width=2, backend="cuda")
    # The fused kernel needs the package, and a GPU or Triton's interpreter (conftest enables it without a GPU).
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if voxel_module.triton is None or not (torch.cuda.is_available() or interpreted):
        with pytest.raises(ValueError, match="backend='triton'"):
            voxel_grid_torch(*events, bins=2, height=2, width=2, backend="triton")


def captured(fn) -> torch.cuda.CUDAGraph:
    """A CUDA graph of fn(), after one warm-up call outside the capture (on a side stream, as torch asks)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CUDA-graph capture")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_torch_cuda_graph_replay_with_count_matches_numpy(backend: str) -> None:
    """Capture once on fixed-size buffers, refill them and replay for several counts (stale tails ignored)."""
    rng = np.random.default_rng(12)
    capacity, bins, height, width = 5000, 10, 30, 40
    dtypes = (torch.float32, torch.float32, torch.int64, torch.uint8)  # random_events' rectified dtypes
    buffers = [torch.zeros(capacity, dtype=dtype, device="cuda") for dtype in dtypes]
    count = torch.zeros((), dtype=torch.int64, device="cuda")
    out = torch.empty(bins, height, width, device="cuda")

    def refill(n: int) -> np.ndarray:
        events = random_events(rng, n, height, width, rectified=True)
        for buffer, values in zip(buffers, events):
            buffer[:n].copy_(torch.from_numpy(values))
        count.fill_(n)
        return voxel_grid(*events, bins=bins, height=height, width=width)

    def grid() -> torch.Tensor:
        return voxel_grid_torch(*buffers, bins=bins, height=height, width=width, count=count, out=out, backend=backend)

    refill(capacity)
    graph = captured(grid)
    for n in (capacity, 1234, 1):
        expected = refill(n)
        graph.replay()
        torch.cuda.synchronize()
        diff = float((out.cpu() - torch.from_numpy(expected)).abs().max())
        print("count", n, "max abs diff", diff)
        assert diff < 1e-4


def _ring(rng: np.random.Generator, slots: int, height: int, width: int, pinned: bool = False) -> list[torch.Tensor]:
    """A ring buffer's storage as the Segmenter hands it over: int16 x/y bits, int64 t, uint8 p (pinned or not)."""
    x, y = (rng.integers(0, size, slots).astype(np.int16) for size in (width, height))
    t, p = np.sort(rng.integers(0, 10**6, slots)), rng.integers(0, 2, slots).astype(np.uint8)
    return [torch.from_numpy(a).pin_memory() if pinned else torch.from_numpy(a) for a in (x, y, t, p)]


def _ring_window_grid(ring: list[torch.Tensor], first: int, count: int, bins: int, height: int, width: int):
    """The numba grid of `count` ring slots from `first` on, wrapping: the events copied out in order."""
    slots = (first + np.arange(count)) % ring[0].shape[0]
    x, y, t, p = (v.numpy()[slots] for v in ring)
    return voxel_grid(x.view(np.uint16), y.view(np.uint16), t, p, bins=bins, height=height, width=width)


CPU_BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(voxel_module.triton is None, reason="no triton: the fused kernel")),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ring_window_in_place_matches_the_window_copied_out(backend: str) -> None:
    """first + count + capacity over a ring's whole storage (wrapping or not, shorter than capacity) = the grid of the
    window's events copied out; the time span runs from slot first to the window's last slot."""
    rng = np.random.default_rng(21)
    slots, capacity, bins, height, width = 1000, 700, 10, 30, 40
    ring = _ring(rng, slots, height, width)
    ring[2][:] = torch.arange(slots) * 7 + 100  # sorted from slot 0: a window from slot 600 wraps onto earlier times
    ring[2][:300] += 7 * slots  # ... so make slots 0..299 the newest, as after a wrap
    for first, count in ((600, 700), (0, 700), (950, 60), (123, 1)):
        expected = _ring_window_grid(ring, first, count, bins, height, width)
        got = voxel_grid_torch(
            *ring, bins=bins, height=height, width=width, count=torch.tensor(count), first=torch.tensor(first),
            capacity=capacity, backend=backend,
        )  # fmt: skip
        diff = float((got - torch.from_numpy(expected)).abs().max())
        print(f"first {first} count {count}: max abs diff {diff:.2e}")
        assert diff < 1e-4 and float(got.abs().sum()) > 0
    with pytest.raises(ValueError, match="needs count, capacity"):
        voxel_grid_torch(*ring, bins=bins, height=height, width=width, first=torch.tensor(0), capacity=10)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: pinned host memory read by a kernel")
@pytest.mark.skipif(voxel_module.triton is None, reason="no triton: the fused kernel reads host memory in place")
def test_cuda_graph_reads_a_pinned_ring_in_place() -> None:
    """Captured once over a pinned host ring that the fused kernel reads where it lies, replayed after the ring and
    (first, count) change: each replay sees the storage as it is then."""
    rng = np.random.default_rng(22)
    slots, capacity, bins, height, width = 4000, 3000, 10, 30, 40
    ring = _ring(rng, slots, height, width, pinned=True)
    window = torch.zeros(2, dtype=torch.int64, device="cuda")  # (first, count), as in a PackedLayout
    out = torch.empty(bins, height, width, device="cuda")

    def grid() -> torch.Tensor:
        return voxel_grid_torch(
            *ring, bins=bins, height=height, width=width, device="cuda", count=window[1], first=window[0],
            capacity=capacity, out=out, backend="triton",
        )  # fmt: skip

    window.copy_(torch.tensor([3500, 3000]))
    graph = captured(grid)
    for first, count in ((3500, 3000), (10, 2500), (3999, 2)):
        ring[0].copy_(torch.from_numpy(rng.integers(0, width, slots).astype(np.int16)))  # new events, same memory
        window.copy_(torch.tensor([first, count]))
        graph.replay()
        torch.cuda.synchronize()
        expected = _ring_window_grid(ring, first, count, bins, height, width)
        diff = float((out.cpu() - torch.from_numpy(expected)).abs().max())
        print(f"first {first} count {count}: max abs diff {diff:.2e}")
        assert diff < 1e-4


def test_crop_bottom() -> None:
    grid = np.arange(2 * 5 * 3).reshape(2, 5, 3)
    assert crop_bottom(grid, 2).shape == (2, 3, 3) and np.array_equal(crop_bottom(grid, 2), grid[:, :3])
    assert crop_bottom(torch.zeros(10, 480, 640), 40).shape == (10, 440, 640)
    with pytest.raises(ValueError, match="rows"):
        crop_bottom(grid, 5)
