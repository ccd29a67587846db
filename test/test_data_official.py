"""Every sample equals MambaSeg's official loader logic, re-stated slowly and literally (spec §1.4, §1.8, §2.4, §3.1).

The oracles below follow the official code line by line (EventSlicer's millisecond bracket and backwards
scan, the DDD17 `searchsorted(t, t[0] + Δ)` window end, `generate_voxel_grid` as a per-event loop with
float32 accumulation in the official order, PIL/ToTensor image reads), without importing any project code
for the maths.
"""

from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path

import cv2
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
import torch
from PIL import Image

from mambaseg_core.data.ddd17 import Ddd17Segmentation
from mambaseg_core.data.dsec import DsecSemantic, DsecSequence
from mambaseg_core.data.errors import DatasetError
from mambaseg_core.data.fixtures import DSEC_T_OFFSET_US, write_ddd17_fixture, write_dsec_fixture

VOXEL_ATOL = 0.0  # bit-identical: the official float32 accumulation order is re-stated event by event

# ---------------------------------------------------------------------------------------------------------
# Oracles: the official logic, literally.


def official_voxel_grid(events: np.ndarray, height: int, width: int, bins: int = 10) -> np.ndarray:
    """`generate_voxel_grid(events, (H, W), bins, separate_pol=False)` as a per-event loop.

    events: (N, 4) [x, y, t, p]. float32 buffers; each `np.add.at` addition is done in float64 and rounded
    to float32, in the official call order: V+ left, V+ right, V- left, V- right; result V+ - V-.
    """
    rows = events.tolist()
    first, last = rows[0][2], rows[-1][2]
    delta = last - first
    if delta == 0:
        delta = 1.0
    positive: dict[int, float] = {}
    negative: dict[int, float] = {}
    terms = {True: ([], []), False: ([], [])}  # polarity → (left terms, right terms) in event order
    for x, y, t, p in rows:
        xi, yi = int(np.int32(x)), int(np.int32(y))
        ts = (bins - 1) * (t - first) / delta
        ti = int(ts)
        dt = ts - ti
        pol = -1 if p == 0 else p
        valid = 0 <= xi < width and 0 <= yi < height and 0 <= ts < bins
        if not valid:
            continue
        left, right = terms[pol == 1]
        if ti < bins:
            left.append((ti * width * height + yi * width + xi, abs(pol) * (1.0 - dt)))
        if ti + 1 < bins:
            right.append(((ti + 1) * width * height + yi * width + xi, abs(pol) * dt))
    for grid, is_positive in ((positive, True), (negative, False)):
        for index, value in terms[is_positive][0] + terms[is_positive][1]:
            grid[index] = float(np.float32(grid.get(index, 0.0) + value))
    dense_pos = np.zeros(bins * height * width, np.float32)
    dense_neg = np.zeros(bins * height * width, np.float32)
    dense_pos[list(positive)] = list(positive.values())
    dense_neg[list(negative)] = list(negative.values())
    return (dense_pos - dense_neg).reshape(bins, height, width)


