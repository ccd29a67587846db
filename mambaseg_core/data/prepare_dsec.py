"""Convert the official DSEC-Semantic download into the layout MambaSeg reads (spec §1.2, §1.6).

Input, per `<source>/{train,test}/<seq>/` (the zips unpacked into one folder):
    11classes/*.png, 19classes/*.png, <seq>_semantic_timestamps.txt   (semantic zip; a per-sequence
                                                                        download's <seq>_semantic/<seq>/ works too)
    events/left/{events.h5, rectify_map.h5}
    images/left/rectified/*.png (1440x1080), images/timestamps.txt
    calibration/cam_to_cam.yaml
Output, per `<output>/{train,test}/<seq>/`:
    semantic/{11classes,19classes}/data/*.png, semantic/timestamps.txt   (copied)
    events/left/{events.h5, rectify_map.h5}                               (symlinked, hard-linked or copied)
    images/left/ev_inf/<label name>.png                                   (rectified frame warped into the event camera)
    images/timestamps.txt, calibration/cam_to_cam.yaml                    (copied)

The ev_inf warp is the infinite-depth homography of MambaSeg's `alignment.py`:
`P = K_r1 · R_r1_r0 · K_r0⁻¹` with `R_r1_r0 = R_rect1 · R_10 · R_rect0ᵀ`, evaluated on the 640x480 event
grid and applied with `cv2.remap(..., INTER_CUBIC)` (black border).
Deliberate differences from `alignment.py`, none of which changes a warped pixel:
- Only labelled frames are warped, chosen by timestamp when `images/timestamps.txt` exists (so the
  loader's positional pairing holds even if a sequence has unlabelled frames), and each output is named
  after its label file (identical names when every frame is labelled, as on the real data).
- The rotation part of `T_10` is projected onto the nearest rotation with an SVD (the official code uses
  scipy's `Rotation.from_matrix`); both agree to ~1e-9 on orthonormal input.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml

from .dsec import load_label_timestamps
from .errors import DatasetError

EVENT_HEIGHT, EVENT_WIDTH = 480, 640
LinkMode = Literal["symlink", "hardlink", "copy"]


def _intrinsic_matrix(camera_matrix: list[float], path: Path, key: str) -> np.ndarray:
    if len(camera_matrix) != 4:
        raise DatasetError(path, f"{key} must be [fx, fy, cx, cy], got {camera_matrix!r}")
    fx, fy, cx, cy = (float(v) for v in camera_matrix)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(matrix)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def load_calibration(path: Path) -> dict:
    """Read `cam_to_cam.yaml`, checking that the keys the warp needs are present."""
    if not path.is_file():
        raise DatasetError(path, "calibration file not found")
    calibration = yaml.safe_load(path.read_text())
    for keys in (("intrinsics", "camRect0", "camera_matrix"), ("intrinsics", "camRect1", "camera_matrix")):
        node = calibration
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise DatasetError(path, f"missing key {'.'.join(keys)}")
            node = node[key]
    for key in ("R_rect0", "R_rect1", "T_10"):
        if key not in calibration.get("extrinsics", {}):
            raise DatasetError(path, f"missing key extrinsics.{key}")
    return calibration


def event_to_frame_homography(calibration: dict, path: Path = Path("cam_to_cam.yaml")) -> np.ndarray:
    """(3, 3) homography from rectified event pixels (camRect0) to rectified frame pixels (camRect1)."""
    intrinsics, extrinsics = calibration["intrinsics"], calibration["extrinsics"]
    k_r0 = _intrinsic_matrix(intrinsics["camRect0"]["camera_matrix"], path, "intrinsics.camRect0.camera_matrix")
    k_r1 = _intrinsic_matrix(intrinsics["camRect1"]["camera_matrix"], path, "intrinsics.camRect1.camera_matrix")
    r_rect0 = _nearest_rotation(np.asarray(extrinsics["R_rect0"], np.float64))
    r_rect1 = _nearest_rotation(np.asarray(extrinsics["R_rect1"], np.float64))
    t_10 = np.asarray(extrinsics["T_10"], np.float64)
    if r_rect0.shape != (3, 3) or r_rect1.shape != (3, 3) or t_10.shape != (4, 4):
        raise DatasetError(path, "extrinsics R_rect0/R_rect1 must be 3x3 and T_10 4x4")
    r_r1_r0 = r_rect1 @ _nearest_rotation(t_10[:3, :3]) @ r_rect0.T  # translation ignored: infinite depth
    return k_r1 @ r_r1_r0 @ np.linalg.inv(k_r0)


def ev_inf_remap(homography: np.ndarray, height: int = EVENT_HEIGHT, width: int = EVENT_WIDTH) -> np.ndarray:
    """float32 (H, W, 2) `cv2.remap` map: for each event pixel (u, v), the frame pixel it looks at."""
    grid_u, grid_v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    points = np.stack([grid_u, grid_v, np.ones_like(grid_u)], axis=-1) @ homography.T
    return (points[..., :2] / points[..., 2:]).astype(np.float32)


def warp_to_event_camera(image: np.ndarray, remap: np.ndarray) -> np.ndarray:
    """Warp a rectified frame (H1, W1[, C]) into the event camera's view: (H, W[, C]), bicubic, black border."""
    # The official call (one 2-channel map, map2=None); OpenCV's stubs do not declare map2 optional.
    return cv2.remap(image, remap, None, interpolation=cv2.INTER_CUBIC)  # type: ignore[call-overload]


