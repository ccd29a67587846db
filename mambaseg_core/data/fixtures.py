"""Tiny synthetic datasets in the real on-disk layouts (spec §6), for tests and demos.

Three kinds, each at the real sensor resolutions (the official loaders assume them):
- `write_dsec_fixture`: the layout MambaSeg reads (`<root>/{train,test}/<seq>/semantic/...`, events, ev_inf).
- `write_dsec_download_fixture`: the official download layout, input of `prepare_dsec`.
- `write_ddd17_fixture`: `ddd17_seg`-style `dir*` folders with memmaps, index files, images and masks.
Everything is derived from one seeded `np.random.default_rng`, so a seed gives identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

from .classes import DSEC19_TO_DSEC11, IGNORE_INDEX
from .events_h5 import write_dsec_events_h5, write_rectify_map

DSEC_T_OFFSET_US = 49_599_300_000
"""Event-stream → image-clock offset (µs) written to every fixture `events.h5`."""

DDD17_T0_NS = 1_487_000_000_000_000_000
DDD17_DIRS = ("dir0", "dir1", "dir3", "dir4", "dir5", "dir6", "dir7")  # the real folder names: no dir2
DDD17_MASK_FRAMES = (3, 5, 7)
"""1-based frame ids with a mask; dir5 gets only the first (the real dir5 has a single mask)."""

_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def dsec_label_times_us(n_labels: int, t_offset: int = DSEC_T_OFFSET_US) -> np.ndarray:
    """Label k at `t_offset + 100 ms + 50 ms·k + 137 µs` (int64, image clock); +137 keeps off ms boundaries."""
    return t_offset + 100_000 + 50_000 * np.arange(n_labels, dtype=np.int64) + 137


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array, _PNG_FAST):
        raise OSError(f"cannot write {path}")


def _block_image(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """uint8 (H, W, C) image of 12x16 flat random blocks: compresses to a few kB even at 1440x1080."""
    coarse = rng.integers(0, 256, (12, 16, channels), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST).reshape(height, width, channels)


def _block_labels(rng: np.random.Generator, height: int, width: int, num_classes: int) -> np.ndarray:
    """uint8 (H, W) label image made of 40-pixel blocks with values 0..K-1 and some 255."""
    blocks = rng.integers(0, num_classes, (-(-height // 40), -(-width // 40))).astype(np.uint8)
    blocks[rng.random(blocks.shape) < 0.05] = IGNORE_INDEX
    return np.kron(blocks, np.ones((40, 40), np.uint8))[:height, :width]


def _write_dsec_event_files(rng: np.random.Generator, events_dir: Path, label_times: np.ndarray, num_events: int):
    t_last_rel = int(label_times[-1]) - DSEC_T_OFFSET_US + 20_000
    t_rel = np.sort(rng.integers(0, t_last_rel + 1, num_events)).astype(np.uint32)
    x = rng.integers(0, 640, num_events)
    y = rng.integers(0, 480, num_events)
    p = rng.integers(0, 2, num_events)
    write_dsec_events_h5(events_dir / "events.h5", t_rel, x, y, p, DSEC_T_OFFSET_US)
    # Identity plus a periodic sub-pixel offset in [-1.25, 1.25]: exercises truncation toward zero
    # (-0.7 -> 0, kept) and the dropping of coordinates that leave the 640x480 frame (-1.25, 640.25).
    grid_x, grid_y = np.meshgrid(np.arange(640), np.arange(480))
    offsets = np.array([0.3, -0.7, 0.0, -1.25, 0.5, 1.25, -0.2], np.float32)
    rect = np.stack([grid_x + offsets[(3 * grid_x + grid_y) % 7], grid_y + offsets[(grid_x + 2 * grid_y) % 7]], -1)
    write_rectify_map(events_dir / "rectify_map.h5", rect)


def _write_timestamps(path: Path, times: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{int(t)}\n" for t in times))


def _dsec_labels(rng: np.random.Generator, n_labels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(label19, label11) pairs, 640x440; the 11-class label is the 19-class one mapped by §5.1."""
    pairs = []
    for _ in range(n_labels):
        label19 = _block_labels(rng, 440, 640, 19)
        pairs.append((label19, DSEC19_TO_DSEC11[label19]))
    return pairs


def write_dsec_fixture(
    root: Path,
    *,
    seed: int = 0,
    n_labels: int = 9,
    num_events: int = 40_000,
    sequences: dict[str, Sequence[str]] | None = None,
) -> Path:
    """Write a DSEC-Semantic tree in the layout MambaSeg reads; returns `root`.

    Per sequence: `n_labels` labels at `dsec_label_times_us`, `num_events` uniform events up to 20 ms after
    the last label, an ev_inf RGB 640x480 image per label. Defaults: one train and one test sequence.
    """
    rng = np.random.default_rng(seed)
    sequences = sequences or {"train": ["zurich_city_00_a"], "test": ["zurich_city_13_a"]}
    label_times = dsec_label_times_us(n_labels)
    for split, names in sequences.items():
        for name in names:
            seq = Path(root) / split / name
            _write_dsec_event_files(rng, seq / "events" / "left", label_times, num_events)
            _write_timestamps(seq / "semantic" / "timestamps.txt", label_times)
            _write_timestamps(seq / "images" / "timestamps.txt", label_times)
            for k, (label19, label11) in enumerate(_dsec_labels(rng, n_labels)):
                _write_png(seq / "semantic" / "19classes" / "data" / f"{k:06d}.png", label19)
                _write_png(seq / "semantic" / "11classes" / "data" / f"{k:06d}.png", label11)
                _write_png(seq / "images" / "left" / "ev_inf" / f"{k:06d}.png", _block_image(rng, 480, 640, 3))
    return Path(root)


