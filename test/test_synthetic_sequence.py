"""Synthetic sequences: determinism, the DSEC on-disk layout, the seeded split and the video → events CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for reading)
import numpy as np
import pytest

from mambaseg_core.cli.simulate_events import main as simulate_events_main
from mambaseg_core.synthetic.camera import CONDITION_TAGS
from mambaseg_core.synthetic.scene import SceneConfig
from mambaseg_core.synthetic.sequence import (
    DSEC11_TO_DSEC19,
    SequenceConfig,
    dataset_plan,
    generate_sequence,
    write_dsec_sequence,
)

BLOSC_FILTER_ID = "32001"


def _config(seed: int, duration_s: float = 0.5, lighting: str = "day") -> SequenceConfig:
    scene = SceneConfig(height=48, width=64, seed=seed, duration_s=duration_s, lighting=lighting)
    return SequenceConfig(scene=scene, sim_rate_hz=500.0)


def test_same_seed_same_sequence_other_seed_differs():
    a, b, c = (list(generate_sequence(_config(s))) for s in (1, 1, 2))
    assert len(a) == 10 and [f.t_us for f in a] == [137 + 50_000 * k for k in range(10)]
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_array_equal(fa.label, fb.label)
        for field in "xytp":
            np.testing.assert_array_equal(getattr(fa.events, field), getattr(fb.events, field))
    assert any(not np.array_equal(fa.rgb, fc.rgb) for fa, fc in zip(a, c))
    assert sum(len(f.events) for f in a) != sum(len(f.events) for f in c)
    # Events of a frame lie in (previous frame, frame], sorted.
    for previous, frame in itertools.pairwise(a):
        t = frame.events.t
        assert len(t) > 0 and t.min() > previous.t_us and t.max() <= frame.t_us and np.all(np.diff(t) >= 0)
        assert frame.events.x.max() < 64 and frame.events.y.max() < 48


def _check_events_h5(path: Path, width: int, height: int) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        for name in ("p", "t", "x", "y"):
            assert BLOSC_FILTER_ID in h5[f"events/{name}"]._filters, f"events/{name} is not Blosc-compressed"
        data = {name: h5[f"events/{name}"][()] for name in ("p", "t", "x", "y")}
        data["ms_to_idx"] = h5["ms_to_idx"][()]
        data["t_offset"] = np.int64(h5["t_offset"][()])
    t = data["t"]
    assert t.dtype == np.uint32 and data["x"].dtype == np.uint16 and data["p"].dtype == np.uint8
    assert data["ms_to_idx"].dtype == np.uint64 and len(data["ms_to_idx"]) == t[-1] // 1000 + 2
    assert np.all(np.diff(t.astype(np.int64)) >= 0)
    expected = np.searchsorted(t, 1000 * np.arange(len(data["ms_to_idx"]), dtype=np.int64), side="left")
    np.testing.assert_array_equal(data["ms_to_idx"], expected)
    assert data["x"].max() < width and data["y"].max() < height and set(np.unique(data["p"])) <= {0, 1}
    return data


def test_write_dsec_sequence_layout(tmp_path):
    config = _config(3, duration_s=0.5, lighting="tunnel")
    t_offset = 49_599_300_000
    seq = write_dsec_sequence(
        tmp_path / "train", "zurich_city_00_a_synthetic", config, t_offset=t_offset, label_crop_bottom=4
    )
    frames = list(generate_sequence(config))
    data = _check_events_h5(seq / "events" / "left" / "events.h5", 64, 48)
    assert data["t_offset"] == t_offset
    assert len(data["t"]) == sum(len(f.events) for f in frames)
    stamps = np.loadtxt(seq / "semantic" / "timestamps.txt", dtype=np.int64)
    np.testing.assert_array_equal(stamps, [f.t_us + t_offset for f in frames])
    assert np.all((stamps - t_offset) % 1000 != 0)  # off millisecond boundaries (spec §1.4)
    assert np.array_equal(np.loadtxt(seq / "images" / "timestamps.txt", dtype=np.int64), stamps)
    conditions = (seq / "semantic" / "conditions.txt").read_text().split()
    assert conditions == [f.condition for f in frames] and set(conditions) <= set(CONDITION_TAGS)
    labels = sorted((seq / "semantic" / "11classes" / "data").iterdir())
    images = sorted((seq / "images" / "left" / "ev_inf").iterdir())
    labels19 = sorted((seq / "semantic" / "19classes" / "data").iterdir())
    assert [p.name for p in labels] == [p.name for p in images] == [f"{k:06d}.png" for k in range(len(frames))]
    assert len(labels19) == len(frames)
    for k in (0, len(frames) - 1):
        label = cv2.imread(str(labels[k]), cv2.IMREAD_UNCHANGED)
        assert label.shape == (44, 64) and label.dtype == np.uint8
        np.testing.assert_array_equal(label, frames[k].label[:44])
        np.testing.assert_array_equal(cv2.imread(str(labels19[k]), cv2.IMREAD_UNCHANGED), DSEC11_TO_DSEC19[label])
        rgb = cv2.cvtColor(cv2.imread(str(images[k]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(rgb, frames[k].rgb)
    with h5py.File(seq / "events" / "left" / "rectify_map.h5", "r") as h5:
        rect = h5["rectify_map"][()]
    assert rect.shape == (48, 64, 2) and rect.dtype == np.float32
    assert rect[5, 7, 0] == 7 and rect[5, 7, 1] == 5


def test_dataset_plan_is_a_seeded_split_with_dsec_names():
    plan = dataset_plan(_config(0), {"train": 7, "val": 2, "test": 3}, seed=5)
    assert [split for split, _, _ in plan] == ["train"] * 7 + ["val"] * 2 + ["test"] * 3
    seeds = [cfg.scene.seed for _, _, cfg in plan]
    assert len(set(seeds)) == len(seeds)
    assert {cfg.scene.lighting for split, _, cfg in plan if split == "train"} >= {"night", "tunnel", "low_sun"}
    assert all("zurich_city_" in name for _, name, _ in plan)
    assert plan == dataset_plan(_config(0), {"train": 7, "val": 2, "test": 3}, seed=5)


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> bool:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        return False
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path.stat().st_size > 0


def test_cli_converts_a_video_into_events_h5(tmp_path, capsys):
    width, height, fps = 64, 48, 25.0
    frames = []
    for k in range(12):  # a bright square sliding right over a textured background
        frame = np.full((height, width, 3), 40, np.uint8)
        frame[:, ::8] = 90
        frame[16:32, 8 + 3 * k : 24 + 3 * k] = 220
        frames.append(frame)
    video = tmp_path / "tiny.mp4"
    if not _write_video(video, frames, fps):
        pytest.skip("OpenCV cannot write mp4v video here")
    out = tmp_path / "events.h5"
    assert simulate_events_main([str(video), "--out", str(out), "--fps-upsample", "4", "--t-offset", "1000"]) == 0
    print(capsys.readouterr().out)
    data = _check_events_h5(out, width, height)
    assert data["t_offset"] == 1000
    assert len(data["t"]) > 500
    assert data["t"].max() <= 11 / fps * 1e6 + 1  # 12 frames span 11 intervals
    on = data["p"] == 1
    # The square moves right: its right edge brightens pixels (ON), its left edge darkens them (OFF).
    assert np.median(data["x"][on]) > np.median(data["x"][~on])


def test_cli_reports_a_missing_video(tmp_path):
    assert simulate_events_main([str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "e.h5")]) == 1


def test_project_dsec_loader_reads_a_dsec_sized_synthetic_sequence(tmp_path):
    dsec = pytest.importorskip("mambaseg_core.data.dsec", reason="the project's DSEC loader is not available")
    scene = SceneConfig(height=480, width=640, seed=4, duration_s=0.35, lighting="day")
    config = SequenceConfig(scene=scene, sim_rate_hz=100.0)  # 7 labels: one sample after the official skip
    write_dsec_sequence(tmp_path / "train", "zurich_city_00_a_synthetic", config, t_offset=10**9, label_crop_bottom=40)
    dataset = dsec.DsecSemantic(tmp_path, "train", augment=None)
    assert len(dataset) == 1
    sample = dataset[0]
    assert tuple(sample["events"].shape) == (10, 440, 640) and tuple(sample["label"].shape) == (440, 640)
    print("voxel |sum|", float(sample["events"].abs().sum()), "classes", sample["label"].unique().tolist())
    assert float(sample["events"].abs().sum()) > 0
    assert set(sample["label"].unique().tolist()) <= set(range(11))
