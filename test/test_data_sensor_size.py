"""The DSEC loader at other sensor sizes (synthetic data): `sensor_size`, `label_crop_bottom` and the `val/` folder.

The official-size behaviour (defaults 480x640, crop 40) is pinned bit for bit by test_data_official.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mambaseg_core.data.dsec import OFFICIAL_NUM_EVENTS, DsecSemantic, DsecSequence, scaled_num_events
from mambaseg_core.data.errors import DatasetError
from mambaseg_core.events import voxel_grid
from mambaseg_core.events.dsec import DsecEventReader
from mambaseg_core.synthetic import SceneConfig, SequenceConfig, write_dsec_sequence

HEIGHT, WIDTH = 48, 64
SEQ = "zurich_city_13_a_synthetic"
OPTIONS = {"sensor_size": (HEIGHT, WIDTH), "num_events": 2000}


def _write(root: Path, split: str, crop: int, seed: int = 3) -> Path:
    scene = SceneConfig(height=HEIGHT, width=WIDTH, seed=seed, duration_s=0.35, lighting="day")
    config = SequenceConfig(scene=scene, sim_rate_hz=100.0)  # 7 labels: one sample after the official skip
    return write_dsec_sequence(root / split, SEQ, config, t_offset=10**6, label_crop_bottom=crop)


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[int, Path]:
    """Synthetic roots with the same sequence in test/, labels uncropped (0) or cropped by 8 rows (8)."""
    base = tmp_path_factory.mktemp("sensor")
    return {crop: _write(base / f"crop{crop}", "test", crop).parents[1] for crop in (0, 8)}


def test_crop_zero_reads_whole_frames_and_the_grid_is_the_voxel_grid_of_the_window(roots):
    dataset = DsecSemantic(roots[0], "test", label_crop_bottom=0, **OPTIONS)
    sample = dataset[0]
    assert tuple(sample["events"].shape) == (10, HEIGHT, WIDTH)
    assert tuple(sample["image"].shape) == (3, HEIGHT, WIDTH)
    assert tuple(sample["label"].shape) == (HEIGHT, WIDTH)
    sequence = dataset.sequences[0]
    with DsecEventReader(sequence.files.events_h5) as reader:
        batch = reader.fixed_count_before(sample["timestamp_us"], OPTIONS["num_events"])
    # Identity rectify map: the grid is the plain voxel grid of the window's raw pixels.
    expected = voxel_grid(
        batch.x.astype(np.float32), batch.y.astype(np.float32), batch.t, batch.p, bins=10, height=HEIGHT, width=WIDTH
    )
    diff = float(np.abs(sample["events"].numpy() - expected).max())
    print("max |grid - voxel_grid(window)|", diff, "events", len(batch))
    assert len(batch) > 0 and diff == 0.0
    assert set(sample["label"].unique().tolist()) <= set(range(11))


def test_crop_cuts_the_bottom_rows_of_events_and_image(roots):
    full = DsecSequence(roots[0] / "test" / SEQ, label_crop_bottom=0, **OPTIONS)
    cropped = DsecSequence(roots[8] / "test" / SEQ, label_crop_bottom=8, **OPTIONS)
    a, b = full[0], cropped[0]
    assert tuple(b["label"].shape) == (HEIGHT - 8, WIDTH) and tuple(b["events"].shape) == (10, HEIGHT - 8, WIDTH)
    for key in ("events", "image", "label"):
        diff = float((a[key][..., : HEIGHT - 8, :] - b[key]).abs().max())
        print(key, "max diff", diff)
        assert diff == 0.0


def test_mismatched_geometry_is_a_clear_error(roots):
    with pytest.raises(DatasetError, match=r"rectify_map has shape \(48, 64, 2\), expected \(480, 640, 2\)"):
        DsecSequence(roots[0] / "test" / SEQ)  # the official defaults on a 64x48 recording
    with pytest.raises(DatasetError, match="label must be 64x40"):
        DsecSequence(roots[0] / "test" / SEQ, label_crop_bottom=8, **OPTIONS)[0]  # labels are 48 rows
    with pytest.raises(ValueError, match="label_crop_bottom must be in"):
        DsecSequence(roots[0] / "test" / SEQ, label_crop_bottom=HEIGHT, **OPTIONS)
    with pytest.raises(ValueError, match="sensor_size must be a positive"):
        DsecSequence(roots[0] / "test" / SEQ, sensor_size=(0, WIDTH))


def test_val_reads_the_val_folder_when_it_exists_else_test(roots, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(roots[0], root)
    assert DsecSemantic(root, "val", label_crop_bottom=0, **OPTIONS).split == "test"  # official alias
    _write(root, "val", 0, seed=4)
    val = DsecSemantic(root, "val", label_crop_bottom=0, **OPTIONS)
    assert val.split == "val" and val.sequences[0].files.path == root / "val" / SEQ
    test = DsecSemantic(root, "test", label_crop_bottom=0, **OPTIONS)
    diff = float((val[0]["image"] - test[0]["image"]).abs().max())
    print("val vs test image max diff", diff)
    assert diff > 0  # another scene


def test_scaled_num_events_keeps_dsec_event_density():
    assert scaled_num_events(640 * 480) == OFFICIAL_NUM_EVENTS
    assert scaled_num_events(256 * 192) == 16_000  # the shipped demo model's window (tools/train_demo_gpu.sh)
    assert scaled_num_events(128 * 96) == 4_000
    assert scaled_num_events(32 * 24) == 1_000  # floor: a window is never a handful of events