class OfficialEventSlicer:
    """`EventSlicer` re-stated: ms bracket from ms_to_idx, then the numba index scan."""

    def __init__(self, h5_path: Path):
        with h5py.File(h5_path, "r") as h5:
            self.events = {k: h5[f"events/{k}"][:] for k in "ptxy"}
            self.ms_to_idx = np.asarray(h5["ms_to_idx"], dtype="int64")
            self.t_offset = int(h5["t_offset"][()]) if "t_offset" in h5 else 0

    @staticmethod
    def time_indices_offsets(time_array: np.ndarray, time_start_us, time_end_us) -> tuple[int, int]:
        if time_array.size == 0:
            # The numba code reads time_array[-1] of an empty array (undefined memory). When that does not
            # crash, the returned offsets are (0, 0): the only result consistent with the ms_to_idx bracket.
            return 0, 0
        if time_array[-1] < time_start_us:
            return time_array.size, time_array.size
        idx_start = -1
        for idx_from_start in range(0, time_array.size):
            if time_array[idx_from_start] >= time_start_us:
                idx_start = idx_from_start
                break
        assert idx_start >= 0
        idx_end = time_array.size
        for idx_from_end in range(time_array.size - 1, -1, -1):
            if time_array[idx_from_end] >= time_end_us:
                idx_end = idx_from_end
            else:
                break
        return idx_start, idx_end

    def ms2idx(self, time_ms: int) -> int:
        assert time_ms >= 0
        assert time_ms < self.ms_to_idx.size, "official ms2idx returns None here and the loader crashes"
        return int(self.ms_to_idx[time_ms])

    def get_events_fixed_num(self, t_end_us: int, nr_events: int) -> dict[str, np.ndarray]:
        t_end_us -= self.t_offset
        lower_idx = self.ms2idx(math.floor(t_end_us / 1000))
        upper_idx = self.ms2idx(math.ceil(t_end_us / 1000))
        conservative = self.events["t"][lower_idx:upper_idx]
        _, idx_end_offset = self.time_indices_offsets(conservative, t_end_us, t_end_us)
        end = lower_idx + idx_end_offset
        start = max(end - nr_events, 0)
        return {k: v[start:end] for k, v in self.events.items()}

    def get_events(self, t_start_us: float, t_end_us: float) -> dict[str, np.ndarray]:
        assert t_start_us < t_end_us
        t_start_us -= self.t_offset
        t_end_us -= self.t_offset
        start_ms_idx = self.ms2idx(math.floor(t_start_us / 1000))
        end_ms_idx = self.ms2idx(math.ceil(t_end_us / 1000))
        conservative = self.events["t"][start_ms_idx:end_ms_idx]
        idx_start, idx_end = self.time_indices_offsets(conservative, t_start_us, t_end_us)
        out = {k: v[start_ms_idx + idx_start : start_ms_idx + idx_end] for k, v in self.events.items() if k != "t"}
        # numpy 1.26 (the official pin) promotes uint32 + Python int to int64; numpy 2 needs the cast.
        out["t"] = conservative[idx_start:idx_end].astype(np.int64) + self.t_offset
        return out


