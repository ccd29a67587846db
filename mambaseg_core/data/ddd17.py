"""DDD17 (`ddd17_seg`, ESS preprocessing of Ev-SegNet's labels) as MambaSeg's training reads it (spec §2).

Layout: `<root>/dir*/` with `events.dat.t` (int64 ns), `events.dat.xyp` (int16 N x 3), `index/index_{10,50,250}ms.npy`
((F, 3): t_img_ns, end_idx, start_idx), `segmentation_masks/segmentation_%08d.png` (346x200),
`imgs/img_%08d.png` (346x260; decoded from `video.mp4` when missing, see `extract_video_frames`).
Split (`sorted(dir*)`, at least 7): train = dirs[0, 2, 3, 5, 6], test = dirs[1] (dirs[4] = dir5 unused).

A sample (dict of tensors) for mask `segmentation_<id>.png`, frame row `id - 1` of the index:
    events  float32 (B=10, 200, 346): voxel grid of the window `[start_idx, end_idx)` (the `window_ms` before
            the image) minus the events at the window's last timestamp (official quirk, below), built at
            260x346 with ns timestamps, bottom 60 rows cropped
    image   float32 (1, 200, 346) in [0, 1]: PIL luma of the frame, bottom 60 rows cropped
    label   int64 (200, 346), 255 = ignore
    sequence (str, the dir name), frame_id (int)

Official quirk, reproduced on purpose: with one chunk the loader keeps `events[:searchsorted(t, t[-1])]`,
which drops every event carrying the window's last timestamp; a window with fewer than two distinct
timestamps is therefore empty and the official loader crashes — here it raises `DatasetError`.
Deliberate deviations (sample content unchanged): the split needs >= 7 `dir*` folders and says so; memmaps
are opened lazily per process; errors name the file; a mask id outside 1..F is an error (the official
`index[id - 1]` would silently read the last row for id 0).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mambaseg_core.events import Ddd17Events, crop_bottom, voxel_grid

from .errors import DatasetError
from .images import read_gray_image, read_label_cv2
from .transforms import DDD17_TRAIN_AUGMENT, AugmentOption, make_sample

DDD17_SPLIT_INDICES: dict[str, tuple[int, ...]] = {"train": (0, 2, 3, 5, 6), "test": (1,)}
"""Positions in `sorted(glob('dir*'))` (MambaSeg/EISNet `get_split`)."""

SENSOR_HEIGHT, SENSOR_WIDTH = 260, 346
CROP_BOTTOM_ROWS = 60
LABEL_HEIGHT = SENSOR_HEIGHT - CROP_BOTTOM_ROWS
WINDOWS_MS = (10, 50, 250)


def ddd17_split_dirs(root: Path, split: str) -> list[Path]:
    """The `dir*` folders of `split` ("train" or "test")."""
    if split not in DDD17_SPLIT_INDICES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    dirs = sorted((p for p in Path(root).glob("dir*") if p.is_dir()), key=lambda p: str(p))
    if len(dirs) < 7:
        raise DatasetError(
            root, f"needs at least 7 dir* folders for the official split, found {[d.name for d in dirs]}"
        )
    return [dirs[i] for i in DDD17_SPLIT_INDICES[split]]


def mask_frame_id(mask: Path) -> int:
    """`segmentation_00003925.png` → 3925 (the 1-based video frame id)."""
    try:
        return int(mask.name.split("_")[-1].split(".")[0])
    except ValueError:
        raise DatasetError(mask, "mask name must end in _<frame id>.png") from None


def frame_image_path(folder: Path, frame_id: int) -> Path:
    """`imgs/img_%08d.png`, or the official fallback `imgs/<id>.png` zero-filled to 14 characters."""
    primary = folder / "imgs" / f"img_{frame_id:08d}.png"
    if primary.is_file():
        return primary
    fallback = folder / "imgs" / f"{frame_id:08d}.png".zfill(14)
    return fallback if fallback.is_file() else primary


def load_index(path: Path) -> np.ndarray:
    """`index_{W}ms.npy` as int64 (F, 3): (t_img_ns, end_idx, start_idx)."""
    if not path.is_file():
        raise DatasetError(path, "index file not found")
    try:
        index = np.load(path)
    except (OSError, ValueError) as err:
        raise DatasetError(path, f"cannot read ({err})") from err
    if index.ndim != 2 or index.shape[1] != 3 or index.dtype.kind not in "iu":
        raise DatasetError(path, f"expected an integer (F, 3) array, got {index.dtype}{index.shape}")
    return index.astype(np.int64)


def extract_video_frames(folder: Path, overwrite: bool = False) -> int:
    """Decode `folder/video.mp4` into `folder/imgs/img_%08d.png` (first frame = 1); returns the frame count.

    The official instructions use `ffmpeg -i video.mp4 imgs/img_%08d.png`; cv2's FFmpeg backend decodes the
    same frames, with colour conversion that may differ by rounding.
    """
    video = folder / "video.mp4"
    if not video.is_file():
        raise DatasetError(video, "file not found (needed to create the missing imgs/)")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise DatasetError(video, "cannot open the video")
    (folder / "imgs").mkdir(exist_ok=True)
    count = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            target = folder / "imgs" / f"img_{count:08d}.png"
            if (overwrite or not target.exists()) and not cv2.imwrite(str(target), frame):
                raise DatasetError(target, "cannot write image")
    finally:
        capture.release()
    if count == 0:
        raise DatasetError(video, "no frame could be decoded")
    return count


def official_window_end(t: np.ndarray) -> int:
    """How many events of a window the official one-chunk loader keeps.

    The official code computes `searchsorted(t, t[0] + int((t[-1] - t[0]) / 1))`, i.e.
    `searchsorted(t, t[-1], 'left')`: every event carrying the last timestamp is dropped.
    """
    return int(np.searchsorted(t, t[-1], side="left"))


class Ddd17Segmentation(Dataset):
    """The DDD17 split `split` ("train" or "test").

    Args:
        root: folder holding the `dir*` folders (e.g. `.../ddd17_seg/data`).
        window_ms: 10, 50 (official) or 250: which `index_{W}ms.npy` selects the window; None = fixed count
            (official `fixed_duration=False`: the last `num_events` events before the image, all kept).
        num_events: events per sample when `window_ms` is None (official default 32,000).
        bins: voxel-grid temporal bins (official: 10).
        augment: a `JointAugment`, None, or "official" (`DDD17_TRAIN_AUGMENT` for train, none for test).
        decode_video: create missing `imgs/` from `video.mp4` at construction.
        generator: torch generator for augmentation draws (default: torch's global RNG).
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        *,
        window_ms: int | None = 50,
        num_events: int = 32_000,
        bins: int = 10,
        augment: AugmentOption = "official",
        decode_video: bool = True,
        generator: torch.Generator | None = None,
    ):
        if window_ms is not None and window_ms not in WINDOWS_MS:
            raise ValueError(f"window_ms must be one of {WINDOWS_MS} or None, got {window_ms}")
        if num_events < 1 or bins < 1:
            raise ValueError("num_events and bins must be >= 1")
        self.split = split
        self.dirs = ddd17_split_dirs(root, split)
        self.window_ms = window_ms
        self.num_events = num_events
        self.bins = bins
        if augment == "official":
            augment = DDD17_TRAIN_AUGMENT if split == "train" else None
        self.augment = augment
        self.generator = generator
        index_name = f"index_{window_ms or 50}ms.npy"  # fixed-count mode reads column 1 of the 50 ms file
        self.indices = {d.name: load_index(d / "index" / index_name) for d in self.dirs}
        self.masks: list[Path] = []
        for folder in self.dirs:
            masks = sorted((folder / "segmentation_masks").glob("*.png"), key=lambda p: str(p))
            for mask in masks:
                if not 1 <= mask_frame_id(mask) <= len(self.indices[folder.name]):
                    raise DatasetError(mask, f"frame id outside the {len(self.indices[folder.name])} index rows")
            if masks and decode_video and not frame_image_path(folder, mask_frame_id(masks[-1])).is_file():
                extract_video_frames(folder)
            self.masks += masks
        if not self.masks:
            raise DatasetError(
                Path(root), f"no segmentation_masks/*.png in the {split} dirs {[d.name for d in self.dirs]}"
            )
        self._events: dict[str, Ddd17Events] = {}
        self._events_pid = -1

    def __len__(self) -> int:
        return len(self.masks)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_events"], state["_events_pid"] = {}, -1  # memmaps are reopened in each process
        return state

    def events_of(self, folder: Path) -> Ddd17Events:
        """The event memmaps of `folder`, opened on first use in this process."""
        if self._events_pid != os.getpid():
            self._events, self._events_pid = {}, os.getpid()
        if folder.name not in self._events:
            try:
                self._events[folder.name] = Ddd17Events(folder)
            except (OSError, ValueError) as err:
                raise DatasetError(folder, f"cannot open events.dat.t/events.dat.xyp ({err})") from err
        return self._events[folder.name]

    def event_grid(self, folder: Path, frame_id: int) -> np.ndarray:
        """float32 (B, 200, 346) event tensor for the image `frame_id` of `folder`."""
        _, end, start = (int(v) for v in self.indices[folder.name][frame_id - 1])
        start = max(end - self.num_events, 0) if self.window_ms is None else max(start, 0)
        try:
            events = self.events_of(folder).slice(start, end)
        except IndexError as err:
            raise DatasetError(folder / "index", f"frame {frame_id}: {err}") from err
        keep = len(events.t_ns)
        if self.window_ms is not None and keep > 0:
            keep = official_window_end(events.t_ns)
        if keep == 0:
            raise DatasetError(
                folder / "events.dat.t",
                f"window [{start}, {end}) of frame {frame_id} has fewer than 2 distinct timestamps;"
                " the official loader cannot build a voxel grid from it",
            )
        x, y, t_ns, p = (a[:keep] for a in (events.x, events.y, events.t_ns, events.p))
        grid = voxel_grid(x, y, t_ns, p, bins=self.bins, height=SENSOR_HEIGHT, width=SENSOR_WIDTH)
        return crop_bottom(grid, CROP_BOTTOM_ROWS)

    def __getitem__(self, index: int) -> dict[str, Any]:
        mask = self.masks[index]
        folder = mask.parent.parent
        frame_id = mask_frame_id(mask)
        label = read_label_cv2(mask, LABEL_HEIGHT, SENSOR_WIDTH)
        image = read_gray_image(frame_image_path(folder, frame_id), SENSOR_HEIGHT, SENSOR_WIDTH)[:, :-CROP_BOTTOM_ROWS]
        events = self.event_grid(folder, frame_id)
        return make_sample(image, label, events, self.augment, self.generator, sequence=folder.name, frame_id=frame_id)
