"""Event pipeline throughput: EVT3 decoding, voxelisation (one CPU core, and GPU), ring-buffer ingest.

Synthetic stream (seed 0): 20 M ev/s for 0.5 s on a 1280x720 sensor, events clustered along moving edges
and read out row by row (runs of x on one row share a timestamp, as in real EVT3 streams), split into 1 ms
packets like metavision_driver's. Targets: evt3 decode >= 50 M ev/s, CPU voxel >= 30 M ev/s on one core,
GPU voxel >= 1 G ev/s, ring ingest >= 20 M ev/s. Each row: best and median of REPEATS timed runs after a
warm-up (the spread shows the machine's load).

    taskset -c 1 python benchmarks/events.py   # CPU rows ("Events"), plus the GPU section when CUDA is available
    python benchmarks/events.py --gpu-only     # only the GPU voxel rows ("Events (GPU voxel grid)")
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import numpy as np
import torch
from _report import table, write_section

from mambaseg_core.events import (
    EventBatch,
    EventRingBuffer,
    Evt3Decoder,
    encode_evt3,
    voxel_grid,
    voxel_grid_torch,
)
from mambaseg_core.events import voxel as voxel_module

try:  # the PyPI decoder, measured for comparison only
    import evt3 as evt3_package
except ImportError:
    evt3_package = None

RATE_EV_PER_S, DURATION_S, WIDTH, HEIGHT = 20_000_000, 0.5, 1280, 720
REPEATS = 7
GPU_NOTE = (
    "voxel_grid_torch on DSEC-like events (float32 rectified x/y uniform over 640x480, int64 µs t, uint8 p), "
    "10 bins, per backend (triton: one fused kernel + zeroing; torch: ~30 small kernels): eager calls (50 back "
    "to back per timing) and replays of one CUDA graph captured on fixed-size buffers with a count tensor; best "
    "and median of 7 timings. "
    "Command: `python benchmarks/events.py --gpu-only`."
)


def synthetic_stream(rng: np.random.Generator) -> EventBatch:
    """Edges sweeping across the sensor; events grouped into row bursts with a shared timestamp."""
    n = int(RATE_EV_PER_S * DURATION_S)
    bursts = n // 8
    t = np.sort(rng.integers(0, int(DURATION_S * 1e6), bursts))
    phase = rng.integers(0, 4, bursts)  # four edges
    edge_x = (t * (WIDTH / (DURATION_S * 1e6)) + phase * WIDTH / 4) % (WIDTH - 16)
    y = rng.integers(0, HEIGHT, bursts)
    p = rng.integers(0, 2, bursts)
    offsets = np.sort(rng.integers(0, 16, (bursts, 8)), axis=1)
    x = (edge_x[:, None].astype(np.int64) + offsets).reshape(-1)
    return EventBatch.from_arrays(x, np.repeat(y, 8), np.repeat(t, 8), np.repeat(p, 8))


def packets_1ms(batch: EventBatch, vectors: bool) -> list[bytes]:
    """The stream as ~1 ms EVT3 packets (each millisecond encoded on its own, starting with its clock words)."""
    edges = np.searchsorted(batch.t, np.arange(0, batch.t[-1] + 1001, 1000))
    return [encode_evt3(batch[a:b], vectors=vectors) for a, b in itertools.pairwise(edges) if b > a]


def timings(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, float]:
    """(best, median) seconds of `repeats` runs after one warm-up run (numba compile, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def rate_row(case: str, implementation: str, events: int, seconds: tuple[float, float], target: str) -> list[object]:
    best, median = seconds
    return [case, implementation, events / best / 1e6, events / median / 1e6, target]


def bench_decode(batch: EventBatch) -> list[list[object]]:
    rows: list[list[object]] = []
    for vectors in (False, True):
        packets = packets_1ms(batch, vectors)
        case = f"evt3 decode, 1 ms packets, {'VECT_12 groups' if vectors else 'ADDR_X only'}"
        for backend in ("numba", "numpy"):

            def run(backend: str = backend, packets: list[bytes] = packets) -> None:
                decoder = Evt3Decoder(WIDTH, HEIGHT, backend=backend)
                for packet in packets:
                    decoder.decode(packet)

            name = "Evt3Decoder numba (default)" if backend == "numba" else "Evt3Decoder numpy reference"
            rows.append(rate_row(case, name, len(batch), timings(run), ">= 50"))
        if evt3_package is not None:

            def run_package(packets: list[bytes] = packets) -> None:
                decoder = evt3_package.Decoder(2048, 2048)
                for packet in packets:
                    decoder.feed(packet)

            rows.append(
                rate_row(case, "PyPI evt3 package (Metavision semantics)", len(batch), timings(run_package), "-")
            )
    return rows


def bench_voxel_cpu(rng: np.random.Generator) -> list[list[object]]:
    rows: list[list[object]] = []
    for n, layout in [(100_000, "edges"), (100_000, "uniform"), (2_000_000, "edges"), (2_000_000, "uniform")]:
        t = np.sort(rng.integers(0, 50_000, n))
        if layout == "edges":
            x = (t * 640 // 50_000 + rng.normal(0, 4, n)).clip(0, 639).astype(np.float32)
        else:
            x = rng.uniform(0, 640, n).astype(np.float32)
        y = rng.uniform(0, 480, n).astype(np.float32)
        p = rng.integers(0, 2, n).astype(np.uint8)
        case = f"voxel 10x480x640, {n:,} ev ({layout})"
        seconds = timings(lambda x=x, y=y, t=t, p=p: voxel_grid(x, y, t, p, bins=10, height=480, width=640))
        rows.append(rate_row(case, "numba, 1 core", n, seconds, ">= 30"))
        if n == 100_000:  # a DSEC window: the caller's grid reused (no 12 MB allocation per call)
            out = np.empty((10, 480, 640), np.float32)
            seconds = timings(
                lambda x=x, y=y, t=t, p=p, out=out: voxel_grid(x, y, t, p, bins=10, height=480, width=640, out=out)
            )
            rows.append(rate_row(case, "numba, 1 core, out= reused", n, seconds, ">= 30"))
    return rows


def gpu_events(rng: np.random.Generator, n: int) -> list[torch.Tensor]:
    """DSEC-like rectified events on the GPU: float32 x/y, int64 µs t, uint8 p."""
    t = np.sort(rng.integers(0, 50_000, n))
    x = rng.uniform(0, 640, n).astype(np.float32)
    y = rng.uniform(0, 480, n).astype(np.float32)
    p = rng.integers(0, 2, n).astype(np.uint8)
    return [torch.from_numpy(a).cuda() for a in (x, y, t, p)]


def gpu_seconds(fn: Callable[[], object], calls: int = 50) -> tuple[float, float]:
    """(best, median) seconds per call over REPEATS batches of `calls` back-to-back calls, wall clock."""

    def batch() -> None:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()

    best, median = timings(batch)
    return best / calls, median / calls


def bench_voxel_gpu(rng: np.random.Generator) -> list[list[object]]:
    """Per backend (triton: one fused kernel; torch: ~30 small ones): eager calls, and CUDA-graph replays of the
    padded-buffer + count form (a fixed-rate pipeline's way: events copied into fixed buffers, one replay per
    frame)."""
    rows: list[list[object]] = []
    gpu = torch.cuda.get_device_name(0)
    backends = ["triton", "torch"] if voxel_module.triton is not None else ["torch"]
    for n in (100_000, 1_000_000, 10_000_000):
        events = gpu_events(rng, n)
        out = torch.empty(10, 480, 640, device="cuda")
        count = torch.tensor(n, device="cuda")
        case = f"voxel 10x480x640, {n:,} ev (uniform, float x/y)"
        for backend in backends:

            def call(backend: str = backend, events: list[torch.Tensor] = events, out=out, count=count) -> None:
                voxel_grid_torch(*events, bins=10, height=480, width=640, count=count, out=out, backend=backend)

            rows.append(rate_row(case, f"{backend} eager, {gpu}", n, gpu_seconds(call), ">= 1000"))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                call()  # warm-up (Triton compile, allocator) outside the capture
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                call()
            rows.append(rate_row(case, f"{backend} CUDA-graph replay, {gpu}", n, gpu_seconds(graph.replay), ">= 1000"))
            del graph
    return rows


def bench_ring(batch: EventBatch) -> list[list[object]]:
    edges = np.searchsorted(batch.t, np.arange(0, batch.t[-1] + 1001, 1000))
    packets = [batch[a:b] for a, b in itertools.pairwise(edges)]

    def run() -> None:
        buffer = EventRingBuffer(max_duration_us=100_000, max_events=2_000_000)
        for i, packet in enumerate(packets):
            buffer.append(packet)
            if i % 33 == 0:  # a 30 Hz frame: the 100k events before it, as the DSEC loader takes
                buffer.last_n(100_000, int(packet.t[-1]) + 1)

    return [rate_row("ring buffer: 1 ms packets + last_n(100k) at 30 Hz", "numba", len(batch), timings(run), ">= 20")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU voxel rows (own docs section)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    headers = ["case", "implementation", "M events/s (best)", "M events/s (median)", "target"]
    if not args.gpu_only:
        batch = synthetic_stream(rng)
        load_before = os.getloadavg()[0]
        body = table(headers, bench_decode(batch) + bench_voxel_cpu(rng) + bench_ring(batch))
        note = (
            f"Stream: {len(batch):,} synthetic events ({RATE_EV_PER_S / 1e6:.0f} M ev/s for {DURATION_S} s, "
            f"{WIDTH}x{HEIGHT}), best and median of {REPEATS} runs after a warm-up; single-threaded "
            f"(NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}, torch 1 thread, process pinned to "
            f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores). `uniform` voxel rows scatter events over "
            f"the whole frame (cache-miss bound worst case); `edges` rows cluster them like real scenes. "
            f"Load average (1 min) before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} "
            f"cores (other jobs inflate times; the best column is the least disturbed). GPU voxel grid: the "
            f"'Events (GPU voxel grid)' section, from `python benchmarks/events.py --gpu-only` on a CUDA machine."
        )
        print(body)
        write_section("Events", note + "\n\n" + body)
    if torch.cuda.is_available():
        body = table(headers, bench_voxel_gpu(rng))
        print(body)
        write_section("Events (GPU voxel grid)", GPU_NOTE + "\n\n" + body)
    elif args.gpu_only:
        sys.exit("--gpu-only needs a CUDA GPU")


if __name__ == "__main__":
    main()