def official_dsec_sample(seq: Path, index: int, *, classes=11, nr_events=100_000, fixed_duration=False, chunks=1):
    """`Sequence.__getitem__` (DSEC) with augmentation off → (events, image, label) numpy arrays."""
    timestamps = np.loadtxt(str(seq / "semantic" / "timestamps.txt"), dtype="int64")
    labels = sorted(str(e) for e in (seq / "semantic" / f"{classes}classes" / "data").iterdir())
    images = sorted(str(e) for e in (seq / "images" / "left" / "ev_inf").iterdir())
    assert len(labels) == timestamps.size == len(images)
    skip = (250 // 100 + 1) * 2
    timestamps, labels, images = timestamps[skip:], labels[skip:], images[skip:]
    assert index < (timestamps.size + 1) // 2
    label = np.array(Image.open(labels[index * 2]))
    ts_end = timestamps[index * 2]
    slicer = OfficialEventSlicer(seq / "events" / "left" / "events.h5")
    with h5py.File(seq / "events" / "left" / "rectify_map.h5", "r") as h5:
        rectify_map = h5["rectify_map"][()]

    def rectified_grid(data: dict[str, np.ndarray]) -> np.ndarray:
        assert np.max(data["x"]) < 640 and np.max(data["y"]) < 480
        xy_rect = rectify_map[data["y"], data["x"]]
        events = np.stack([xy_rect[:, 0], xy_rect[:, 1], data["t"], data["p"]], axis=-1)
        return official_voxel_grid(events, 480, 640)

    if fixed_duration:
        delta_t_us = chunks * 50 * 1000
        ts_start = ts_end - delta_t_us
        per = delta_t_us / chunks
        grids = [rectified_grid(slicer.get_events(ts_start + i * per, ts_start + (i + 1) * per)) for i in range(chunks)]
        event_tensor = np.concatenate(grids)
    else:
        data = slicer.get_events_fixed_num(ts_end, nr_events)
        event_tensor = rectified_grid(data)
    event_tensor = event_tensor[:, :-40, :]
    image = np.array(Image.open(images[index * 2])).astype(np.float32) / 255  # ToTensor
    image = image.transpose(2, 0, 1)[:, :-40, :]
    return event_tensor, image, label.astype(np.int64)


def official_ddd17_sample(mask_file: Path, window_ms: int = 50):
    """`DDD17Event.__getitem__` with augmentation off → (events, image, label) numpy arrays."""
    directory = mask_file.parent.parent
    label = cv2.imread(str(mask_file), 0)
    img_idx = int(mask_file.name.split("_")[-1].split(".")[0]) - 1
    index = np.load(directory / "index" / f"index_{window_ms}ms.npy")
    num_events = int((directory / "events.dat.t").stat().st_size / 8)
    t_events = np.memmap(directory / "events.dat.t", dtype="int64", mode="r", shape=(num_events, 1))
    xyp_events = np.memmap(directory / "events.dat.xyp", dtype="int16", mode="r", shape=(num_events, 3))
    _, event_idx, event_idx_before = index[img_idx]
    event_idx_before = max([event_idx_before, 0])
    events = np.concatenate(
        [
            np.array(t_events[event_idx_before:event_idx], dtype="int64"),
            np.array(xyp_events[event_idx_before:event_idx], dtype="int64"),
        ],
        -1,
    )[:, [1, 2, 0, 3]]
    t_ns = events[:, 2]
    delta_t_ns = int((t_ns[-1] - t_ns[0]) / 1)
    id_end = min(np.searchsorted(t_ns, t_ns[0] + delta_t_ns), events.shape[0])
    event_tensor = official_voxel_grid(events[0:id_end], 260, 346)[:, :-60, :]
    image = (
        np.array(Image.open(directory / "imgs" / f"img_{img_idx + 1:08d}.png").convert("L")).astype(np.float32) / 255
    )
    return event_tensor, image[None, :-60, :], label.astype(np.int64), events.shape[0] - id_end


def assert_sample_equal(sample: dict, expected: tuple) -> None:
    events, image, label = expected[:3]
    diff = np.abs(sample["events"].numpy() - events).max()
    print(f"events max diff {diff:.3g}, |events| sum {np.abs(events).sum():.1f}")
    assert sample["events"].dtype == torch.float32 and sample["image"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64
    assert sample["events"].shape == events.shape and np.abs(events).sum() > 0
    assert diff <= VOXEL_ATOL
    np.testing.assert_array_equal(sample["image"].numpy(), image)
    np.testing.assert_array_equal(sample["label"].numpy(), label)


# ---------------------------------------------------------------------------------------------------------
# DSEC


@pytest.fixture(scope="module")
def dsec_root(tmp_path_factory) -> Path:
    return write_dsec_fixture(tmp_path_factory.mktemp("dsec"))


@pytest.mark.parametrize("classes, num_events", [(11, 3000), (19, 100_000)])
def test_dsec_samples_equal_the_official_loader(dsec_root: Path, classes: int, num_events: int):
    for split in ("train", "test"):
        dataset = DsecSemantic(dsec_root, split, classes=classes, num_events=num_events, augment=None)
        assert len(dataset) == 2  # 9 labels → (9 - 5) // 2
        for i in range(len(dataset)):
            seq = dataset.sequences[0].files.path
            sample = dataset[i]
            assert sample["events"].shape == (10, 440, 640) and sample["image"].shape == (3, 440, 640)
            assert_sample_equal(sample, official_dsec_sample(seq, i, classes=classes, nr_events=num_events))


def test_dsec_label_selection_is_configurable(dsec_root: Path):
    path = dsec_root / "train" / "zurich_city_00_a"
    times = np.loadtxt(path / "semantic" / "timestamps.txt", dtype=np.int64)
    official = DsecSequence(path)
    assert [official.timestamp_us(i) for i in range(len(official))] == times[6::2].tolist()
    every = DsecSequence(path, label_skip=1, label_stride=1, num_events=500)
    assert len(every) == 8 and every.timestamp_us(0) == times[1]
    assert every[2]["timestamp_us"] == times[3]


def test_dsec_window_is_the_last_n_events_strictly_before_the_label(dsec_root: Path):
    seq = DsecSequence(dsec_root / "train" / "zurich_city_00_a", num_events=3000)
    all_t = OfficialEventSlicer(seq.files.events_h5).events["t"].astype(np.int64) + DSEC_T_OFFSET_US
    for i in range(len(seq)):
        t_label = seq.timestamp_us(i)
        batch = seq.reader.fixed_count_before(t_label, 3000)  # t in stream time, as the official slicer's
        end = int(np.searchsorted(all_t, t_label))
        assert len(batch) == 3000 and end > 3000
        np.testing.assert_array_equal(batch.t + DSEC_T_OFFSET_US, all_t[end - 3000 : end])
        assert all_t[end - 1] < t_label <= all_t[end]


@pytest.mark.parametrize("chunks", [1, 3])
def test_dsec_fixed_duration_windows_equal_the_official_loader(dsec_root: Path, chunks: int):
    seq_path = dsec_root / "test" / "zurich_city_13_a"
    seq = DsecSequence(seq_path, window_ms=50, window_chunks=chunks)
    sample = seq[1]
    assert sample["events"].shape == (10 * chunks, 440, 640)
    assert_sample_equal(sample, official_dsec_sample(seq_path, 1, fixed_duration=True, chunks=chunks))


def _copy_sequence(dsec_root: Path, tmp_path: Path, label_times: dict[int, int]) -> Path:
    """A copy of the train sequence whose label k is moved to `label_times[k]` (µs, image clock)."""
    seq = tmp_path / "zurich_city_00_a"
    shutil.copytree(dsec_root / "train" / "zurich_city_00_a", seq)
    times = np.loadtxt(seq / "semantic" / "timestamps.txt", dtype=np.int64)
    for k, t in label_times.items():
        times[k] = t
    (seq / "semantic" / "timestamps.txt").write_text("".join(f"{t}\n" for t in times))
    return seq


def test_dsec_label_on_an_exact_millisecond(dsec_root: Path, tmp_path: Path):
    # (t - t_offset) % 1000 == 0: the official slicer's bracket is empty (spec §1.4); its non-crashing
    # outcome is the window of events strictly before t, which is what we return.
    t_label = DSEC_T_OFFSET_US + 400_000
    seq_path = _copy_sequence(dsec_root, tmp_path, {6: t_label})
    seq = DsecSequence(seq_path, num_events=3000)
    assert seq.timestamp_us(0) == t_label
    assert_sample_equal(seq[0], official_dsec_sample(seq_path, 0, nr_events=3000))
    batch = seq.reader.fixed_count_before(t_label, 3000)
    slicer = OfficialEventSlicer(seq.files.events_h5)
    end = int(np.searchsorted(slicer.events["t"], 400_000, side="left"))
    np.testing.assert_array_equal(np.asarray(batch.x), slicer.events["x"][end - 3000 : end])


def test_dsec_label_with_no_events_before_it_is_a_clear_error(dsec_root: Path, tmp_path: Path):
    seq_path = _copy_sequence(dsec_root, tmp_path, {6: DSEC_T_OFFSET_US})  # before the first event
    with pytest.raises((DatasetError, ValueError), match="events"):
        DsecSequence(seq_path)[0]


def test_dsec_label_past_the_event_stream_is_a_clear_error(dsec_root: Path, tmp_path: Path):
    seq_path = _copy_sequence(dsec_root, tmp_path, {8: DSEC_T_OFFSET_US + 10_000_000_137})
    with pytest.raises((DatasetError, ValueError), match=r"events\.h5|ms_to_idx|beyond|after"):
        DsecSequence(seq_path)[1]


def test_dsec_layout_problems_name_the_file(dsec_root: Path, tmp_path: Path):
    seq_path = _copy_sequence(dsec_root, tmp_path, {})
    (seq_path / "images" / "left" / "ev_inf" / "000008.png").unlink()
    with pytest.raises(DatasetError, match=r"ev_inf: 8 ev_inf images but 9 timestamps"):
        DsecSequence(seq_path)
    shutil.copy(
        seq_path / "images" / "left" / "ev_inf" / "000007.png", seq_path / "images" / "left" / "ev_inf" / "000008.png"
    )
    small = np.zeros((480, 640), np.uint8)
    cv2.imwrite(str(seq_path / "semantic" / "11classes" / "data" / "000006.png"), small)
    with pytest.raises(DatasetError, match=r"000006\.png: label must be 640x440 \(WxH\), got 640x480"):
        DsecSequence(seq_path)[0]
    (seq_path / "events" / "left" / "events.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetError, match=r"events\.h5"):
        DsecSequence(seq_path)[1]
    (seq_path / "events" / "left" / "rectify_map.h5").unlink()
    with pytest.raises(DatasetError, match=r"rectify_map\.h5: file not found"):
        DsecSequence(seq_path)


def test_dsec_sequences_are_selected_by_folder_name_and_sorted(tmp_path: Path):
    # The root path itself contains a sequence name: the official substring test on the full path would
    # select every child folder; we look at the folder name only.
    root = write_dsec_fixture(
        tmp_path / "zurich_city_00_a_root",
        n_labels=7,
        num_events=2000,
        sequences={"train": ["zurich_city_04_a", "zurich_city_01_a_extra", "unrelated"], "test": []},
    )
    dataset = DsecSemantic(root, "train", augment=None, num_events=500)
    assert [s.name for s in dataset.sequences] == ["zurich_city_01_a_extra", "zurich_city_04_a"]
    with pytest.raises(DatasetError, match="test: split folder not found"):
        DsecSemantic(root, "val")


def test_dsec_train_augmentation_is_seeded_and_eval_has_none(dsec_root: Path):
    train = DsecSemantic(dsec_root, "train", num_events=3000)  # official: augmented
    test = DsecSemantic(dsec_root, "test", num_events=3000)
    assert train.sequences[0].augment is not None and test.sequences[0].augment is None
    torch.manual_seed(7)
    first = train[0]
    torch.manual_seed(7)
    again = train[0]
    plain = DsecSemantic(dsec_root, "train", num_events=3000, augment=None)[0]
    for key in ("events", "image", "label"):
        assert torch.equal(first[key], again[key])
        assert first[key].shape == plain[key].shape
    assert not torch.equal(first["image"], plain["image"])
    assert set(first["label"].unique().tolist()) <= set(range(11)) | {255}


# ---------------------------------------------------------------------------------------------------------
# DDD17


@pytest.fixture(scope="module")
def ddd17_root(tmp_path_factory) -> Path:
    return write_ddd17_fixture(tmp_path_factory.mktemp("ddd17"))


def test_ddd17_split_follows_the_sorted_dir_positions(ddd17_root: Path):
    train = Ddd17Segmentation(ddd17_root, "train", augment=None)
    test = Ddd17Segmentation(ddd17_root, "test")
    assert [d.name for d in train.dirs] == ["dir0", "dir3", "dir4", "dir6", "dir7"]
    assert [d.name for d in test.dirs] == ["dir1"]
    assert len(train) == 5 * 3 and len(test) == 3  # dir5 (position 4, one mask) is unused
    assert test.augment is None and Ddd17Segmentation(ddd17_root, "train").augment is not None


def test_ddd17_samples_equal_the_official_loader(ddd17_root: Path):
    for split, picks in (("test", range(3)), ("train", (0, 5, 12))):
        dataset = Ddd17Segmentation(ddd17_root, split, augment=None)
        for i in picks:
            sample = dataset[i]
            assert sample["events"].shape == (10, 200, 346) and sample["image"].shape == (1, 200, 346)
            expected = official_ddd17_sample(dataset.masks[i])
            # The fixture puts 3 events at each window's last timestamp: the official quirk drops them.
            assert expected[3] >= 3
            assert_sample_equal(sample, expected)


def test_ddd17_window_with_one_timestamp_is_a_clear_error(ddd17_root: Path, tmp_path: Path):
    folder = tmp_path / "data"
    shutil.copytree(ddd17_root, folder)
    index_path = folder / "dir1" / "index" / "index_50ms.npy"
    index = np.load(index_path)
    index[2, 2] = index[2, 1] - 3  # frame 3's window: only the 3 events sharing the last timestamp
    np.save(index_path, index)
    dataset = Ddd17Segmentation(folder, "test")
    with pytest.raises(DatasetError, match=r"events\.dat\.t: window .* fewer than 2 distinct timestamps"):
        dataset[0]


def test_ddd17_missing_images_are_decoded_from_video(ddd17_root: Path, tmp_path: Path):
    folder = tmp_path / "data"
    shutil.copytree(ddd17_root, folder)
    dir1 = folder / "dir1"
    frames = [cv2.imread(str(p)) for p in sorted((dir1 / "imgs").glob("*.png"))]
    writer = cv2.VideoWriter(str(dir1 / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 20, (346, 260))
    for frame in frames:
        writer.write(frame)
    writer.release()
    shutil.rmtree(dir1 / "imgs")
    dataset = Ddd17Segmentation(folder, "test")
    decoded = sorted((dir1 / "imgs").glob("*.png"))
    assert [p.name for p in decoded] == [f"img_{k:08d}.png" for k in range(1, len(frames) + 1)]
    error = np.abs(cv2.imread(str(decoded[2])).astype(int) - frames[2].astype(int)).mean()
    print("mean abs decode error", error)
    assert error < 8  # mp4v is lossy
    assert dataset[0]["image"].shape == (1, 200, 346)


# ---------------------------------------------------------------------------------------------------------
# Both, through a DataLoader with worker processes


def test_dataloader_with_two_workers_gives_the_single_process_samples(dsec_root: Path, ddd17_root: Path):
    datasets = [
        DsecSemantic(dsec_root, "train", num_events=2000, augment=None),
        Ddd17Segmentation(ddd17_root, "test"),
    ]
    for dataset in datasets:
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
        batches = list(loader)
        expected = [dataset[i] for i in range(len(dataset))]
        got_events = torch.cat([b["events"] for b in batches])
        got_labels = torch.cat([b["label"] for b in batches])
        assert torch.equal(got_events, torch.stack([e["events"] for e in expected]))
        assert torch.equal(got_labels, torch.stack([e["label"] for e in expected]))
        # Spawned workers receive a pickled copy: no open h5 handle or memmap travels with it.
        copy = pickle.loads(pickle.dumps(dataset))
        assert torch.equal(copy[0]["events"], expected[0]["events"])
