"""Data-loading throughput (samples/s) for DSEC-Semantic and DDD17 at the real sizes, through a DataLoader.

Data: synthetic fixtures in the real layouts (mambaseg_core.data.fixtures) with realistic event counts:
DSEC 100,000 events per sample (the official window), DDD17 ~25k events per 50 ms window. Images are
flat-block PNGs, which decode faster than real photographs, so real image decoding costs a little more.
Rows: split (train = official augmentation, test = none) x DataLoader workers (0 = in-process, 2).
The first pass (worker start-up, numba JIT load) is not timed. Run: `python benchmarks/data_loading.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import table, write_section

from mambaseg_core.data import Ddd17Segmentation, DsecSemantic
from mambaseg_core.data.fixtures import write_ddd17_fixture, write_dsec_fixture

MIN_SECONDS = 3.0


def samples_per_second(dataset: torch.utils.data.Dataset, workers: int, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    for _ in loader:  # warm-up pass: worker start-up, first h5 open, numba cache load
        pass
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < MIN_SECONDS:
        for batch in loader:
            count += batch["events"].shape[0]
    return count / (time.perf_counter() - start)


class ZerosLike(torch.utils.data.Dataset):
    """Samples of the same tensor sizes, built for free: the DataLoader's own cost (collate, worker IPC)."""

    def __init__(self, sample: dict, length: int):
        self.shapes = {k: (v.shape, v.dtype) for k, v in sample.items() if isinstance(v, torch.Tensor)}
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return {k: torch.zeros(shape, dtype=dtype) for k, (shape, dtype) in self.shapes.items()}


def stage_times_ms(dataset, repeats: int = 10) -> tuple[float, float]:
    """(events: read + rectify + voxel grid, whole sample) in ms, in-process, median over `repeats`."""
    sequence = dataset.sequences[0] if hasattr(dataset, "sequences") else None
    event_times, sample_times = [], []
    for i in range(repeats):
        index = i % len(dataset)
        start = time.perf_counter()
        if sequence is not None:
            sequence.event_grid(sequence.timestamp_us(index % len(sequence)))
        else:
            mask = dataset.masks[index]
            dataset.event_grid(mask.parent.parent, int(mask.name.split("_")[-1].split(".")[0]))
        event_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        dataset[index]
        sample_times.append(time.perf_counter() - start)
    return 1000 * float(np.median(event_times)), 1000 * float(np.median(sample_times))


def main() -> None:
    torch.manual_seed(0)
    # DataLoader workers run with one torch thread; give the in-process rows the same, because with two
    # threads the default collate's torch.stack was 4-5x slower on the shared 2-core machine.
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # DSEC: 45 labels → 20 samples per sequence, >= 100k events before each; DDD17: 20 masks per dir.
        dsec_root = write_dsec_fixture(Path(tmp) / "dsec", n_labels=45, num_events=2_000_000)
        ddd17_root = write_ddd17_fixture(
            Path(tmp) / "ddd17", n_frames=41, num_events=1_000_000, mask_frames=range(3, 42, 2)
        )
        for name, make in (
            ("DSEC 10x440x640, 100k events", lambda split: DsecSemantic(dsec_root, split)),
            ("DDD17 10x200x346, 50 ms", lambda split: Ddd17Segmentation(ddd17_root, split)),
        ):
            for split in ("train", "test"):
                dataset = make(split)
                events_ms, sample_ms = stage_times_ms(dataset)
                for workers in (0, 2):
                    rate = samples_per_second(dataset, workers, batch_size=4)
                    rows.append([name, split, workers, rate, events_ms, sample_ms])
                    print(rows[-1], flush=True)
            zeros = ZerosLike(dataset[0], len(dataset))
            for workers in (0, 2):
                rows.append([name, "DataLoader only (zeros)", workers, samples_per_second(zeros, workers, 4), 0.0, 0.0])
                print(rows[-1], flush=True)
    headers = ["dataset", "split", "workers", "samples/s", "events ms (1 proc)", "sample ms (1 proc)"]
    body = table(headers, rows)
    load = os.getloadavg()[0]
    notes = (
        "DataLoader batch 4, shuffled, torch threads 1 in every process (workers use 1 anyway).\n"
        "train = official augmentation (scale, crop, flip on image, label and each of the 10 event bins);"
        " test = none. `events ms` = h5/memmap read + rectification + voxel grid; `sample ms` = the whole"
        " `__getitem__` (adds PNG decode and augmentation), both in-process medians.\n"
        "`DataLoader only (zeros)` rows time tensors of the same sizes created for free: the ceiling set by"
        " collation and worker-to-main transfer.\n"
        "Synthetic fixtures at real sizes; real photographs decode somewhat slower than the flat-block PNGs.\n"
        f"1-minute load average at the end of the run: {load:.1f} on {os.cpu_count()} cores."
    )
    if load > (os.cpu_count() or 1):
        notes += " Other jobs shared the machine, so the worker rows understate what free cores give."
    print(body)
    write_section("Data loading", body + "\n\n" + notes)


if __name__ == "__main__":
    main()
