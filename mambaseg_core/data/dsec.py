"""DSEC-Semantic as MambaSeg's training reads it (spec §1.1, §1.2, §1.8).

Layout (`<root>/{train,test}/<seq>/`): `semantic/timestamps.txt`, `semantic/{11,19}classes/data/*.png`
(640x440), `events/left/{events.h5,rectify_map.h5}`, `images/left/ev_inf/*.png` (RGB 640x480).
`prepare_dsec` builds it from the official download.

A sample (dict of tensors) for label k of a sequence, with sensor size (H, W) = (480, 640) and
label_crop_bottom R = 40 for DSEC (L = H - R label rows):
    events  float32 (B=10, L, W): voxel grid of the last `num_events` events strictly before the label
            time, rectified, built at H x W and cropped by its bottom R rows
    image   float32 (3, L, W) in [0, 1]: the ev_inf image (H x W), bottom R rows cropped
    label   int64 (L, W): class ids, 255 = ignore
    sequence (str), timestamp_us (int, image clock)
The official loader returns the tuple `(events, image, label)`; the content is identical.

Other sensor sizes (e.g. the 160x120 synthetic world, `mambaseg_core.synthetic`): pass `sensor_size=(H, W)`
and `label_crop_bottom=R` (0 = labels cover the whole frame). The rectify map, images, labels and event
coordinates are checked against them. The defaults are DSEC's and give the official samples bit for bit.

Deliberate deviations from the official `DatasetProvider` (sample content unchanged):
- Sequences are selected by their folder *name* containing an official sequence name (the official code
  tests the whole path, so a root path containing e.g. `zurich_city_00_a` selects everything), and are
  sorted by name (the official order is the filesystem's `iterdir()` order).
- Only the requested split folder must exist (the official code asserts both `train/` and `test/`).
- `split="val"` reads `<root>/val/` when that folder exists (synthetic datasets have a held-out validation
  split there); without it "val" keeps the official meaning, an alias of "test".
- The h5 file is opened lazily in the process that reads it (DataLoader workers each open their own).
- Event windows come from `DsecEventReader`, which finds the window end with a binary search; the
  official numba scan gives the same index except where it misbehaves (a label time on an exact
  millisecond, spec §1.4 / §8.12), where it crashes or reads garbage.
- Errors (missing files, mismatched counts, no events before a label) raise `DatasetError` naming the
  file instead of a bare `assert`.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from mambaseg_core.events import DsecEventReader, crop_bottom, load_rectify_map, rectify, voxel_grid

from .errors import DatasetError
from .images import read_label_pil, read_rgb_image
from .transforms import DSEC_TRAIN_AUGMENT, AugmentOption, make_sample

DSEC_SEQUENCES: dict[str, tuple[str, ...]] = {
    "train": (
        "zurich_city_00_a",
        "zurich_city_01_a",
        "zurich_city_02_a",
        "zurich_city_04_a",
        "zurich_city_05_a",
        "zurich_city_06_a",
        "zurich_city_07_a",
        "zurich_city_08_a",
    ),
    "test": ("zurich_city_13_a", "zurich_city_14_c", "zurich_city_15_a"),
}
"""The official split (hard-coded in MambaSeg's `provider.py`)."""

SENSOR_HEIGHT, SENSOR_WIDTH = 480, 640
CROP_BOTTOM_ROWS = 40  # the car hood: DSEC labels cover rows 0..439 of the 480-row frame
LABEL_HEIGHT = SENSOR_HEIGHT - CROP_BOTTOM_ROWS
OFFICIAL_LABEL_SKIP = (250 // 100 + 1) * 2  # = 6: the official `remove_time_window=250` warm-up
OFFICIAL_LABEL_STRIDE = 2  # every second label (10 Hz)
OFFICIAL_NUM_EVENTS = 100_000  # events per sample (`nr_events_window`)


def scaled_num_events(pixels: int) -> int:
    """OFFICIAL_NUM_EVENTS per 640x480 frame scaled to a sensor of `pixels` pixels (at least 1000): the event
    window of the synthetic demo models (4000 at 128x96, 16000 at 256x192)."""
    return max(1000, round(OFFICIAL_NUM_EVENTS * pixels / (SENSOR_HEIGHT * SENSOR_WIDTH)))


def _sorted_pngs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(folder, "folder not found")
    entries = sorted(folder.iterdir(), key=lambda p: p.name)  # the official code sorts the path strings
    others = [p.name for p in entries if p.suffix != ".png"]
    if others:
        raise DatasetError(folder, f"expected only .png files, found {others[:3]}")
    return entries


def load_label_timestamps(path: Path) -> np.ndarray:
    """`semantic/timestamps.txt` as int64 (N,) µs in the image clock."""
    if not path.is_file():
        raise DatasetError(path, "timestamps file not found")
    try:
        return np.atleast_1d(np.loadtxt(path, dtype=np.int64))
    except ValueError as err:
        raise DatasetError(path, f"expected one integer (µs) per line ({err})") from err


def check_sensor_geometry(sensor_size: tuple[int, int], label_crop_bottom: int) -> tuple[int, int]:
    """Validate (H, W) and the label crop R (0 <= R < H); returns (H, W) as ints."""
    height, width = (int(v) for v in sensor_size)
    if height < 1 or width < 1:
        raise ValueError(f"sensor_size must be a positive (H, W), got {tuple(sensor_size)}")
    if not 0 <= label_crop_bottom < height:
        raise ValueError(
            f"label_crop_bottom must be in [0, {height}) for sensor height {height}, got {label_crop_bottom}"
        )
    return height, width


def read_rectify_map(path: Path, sensor_size: tuple[int, int]) -> np.ndarray:
    """`rectify_map.h5` → float32 (H, W, 2) checked against `sensor_size`; problems as DatasetError naming the file."""
    try:
        return load_rectify_map(path, sensor_size)
    except (OSError, KeyError, ValueError) as err:
        raise DatasetError(path, str(err).removeprefix(f"{path}: ")) from err


class DsecSequenceFiles:
    """The files of one sequence, paired by position and checked for equal counts (all N labels)."""

    def __init__(self, path: Path, classes: int = 11):
        if classes not in (11, 19):
            raise ValueError(f"classes must be 11 or 19, got {classes}")
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(self.path, "sequence folder not found")
        self.timestamps_path = self.path / "semantic" / "timestamps.txt"
        self.timestamps = load_label_timestamps(self.timestamps_path)
        labels_dir = self.path / "semantic" / f"{classes}classes" / "data"
        images_dir = self.path / "images" / "left" / "ev_inf"
        self.labels = _sorted_pngs(labels_dir)
        self.images = _sorted_pngs(images_dir)
        self.events_h5 = self.path / "events" / "left" / "events.h5"
        self.rectify_map_h5 = self.path / "events" / "left" / "rectify_map.h5"
        n = len(self.timestamps)
        for folder, what, files in (
            (labels_dir, "label PNGs", self.labels),
            (images_dir, "ev_inf images", self.images),
        ):
            if len(files) != n:
                raise DatasetError(folder, f"{len(files)} {what} but {n} timestamps in {self.timestamps_path.name}")
        for file in (self.events_h5, self.rectify_map_h5):
            if not file.is_file():
                raise DatasetError(file, "file not found")


class DsecSequence(Dataset):
    """One DSEC-Semantic sequence: sample i uses label `label_skip + i·label_stride`.

    Args:
        path: the sequence folder (`<root>/<split>/<seq>`).
        classes: 11 or 19 (label folder `semantic/{classes}classes/data`).
        num_events: events per sample in fixed-count mode (official: 100,000).
        bins: voxel-grid temporal bins (official: 10).
        window_ms: if set, use fixed-duration windows instead of a fixed count (official `fixed_duration`,
            unused by the released configs): `window_chunks` consecutive windows of `window_ms` each,
            ending at the label time, whose grids are concatenated along channels (B·chunks channels).
        label_skip, label_stride: label selection (official: skip 6, every second).
        sensor_size: (H, W) of the event sensor, the rectify map and the ev_inf images (DSEC: 480x640).
        label_crop_bottom: rows R cut from the bottom of events and image; labels are (H - R) x W (DSEC: 40).
        augment: a `JointAugment`, None, or "official" (`DSEC_TRAIN_AUGMENT`; pass None for evaluation).
        generator: torch generator for augmentation draws (default: torch's global RNG).
    """

    def __init__(
        self,
        path: Path,
        *,
        classes: int = 11,
        num_events: int = OFFICIAL_NUM_EVENTS,
        bins: int = 10,
        window_ms: int | None = None,
        window_chunks: int = 1,
        label_skip: int = OFFICIAL_LABEL_SKIP,
        label_stride: int = OFFICIAL_LABEL_STRIDE,
        sensor_size: tuple[int, int] = (SENSOR_HEIGHT, SENSOR_WIDTH),
        label_crop_bottom: int = CROP_BOTTOM_ROWS,
        augment: AugmentOption = None,
        generator: torch.Generator | None = None,
    ):
        self.sensor_size = check_sensor_geometry(sensor_size, label_crop_bottom)
        self.label_crop_bottom = label_crop_bottom
        if num_events < 1 or bins < 1 or window_chunks < 1 or label_skip < 0 or label_stride < 1:
            raise ValueError("num_events, bins, window_chunks, label_stride must be >= 1 and label_skip >= 0")
        if window_ms is not None and window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms}")
        self.files = DsecSequenceFiles(path, classes)
        self.name = self.files.path.name
        self.num_events = num_events
        self.bins = bins
        self.window_ms = window_ms
        self.window_chunks = window_chunks
        self.augment = DSEC_TRAIN_AUGMENT if augment == "official" else augment
        self.generator = generator
        # Samples: every `label_stride`-th label after the first `label_skip` ones.
        self.label_indices = np.arange(label_skip, len(self.files.timestamps), label_stride)
        self.rectify_map = read_rectify_map(self.files.rectify_map_h5, self.sensor_size)
        self._reader: DsecEventReader | None = None
        self._reader_pid = -1

    def __len__(self) -> int:
        return len(self.label_indices)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"], state["_reader_pid"] = None, -1  # h5 handles never cross process boundaries
        return state

    @property
    def reader(self) -> DsecEventReader:
        """The events.h5 reader of this process, opened on first use (also after a fork)."""
        if self._reader is None or self._reader_pid != os.getpid():
            try:
                self._reader = DsecEventReader(self.files.events_h5)
            except (OSError, KeyError) as err:  # corrupt file, or not a DSEC events.h5
                raise DatasetError(self.files.events_h5, f"cannot read as a DSEC events.h5 ({err})") from err
            self._reader_pid = os.getpid()
        return self._reader

    def timestamp_us(self, index: int) -> int:
        return int(self.files.timestamps[self.label_indices[index]])

    def window_bounds_us(self, t_end_us: int) -> list[tuple[int, int]]:
        """Integer `[t0, t1)` bounds of the fixed-duration sub-windows ending at `t_end_us`.

        The official bounds are the floats `start + i·(D/chunks)`; an integer time t satisfies
        `t >= bound` exactly when `t >= ceil(bound)`, so the integer bounds select the same events.
        """
        assert self.window_ms is not None
        duration_us = self.window_chunks * self.window_ms * 1000
        start, step = t_end_us - duration_us, duration_us / self.window_chunks
        bounds = [math.ceil(start + i * step) for i in range(self.window_chunks + 1)]
        return list(itertools.pairwise(bounds))

    def event_grid(self, t_end_us: int) -> np.ndarray:
        """float32 (B·chunks, H - R, W) event tensor for a label at `t_end_us` (image clock)."""
        if self.window_ms is None:
            windows = [self.reader.fixed_count_before(t_end_us, self.num_events)]
        else:
            windows = [self.reader.window(t0, t1) for t0, t1 in self.window_bounds_us(t_end_us)]
        height, width = self.sensor_size
        grids = []
        for batch in windows:
            if len(batch) == 0:
                raise DatasetError(
                    self.files.events_h5,
                    f"no events in the window before label time {t_end_us} µs; cannot build a voxel grid",
                )
            if batch.x.max() >= width or batch.y.max() >= height:
                raise DatasetError(
                    self.files.events_h5,
                    f"events outside the {width}x{height} (WxH) sensor: x up to {batch.x.max()}, "
                    f"y up to {batch.y.max()} (set sensor_size to the recording's)",
                )
            x_rect, y_rect = rectify(batch.x, batch.y, self.rectify_map)
            grid = voxel_grid(x_rect, y_rect, batch.t, batch.p, bins=self.bins, height=height, width=width)
            grids.append(crop_bottom(grid, self.label_crop_bottom))
        return np.concatenate(grids) if len(grids) > 1 else grids[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: sample {index} out of range [0, {len(self)})")
        k = int(self.label_indices[index])
        t_end_us = int(self.files.timestamps[k])
        height, width = self.sensor_size
        label = read_label_pil(self.files.labels[k], height - self.label_crop_bottom, width)
        image = crop_bottom(read_rgb_image(self.files.images[k], height, width), self.label_crop_bottom)
        events = self.event_grid(t_end_us)
        meta = {"sequence": self.name, "timestamp_us": t_end_us}
        return make_sample(image, label, events, self.augment, self.generator, **meta)


def select_sequences(split_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Sub-folders of `split_dir` whose name contains one of `names`, sorted by name."""
    if not split_dir.is_dir():
        raise DatasetError(split_dir, "split folder not found")
    return sorted(
        (child for child in split_dir.iterdir() if child.is_dir() and any(n in child.name for n in names)),
        key=lambda p: p.name,
    )


class DsecSemantic(ConcatDataset):
    """The DSEC-Semantic split `split`: "train", "test" or "val".

    "val" reads `<root>/val/` (sequence names as for "test") when that folder exists, and is otherwise an
    alias of "test", as in the official code. `sequences` overrides the official sequence names;
    `augment="official"` applies the official train augmentation to the train split only. Other keyword
    arguments (e.g. `sensor_size`, `label_crop_bottom`, `num_events`) go to `DsecSequence`.
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        *,
        sequences: tuple[str, ...] | None = None,
        augment: AugmentOption = "official",
        **sequence_kwargs: Any,
    ):
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be 'train', 'test' or 'val', got {split!r}")
        folder = split
        if split == "val" and not (Path(root) / "val").is_dir():
            folder = "test"  # the official meaning of "val"
        names = sequences or DSEC_SEQUENCES["train" if split == "train" else "test"]
        paths = select_sequences(Path(root) / folder, names)
        if not paths:
            raise DatasetError(Path(root) / folder, f"no sequence folder named like any of {list(names)}")
        if augment == "official":
            augment = DSEC_TRAIN_AUGMENT if split == "train" else None
        self.split = folder
        self.sequences = [DsecSequence(p, augment=augment, **sequence_kwargs) for p in paths]
        super().__init__(self.sequences)