def fixture_calibration() -> dict:
    """A `cam_to_cam.yaml` dict with DSEC-like intrinsics and small rectification / extrinsic rotations."""

    def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
        cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
        rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        return rot_z @ rot_y @ rot_x

    t_10 = np.eye(4)
    t_10[:3, :3] = rotation(0.004, -0.011, 0.002)
    t_10[:3, 3] = [-0.045, 0.001, -0.006]
    return {
        "intrinsics": {
            "camRect0": {"camera_matrix": [569.8, 569.8, 335.3, 221.2], "resolution": [640, 480]},
            "camRect1": {"camera_matrix": [1150.8, 1150.8, 723.8, 571.0], "resolution": [1440, 1080]},
        },
        "extrinsics": {
            "R_rect0": rotation(0.002, 0.010, -0.001).tolist(),
            "R_rect1": rotation(-0.001, 0.003, 0.002).tolist(),
            "T_10": t_10.tolist(),
        },
    }


def write_dsec_download_fixture(
    root: Path,
    *,
    seed: int = 0,
    n_labels: int = 7,
    num_events: int = 30_000,
    calibration: dict | None = None,
) -> Path:
    """Write the official DSEC download layout (spec §1.2) for two sequences; returns `root`.

    `<split>/<seq>/{11classes,19classes}/*.png`, `<seq>_semantic_timestamps.txt`, `events/left/*.h5`,
    `images/left/rectified/*.png` (1440x1080), `images/timestamps.txt`, `calibration/cam_to_cam.yaml`.
    The test sequence has one extra unlabelled image before and after the labels, so the image ↔ label
    pairing must go through the timestamps.
    """
    rng = np.random.default_rng(seed)
    label_times = dsec_label_times_us(n_labels)
    for split, name, extra in (("train", "zurich_city_00_a", False), ("test", "zurich_city_13_a", True)):
        seq = Path(root) / split / name
        _write_dsec_event_files(rng, seq / "events" / "left", label_times, num_events)
        _write_timestamps(seq / f"{name}_semantic_timestamps.txt", label_times)
        for k, (label19, label11) in enumerate(_dsec_labels(rng, n_labels)):
            _write_png(seq / "19classes" / f"{k:06d}.png", label19)
            _write_png(seq / "11classes" / f"{k:06d}.png", label11)
        image_times = label_times
        if extra:
            image_times = np.concatenate([label_times[:1] - 50_000, label_times, label_times[-1:] + 50_000])
        _write_timestamps(seq / "images" / "timestamps.txt", image_times)
        for k in range(len(image_times)):
            _write_png(seq / "images" / "left" / "rectified" / f"{k:06d}.png", _block_image(rng, 1080, 1440, 3))
        calib_path = seq / "calibration" / "cam_to_cam.yaml"
        calib_path.parent.mkdir(parents=True, exist_ok=True)
        calib_path.write_text(yaml.safe_dump(calibration or fixture_calibration()))
    return Path(root)


def ddd17_frame_times_ns(n_frames: int) -> np.ndarray:
    """Frame j (0-based) at `T0 + 100 ms + 50 ms·j`, int64 ns."""
    return DDD17_T0_NS + 100_000_000 + 50_000_000 * np.arange(n_frames, dtype=np.int64)


def write_ddd17_fixture(
    root: Path,
    *,
    seed: int = 0,
    n_frames: int = 8,
    num_events: int = 20_000,
    mask_frames: Sequence[int] = DDD17_MASK_FRAMES,
) -> Path:
    """Write `ddd17_seg`-style folders `dir0, dir1, dir3..dir7`; returns `root`.

    Masks exist for the 1-based frame ids `mask_frames` (dir5 gets only the first, like the real dir5).

    Events have µs-quantised ns timestamps (as the real ones). Three extra events sit exactly 1 µs before
    each frame, i.e. at the last timestamp of its window, which the official loader drops (spec §2.4).
    """
    rng = np.random.default_rng(seed)
    frame_times = ddd17_frame_times_ns(n_frames)
    for dir_name in DDD17_DIRS:
        folder = Path(root) / dir_name
        (folder / "index").mkdir(parents=True, exist_ok=True)
        t_us = rng.integers(0, (int(frame_times[-1]) - DDD17_T0_NS) // 1000, num_events)
        t = np.sort(np.concatenate([DDD17_T0_NS + 1000 * t_us, np.repeat(frame_times - 1000, 3)]))
        n = len(t)
        xyp = np.stack([rng.integers(0, 346, n), rng.integers(0, 260, n), rng.integers(0, 2, n)], axis=1)
        t.astype("<i8").tofile(folder / "events.dat.t")
        xyp.astype("<i2").tofile(folder / "events.dat.xyp")
        for window_ms in (10, 50, 250):
            index = np.stack(
                [
                    frame_times,
                    np.searchsorted(t, frame_times, side="left"),
                    np.searchsorted(t, frame_times - window_ms * 1_000_000, side="left"),
                ],
                axis=1,
            ).astype(np.int64)
            np.save(folder / "index" / f"index_{window_ms}ms.npy", index)
        for frame_id in range(1, n_frames + 1):
            _write_png(folder / "imgs" / f"img_{frame_id:08d}.png", _block_image(rng, 260, 346, 3))
        for frame_id in mask_frames[:1] if dir_name == "dir5" else mask_frames:
            _write_png(
                folder / "segmentation_masks" / f"segmentation_{frame_id:08d}.png", _block_labels(rng, 200, 346, 6)
            )
    return Path(root)
