"""Validate a DSEC-Semantic or DDD17 root and summarise it (`mambaseg-check-data`).

Every problem is reported with the file it concerns and what was expected; checking goes on after a
problem so one run lists them all. Warnings are things the official loader would trip on but ours handles
(e.g. a label time on an exact millisecond).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter DSEC's events.h5 needs)
import numpy as np
from PIL import Image

from mambaseg_core.events import DsecEventReader

from . import ddd17, dsec
from .classes import CLASS_SETS, ClassSet
from .errors import DatasetError
from .images import read_label_cv2, read_label_pil


@dataclass
class CheckReport:
    """Problems (make the check fail), warnings, and summary lines."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def problem(self, path: Path | str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Record a `DatasetError` raised inside the block as a problem and carry on."""
        try:
            yield
        except DatasetError as err:
            self.problems.append(str(err))

    def format(self) -> str:
        lines = list(self.summary)
        lines += [f"WARNING {w}" for w in self.warnings]
        lines += [f"PROBLEM {p}" for p in self.problems]
        lines.append(f"{len(self.problems)} problem(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


class _LabelHistogram:
    def __init__(self, class_set: ClassSet):
        self.class_set = class_set
        self.counts = np.zeros(256, np.int64)

    def add(self, report: CheckReport, path: Path, label: np.ndarray) -> None:
        counts = np.bincount(label.ravel(), minlength=256)
        invalid = sorted(set(np.flatnonzero(counts).tolist()) - self.class_set.valid_ids())
        if invalid:
            report.problem(
                path,
                f"label values {invalid} are not {self.class_set.key} ids (0..{self.class_set.num_classes - 1}, 255)",
            )
        self.counts += counts

    def lines(self) -> list[str]:
        total = max(int(self.counts.sum()), 1)
        parts = [f"{name} {self.counts[k] / total:.1%}" for k, name in enumerate(self.class_set.names)]
        parts.append(f"ignore {self.counts[255] / total:.1%}")
        return [f"label histogram ({self.class_set.key}): " + ", ".join(parts)]


def _image_size(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), PIL mode) from the PNG header, without decoding."""
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except OSError as err:
        raise DatasetError(path, f"cannot read image ({err})") from err


def _check_dsec_events(report: CheckReport, files: dsec.DsecSequenceFiles, used_times: np.ndarray) -> tuple[int, float]:
    """Structure of events.h5 and coverage of the used label times; returns (events, seconds)."""
    path = files.events_h5
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        report.problem(path, f"cannot open as HDF5 ({err})")
        return 0, 0.0
    with h5:
        missing = [name for name in ("events/p", "events/t", "events/x", "events/y", "ms_to_idx") if name not in h5]
        if missing:
            report.problem(path, f"missing datasets {missing}")
            return 0, 0.0
        lengths = {name: h5[f"events/{name}"].shape[0] for name in "ptxy"}
        if len(set(lengths.values())) != 1:
            report.problem(path, f"events/p,t,x,y differ in length: {lengths}")
            return 0, 0.0
        n = lengths["t"]
        if n == 0:
            report.problem(path, "holds no events")
            return 0, 0.0
        try:
            t_first, t_last = int(h5["events/t"][0]), int(h5["events/t"][n - 1])
            ms_to_idx = np.asarray(h5["ms_to_idx"], np.int64)
        except OSError as err:  # typically a compressed chunk that cannot be decoded
            report.problem(path, f"cannot read events/t or ms_to_idx ({err})")
            return n, 0.0
        t_offset = int(h5["t_offset"][()]) if "t_offset" in h5 else 0
        if np.any(np.diff(ms_to_idx) < 0) or (len(ms_to_idx) and ms_to_idx[-1] > n):
            report.problem(path, "ms_to_idx must be non-decreasing and <= number of events")
    rel = used_times - t_offset
    before_stream = used_times[rel <= t_first]
    if len(before_stream):
        report.problem(
            path,
            f"no events before label time(s) {before_stream[:5].tolist()} µs (first event at {t_first + t_offset} µs)",
        )
    past_index = used_times[-(-rel // 1000) >= len(ms_to_idx)]
    if len(past_index):
        report.problem(
            path, f"ms_to_idx ({len(ms_to_idx)} ms) does not cover label time(s) {past_index[:5].tolist()} µs"
        )
    on_ms = used_times[rel % 1000 == 0]
    if len(on_ms):
        report.warnings.append(
            f"{path}: label time(s) {on_ms[:5].tolist()} µs fall on an exact millisecond"
            " (the official slicer misbehaves there)"
        )
    return n, (t_last - t_first) / 1e6


def _check_dsec_windows(report: CheckReport, files: dsec.DsecSequenceFiles, used_times: np.ndarray) -> None:
    """Read each used 100k-event window: decodable chunks, coordinates on the 640x480 sensor."""
    try:
        reader = DsecEventReader(files.events_h5)
    except (OSError, KeyError) as err:
        report.problem(files.events_h5, f"cannot read as a DSEC events.h5 ({err})")
        return
    with reader:
        for t_label in used_times.tolist():
            try:
                batch = reader.fixed_count_before(t_label, dsec.OFFICIAL_NUM_EVENTS)
            except (OSError, ValueError) as err:
                report.problem(files.events_h5, f"window before label time {t_label} µs unreadable ({err})")
                continue
            if len(batch) and (batch.x.max() >= dsec.SENSOR_WIDTH or batch.y.max() >= dsec.SENSOR_HEIGHT):
                report.problem(files.events_h5, f"events before label time {t_label} µs lie outside the 640x480 sensor")


def _check_rectify_map(report: CheckReport, path: Path) -> None:
    try:
        with h5py.File(path, "r") as h5:
            shape = h5["rectify_map"].shape if "rectify_map" in h5 else None
    except OSError as err:
        report.problem(path, f"cannot open as HDF5 ({err})")
        return
    if shape != (dsec.SENSOR_HEIGHT, dsec.SENSOR_WIDTH, 2):
        report.problem(path, f"rectify_map must have shape ({dsec.SENSOR_HEIGHT}, {dsec.SENSOR_WIDTH}, 2), got {shape}")


def _check_dsec_pngs(report: CheckReport, files: dsec.DsecSequenceFiles, histogram: _LabelHistogram, limit: int):
    """Label values and sizes, ev_inf sizes and modes, for the first `limit` frames (all when <= 0)."""
    count = len(files.labels) if limit <= 0 else limit
    for label_path, image_path in zip(files.labels[:count], files.images[:count]):
        with report.collecting():
            histogram.add(report, label_path, read_label_pil(label_path, dsec.LABEL_HEIGHT, dsec.SENSOR_WIDTH))
        with report.collecting():
            (width, height), mode = _image_size(image_path)
            if (width, height) != (dsec.SENSOR_WIDTH, dsec.SENSOR_HEIGHT) or mode != "RGB":
                expected = f"RGB {dsec.SENSOR_WIDTH}x{dsec.SENSOR_HEIGHT}"
                report.problem(image_path, f"ev_inf image must be {expected}, got {mode} {width}x{height}")


def _check_dsec_sequence(
    report: CheckReport, split: str, seq: Path, classes: int, histogram: _LabelHistogram, max_labels: int
) -> tuple[int, int, int]:
    """Checks one sequence and adds its summary line; returns (labels, samples, events)."""
    try:
        files = dsec.DsecSequenceFiles(seq, classes)
    except DatasetError as err:
        report.problems.append(str(err))
        return 0, 0, 0
    used = files.timestamps[dsec.OFFICIAL_LABEL_SKIP :: dsec.OFFICIAL_LABEL_STRIDE]
    if len(used) == 0:
        needed = dsec.OFFICIAL_LABEL_SKIP + 1
        report.problem(files.timestamps_path, f"{len(files.timestamps)} labels give no sample (needs >= {needed})")
    if np.any(np.diff(files.timestamps) <= 0):
        report.problem(files.timestamps_path, "timestamps must be strictly increasing")
    problems_before = len(report.problems)
    n_events, seconds = _check_dsec_events(report, files, used)
    if len(report.problems) == problems_before:  # the file is sound enough to read windows from
        _check_dsec_windows(report, files, used if max_labels <= 0 else used[:max_labels])
    _check_rectify_map(report, files.rectify_map_h5)
    _check_dsec_pngs(report, files, histogram, max_labels)
    rate = f"{n_events / seconds / 1e6:.2f} Mev/s" if seconds > 0 else "n/a"
    report.summary.append(
        f"{split}/{seq.name}: {len(files.timestamps)} labels, {len(used)} samples,"
        f" {n_events} events over {seconds:.1f} s ({rate})"
    )
    return len(files.timestamps), len(used), n_events


def check_dsec(root: Path, classes: int = 11, max_labels: int = 0) -> CheckReport:
    """Check both splits of a DSEC-Semantic root (the layout MambaSeg reads).

    `max_labels` > 0 limits the labels, images and event windows read per sequence.
    """
    report = CheckReport()
    histogram = _LabelHistogram(CLASS_SETS[f"dsec{classes}"])
    totals = np.zeros(3, np.int64)
    sequences = 0
    for split, names in dsec.DSEC_SEQUENCES.items():
        try:
            paths = dsec.select_sequences(Path(root) / split, names)
        except DatasetError as err:
            report.problems.append(str(err))
            continue
        if not paths:
            report.problem(Path(root) / split, f"no sequence folder named like any of {list(names)}")
        for seq in paths:
            totals += _check_dsec_sequence(report, split, seq, classes, histogram, max_labels)
            sequences += 1
    labels, samples, events = totals.tolist()
    report.summary.append(f"{sequences} sequences, {labels} labels, {samples} samples, {events} events")
    report.summary += histogram.lines()
    return report


def _check_ddd17_dir(report: CheckReport, folder: Path, histogram: _LabelHistogram) -> tuple[int, int, float]:
    """Checks one dir*; returns (masks, events, seconds)."""
    t_path, xyp_path = folder / "events.dat.t", folder / "events.dat.xyp"
    for path in (t_path, xyp_path):
        if not path.is_file():
            report.problem(path, "file not found")
            return 0, 0, 0.0
    t_size, xyp_size = t_path.stat().st_size, xyp_path.stat().st_size
    if t_size % 8:
        report.problem(t_path, f"size {t_size} is not a multiple of 8 (int64 timestamps)")
    n = t_size // 8
    if xyp_size != 6 * n:
        report.problem(xyp_path, f"size {xyp_size} != 6 x {n} events (int16 x, y, p)")
        return 0, n, 0.0
    if n == 0:
        report.problem(t_path, "holds no events")
        return 0, 0, 0.0
    t = np.memmap(t_path, dtype="<i8", mode="r", shape=(n,))
    xyp = np.memmap(xyp_path, dtype="<i2", mode="r", shape=(n, 3))
    index = None
    for window_ms in (10, 50, 250):
        path = folder / "index" / f"index_{window_ms}ms.npy"
        if window_ms != 50 and not path.is_file():
            report.warnings.append(f"{path}: missing (only index_50ms.npy is used by the official config)")
            continue
        try:
            loaded = ddd17.load_index(path)
        except DatasetError as err:
            report.problems.append(str(err))
            continue
        if np.any(loaded[:, 1] > n) or np.any(loaded[:, 2] > loaded[:, 1]):
            report.problem(path, f"end_idx must be <= {n} events and start_idx <= end_idx")
        elif window_ms == 50:
            index = loaded
    masks = sorted((folder / "segmentation_masks").glob("*.png"), key=str)
    if not masks:
        report.warnings.append(f"{folder / 'segmentation_masks'}: no masks (unzip segmentation_masks.zip?)")
    for mask in masks:
        with report.collecting():
            frame_id = ddd17.mask_frame_id(mask)
            histogram.add(report, mask, read_label_cv2(mask, ddd17.LABEL_HEIGHT, ddd17.SENSOR_WIDTH))
            image = ddd17.frame_image_path(folder, frame_id)
            if not image.is_file():
                hint = " (video.mp4 present: the dataset decodes it)" if (folder / "video.mp4").is_file() else ""
                report.problem(image, f"frame image not found{hint}")
            else:
                size, _ = _image_size(image)
                if size != (ddd17.SENSOR_WIDTH, ddd17.SENSOR_HEIGHT):
                    report.problem(
                        image, f"image must be {ddd17.SENSOR_WIDTH}x{ddd17.SENSOR_HEIGHT}, got {size[0]}x{size[1]}"
                    )
            if index is None:
                continue
            if frame_id > len(index):
                report.problem(mask, f"frame id {frame_id} beyond the {len(index)} rows of index_50ms.npy")
                continue
            _, end, start = (int(v) for v in index[frame_id - 1])
            window_t, window_xyp = np.asarray(t[max(start, 0) : end]), np.asarray(xyp[max(start, 0) : end])
            if len(np.unique(window_t)) < 2:
                report.problem(mask, f"its 50 ms window [{start}, {end}) has fewer than 2 distinct event timestamps")
            elif np.any(np.diff(window_t) < 0):
                report.problem(t_path, f"timestamps not sorted in window [{start}, {end})")
            x, y, p = window_xyp.T
            if len(x) and (
                x.min() < 0
                or x.max() >= ddd17.SENSOR_WIDTH
                or y.min() < 0
                or y.max() >= ddd17.SENSOR_HEIGHT
                or not np.isin(p, (0, 1)).all()
            ):
                report.problem(
                    xyp_path,
                    f"events in [{start}, {end}) outside x<{ddd17.SENSOR_WIDTH}, y<{ddd17.SENSOR_HEIGHT}, p in {{0,1}}",
                )
    return len(masks), n, (int(t[-1]) - int(t[0])) / 1e9


def check_ddd17(root: Path) -> CheckReport:
    """Check a DDD17 root (the folder holding dir*)."""
    report = CheckReport()
    histogram = _LabelHistogram(CLASS_SETS["ddd17"])
    dirs = sorted((p for p in Path(root).glob("dir*") if p.is_dir()), key=str)
    if len(dirs) < 7:
        report.problem(root, f"needs at least 7 dir* folders for the official split, found {[d.name for d in dirs]}")
    role = {i: split for split, indices in ddd17.DDD17_SPLIT_INDICES.items() for i in indices}
    for position, folder in enumerate(dirs):
        masks, n, seconds = _check_ddd17_dir(report, folder, histogram)
        rate = f"{n / seconds / 1e6:.2f} Mev/s" if seconds > 0 else "n/a"
        report.summary.append(
            f"{folder.name} ({role.get(position, 'unused')}): {masks} masks, {n} events over {seconds:.1f} s ({rate})"
        )
    report.summary += histogram.lines()
    return report


CHECKERS: dict[str, Callable[..., CheckReport]] = {"dsec": check_dsec, "ddd17": check_ddd17}


def guess_kind(root: Path) -> str:
    """ "ddd17" when `root` holds dir* folders, else "dsec"."""
    return "ddd17" if any(p.is_dir() for p in Path(root).glob("dir*")) else "dsec"