@dataclass(frozen=True)
class _DownloadSequence:
    """Where one sequence's files live in the download layout."""

    split: str
    name: str
    root: Path  # events, images, calibration
    semantic: Path  # 11classes, 19classes, <seq>_semantic_timestamps.txt


def _find_sequences(source: Path) -> list[_DownloadSequence]:
    found = []
    for split in ("train", "test"):
        split_dir = source / split
        if not split_dir.is_dir():
            continue
        for child in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.endswith("_semantic")):
            nested = split_dir / f"{child.name}_semantic" / child.name
            semantic = nested if (nested / "11classes").is_dir() else child
            if (semantic / "11classes").is_dir():
                found.append(_DownloadSequence(split, child.name, child, semantic))
    if not found:
        raise DatasetError(source, "no sequence with an 11classes/ folder under train/ or test/")
    return found


def _sorted_pngs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(folder, "folder not found")
    return sorted((p for p in folder.iterdir() if p.suffix == ".png"), key=lambda p: p.name)


def _place(source: Path, target: Path, link: LinkMode) -> None:
    if not source.is_file():
        raise DatasetError(source, "file not found")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    if link == "symlink":
        target.symlink_to(source.resolve())
    elif link == "hardlink":
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def _frames_for_labels(seq: _DownloadSequence, label_times: np.ndarray) -> list[Path]:
    """The rectified frame of each label: by timestamp when images/timestamps.txt exists, else by position."""
    frames = _sorted_pngs(seq.root / "images" / "left" / "rectified")
    times_path = seq.root / "images" / "timestamps.txt"
    if not times_path.is_file():
        if len(frames) != len(label_times):
            raise DatasetError(
                times_path,
                f"missing, and {len(frames)} rectified images != {len(label_times)} labels: cannot pair them",
            )
        return frames
    image_times = load_label_timestamps(times_path)
    if len(image_times) != len(frames):
        raise DatasetError(times_path, f"{len(image_times)} timestamps but {len(frames)} rectified images")
    position = {int(t): i for i, t in enumerate(image_times)}
    missing = [int(t) for t in label_times if int(t) not in position]
    if missing:
        raise DatasetError(times_path, f"no image at label time(s) {missing[:5]} µs")
    return [frames[position[int(t)]] for t in label_times]


def prepare_sequence(
    seq: _DownloadSequence, output: Path, *, link: LinkMode = "symlink", overwrite: bool = False, workers: int = 4
) -> Path:
    """Convert one sequence; returns its output folder."""
    out = output / seq.split / seq.name
    times_path = seq.semantic / f"{seq.name}_semantic_timestamps.txt"
    label_times = load_label_timestamps(times_path)
    for classes in ("11classes", "19classes"):
        folder = seq.semantic / classes
        if classes == "19classes" and not folder.is_dir():
            continue  # optional: the loader needs only the label set it is asked for
        labels = _sorted_pngs(folder)
        if len(labels) != len(label_times):
            raise DatasetError(folder, f"{len(labels)} label PNGs but {len(label_times)} timestamps")
        for label in labels:
            _place(label, out / "semantic" / classes / "data" / label.name, "copy")
    _place(times_path, out / "semantic" / "timestamps.txt", "copy")
    for name in ("events.h5", "rectify_map.h5"):
        _place(seq.root / "events" / "left" / name, out / "events" / "left" / name, link)
    calibration_path = seq.root / "calibration" / "cam_to_cam.yaml"
    _place(calibration_path, out / "calibration" / "cam_to_cam.yaml", "copy")
    if (seq.root / "images" / "timestamps.txt").is_file():
        _place(seq.root / "images" / "timestamps.txt", out / "images" / "timestamps.txt", "copy")

    calibration = load_calibration(calibration_path)
    remap = ev_inf_remap(event_to_frame_homography(calibration, calibration_path))
    frame_size = calibration["intrinsics"]["camRect1"].get("resolution")  # [width, height] when given
    label_names = [p.name for p in _sorted_pngs(seq.semantic / "11classes")]
    ev_inf_dir = out / "images" / "left" / "ev_inf"
    ev_inf_dir.mkdir(parents=True, exist_ok=True)

    def warp_one(frame: Path, name: str) -> None:
        target = ev_inf_dir / name
        if target.exists() and not overwrite:
            return
        image = cv2.imread(str(frame), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(frame, "cannot decode image")
        if frame_size is not None and [image.shape[1], image.shape[0]] != list(frame_size):
            raise DatasetError(frame, f"frame is {image.shape[1]}x{image.shape[0]}, calibration says {frame_size}")
        if not cv2.imwrite(str(target), warp_to_event_camera(image, remap)):
            raise DatasetError(target, "cannot write image")

    # cv2 releases the GIL in imread/remap/imwrite, so threads scale over cores.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(warp_one, _frames_for_labels(seq, label_times), label_names))
    return out


def prepare_dsec(
    source: Path,
    output: Path,
    *,
    link: LinkMode = "symlink",
    overwrite: bool = False,
    workers: int = 4,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Convert every labelled sequence under `source/{train,test}`; returns the output sequence folders."""
    source, output = Path(source), Path(output)
    if source.resolve() == output.resolve():
        raise DatasetError(output, "output must differ from the download folder")
    done = []
    for seq in _find_sequences(source):
        done.append(prepare_sequence(seq, output, link=link, overwrite=overwrite, workers=workers))
        log(f"prepared {seq.split}/{seq.name} -> {done[-1]}")
    return done
