"""Event pipeline throughput: EVT3 decoding, voxelisation (one CPU core, and GPU), ring-buffer ingest.

Synthetic stream (seed 0): 20 M ev/s for 0.5 s on a 1280x720 sensor, events clustered along moving edges
and read out row by row (runs of x on one row share a timestamp, as in real EVT3 streams), split into 1 ms
packets like metavision_driver's. Targets: evt3 decode >= 50 M ev/s, CPU voxel >= 30 M ev/s on one core,
GPU voxel >= 1 G ev/s, ring ingest >= 20 M ev/s.

    python benchmarks/events.py            # all parts (GPU rows only when CUDA is available)
"""

from __future__ import annotations

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
from mambaseg_core.events.evt3 import _evt3_package

RATE_EV_PER_S, DURATION_S, WIDTH, HEIGHT = 20_000_000, 0.5, 1280, 720


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


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()  # warm-up (numba compile, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_decode(batch: EventBatch) -> list[list[object]]:
    rows: list[list[object]] = []
    for vectors in (False, True):
        whole = encode_evt3(batch, vectors=vectors)
        packets = packets_1ms(batch, vectors)
        label = "VECT_12 groups" if vectors else "ADDR_X only"
        for backend in ("numpy", "auto"):
            if backend == "auto" and _evt3_package is None:
                continue

            def run(backend: str = backend, packets: list[bytes] = packets) -> None:
                decoder = Evt3Decoder(backend=backend)
                for packet in packets:
                    decoder.decode(packet)

            seconds = best_of(run)
            name = "numpy reference" if backend == "numpy" else "Evt3Decoder auto (evt3 pkg + checks)"
            rows.append([f"evt3 decode, 1 ms packets, {label}", name, len(batch) / seconds / 1e6, ">= 50"])
        if _evt3_package is not None:
            seconds = best_of(lambda whole=whole: _evt3_package.Decoder(2048, 2048).feed(whole))
            rows.append([f"evt3 decode, one buffer, {label}", "evt3 package alone", len(batch) / seconds / 1e6, "-"])
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
        seconds = best_of(lambda x=x, y=y, t=t, p=p: voxel_grid(x, y, t, p, bins=10, height=480, width=640))
        rows.append([f"voxel 10x480x640, {n:,} ev ({layout})", "numba, 1 core", n / seconds / 1e6, ">= 30"])
    return rows


def bench_voxel_gpu(rng: np.random.Generator) -> list[list[object]]:
    if not torch.cuda.is_available():
        return []
    rows: list[list[object]] = []
    for n in (100_000, 10_000_000):
        t = torch.from_numpy(np.sort(rng.integers(0, 50_000, n))).cuda()
        x = torch.from_numpy(rng.uniform(0, 640, n).astype(np.float32)).cuda()
        y = torch.from_numpy(rng.uniform(0, 480, n).astype(np.float32)).cuda()
        p = torch.from_numpy(rng.integers(0, 2, n)).cuda()

        def run(x=x, y=y, t=t, p=p) -> None:
            voxel_grid_torch(x, y, t, p, bins=10, height=480, width=640)
            torch.cuda.synchronize()

        seconds = best_of(run, repeats=10)
        rows.append(
            [f"voxel 10x480x640, {n:,} ev", f"torch {torch.cuda.get_device_name(0)}", n / seconds / 1e6, ">= 1000"]
        )
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

    seconds = best_of(run)
    return [["ring buffer: 1 ms packets + last_n(100k) at 30 Hz", "numpy", len(batch) / seconds / 1e6, ">= 20"]]


def main() -> None:
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    batch = synthetic_stream(rng)
    rows = bench_decode(batch) + bench_voxel_cpu(rng) + bench_voxel_gpu(rng) + bench_ring(batch)
    body = table(["case", "implementation", "M events/s", "target"], rows)
    note = (
        f"Stream: {len(batch):,} synthetic events ({RATE_EV_PER_S / 1e6:.0f} M ev/s for {DURATION_S} s, "
        f"{WIDTH}x{HEIGHT}), best of 3 after a warm-up; CPU rows are single-threaded "
        f"(NUMBA_NUM_THREADS=1, torch 1 thread). `uniform` voxel rows scatter events over the whole frame "
        f"(cache-miss bound worst case); `edges` rows cluster them like real scenes. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs inflate times)."
    )
    print(body)
    write_section("Events", note + "\n\n" + body)


if __name__ == "__main__":
    main()
