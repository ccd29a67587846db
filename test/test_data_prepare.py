"""prepare-dsec: download layout → read layout, and the ev_inf homography warp (spec §1.2, §1.6)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mambaseg_core.cli.prepare_dsec import main as prepare_main
from mambaseg_core.data.errors import DatasetError
from mambaseg_core.data.fixtures import write_dsec_download_fixture
from mambaseg_core.data.prepare_dsec import ev_inf_remap, event_to_frame_homography, warp_to_event_camera


def _calibration(k0, k1, r_rect0=None, r_rect1=None, t_10=None) -> dict:
    r_rect0 = np.eye(3) if r_rect0 is None else r_rect0
    r_rect1 = np.eye(3) if r_rect1 is None else r_rect1
    t_10 = np.eye(4) if t_10 is None else t_10
    return {
        "intrinsics": {"camRect0": {"camera_matrix": list(k0)}, "camRect1": {"camera_matrix": list(k1)}},
        "extrinsics": {
            "R_rect0": np.asarray(r_rect0).tolist(),
            "R_rect1": np.asarray(r_rect1).tolist(),
            "T_10": np.asarray(t_10).tolist(),
        },
    }


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def test_homography_is_k1_r_k0_inverse_and_ignores_translation():
    k0, k1 = (569.8, 570.1, 335.3, 221.2), (1150.8, 1151.0, 723.8, 571.0)
    r_rect0, r_rect1, r_10 = _rot_x(0.01), _rot_z(-0.02), _rot_z(0.03) @ _rot_x(-0.015)
    t_10 = np.eye(4)
    t_10[:3, :3], t_10[:3, 3] = r_10, [-0.045, 0.002, 0.01]
    got = event_to_frame_homography(_calibration(k0, k1, r_rect0, r_rect1, t_10))
    K0 = np.array([[k0[0], 0, k0[2]], [0, k0[1], k0[3]], [0, 0, 1]])
    K1 = np.array([[k1[0], 0, k1[2]], [0, k1[1], k1[3]], [0, 0, 1]])
    # T_r1_r0 = T_r1_1 · T_10 · T_r0_0⁻¹, rotation part only.
    expected = K1 @ (r_rect1 @ r_10 @ r_rect0.T) @ np.linalg.inv(K0)
    print("max diff", np.abs(got - expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)


def test_identity_calibration_reproduces_the_input():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1080, 1440, 3), dtype=np.uint8)
    k = (500.0, 500.0, 320.0, 240.0)
    remap = ev_inf_remap(event_to_frame_homography(_calibration(k, k)))
    warped = warp_to_event_camera(frame, remap)
    assert warped.shape == (480, 640, 3)
    diff = np.abs(warped.astype(int) - frame[:480, :640].astype(int)).max()
    print("max diff", diff)
    assert diff == 0  # bicubic weights at integer positions are (0, 1, 0, 0)


def test_known_rotation_moves_pixels_as_the_homography_says():
    k = (600.0, 600.0, 320.0, 240.0)
    homography = event_to_frame_homography(_calibration(k, k, r_rect1=_rot_z(np.deg2rad(10))))
    remap = ev_inf_remap(homography)
    target = np.array([500.0, 100.0])  # event-camera pixel where the dot must appear
    source = homography @ np.array([*target, 1.0])
    source = source[:2] / source[2]
    frame = np.zeros((1080, 1440), np.uint8)
    cv2.circle(frame, (round(source[0]), round(source[1])), 3, 255, -1)
    warped = warp_to_event_camera(frame, remap).astype(np.float64)
    ys, xs = np.nonzero(warped > 64)
    weights = warped[ys, xs]
    centroid = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    print("centroid", centroid, "expected", target, "source", source)
    # Rotation by 10° about the principal point: the dot moved by tens of pixels, and lands where P says.
    assert np.linalg.norm(source - target) > 20
    assert np.linalg.norm(centroid - target) < 1.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    source = write_dsec_download_fixture(tmp_path_factory.mktemp("download"))
    output = tmp_path_factory.mktemp("prepared")
    assert prepare_main([str(source), str(output), "--workers", "2"]) == 0
    return source, output


def test_prepare_produces_the_read_layout(prepared):
    source, output = prepared
    for split, seq in (("train", "zurich_city_00_a"), ("test", "zurich_city_13_a")):
        src, out = source / split / seq, output / split / seq
        labels = sorted((src / "11classes").glob("*.png"))
        assert [p.name for p in sorted((out / "semantic/11classes/data").glob("*.png"))] == [p.name for p in labels]
        assert len(list((out / "semantic/19classes/data").glob("*.png"))) == len(labels)
        assert (out / "semantic/11classes/data" / labels[0].name).read_bytes() == labels[0].read_bytes()
        assert (out / "semantic/timestamps.txt").read_text() == (src / f"{seq}_semantic_timestamps.txt").read_text()
        assert (out / "events/left/events.h5").is_symlink()
        assert (out / "events/left/events.h5").resolve() == (src / "events/left/events.h5").resolve()
        assert len(list((out / "images/left/ev_inf").glob("*.png"))) == len(labels)


def test_ev_inf_pairs_frames_by_timestamp(prepared):
    source, output = prepared
    seq = "test/zurich_city_13_a"  # its download has one unlabelled frame before the labels
    remap = ev_inf_remap(
        event_to_frame_homography(yaml.safe_load((source / seq / "calibration/cam_to_cam.yaml").read_text()))
    )
    for k in (0, 6):
        frame = cv2.imread(str(source / seq / f"images/left/rectified/{k + 1:06d}.png"))
        ev_inf = cv2.imread(str(output / seq / f"images/left/ev_inf/{k:06d}.png"))
        np.testing.assert_array_equal(ev_inf, warp_to_event_camera(frame, remap))


def test_prepared_output_is_a_loadable_dataset(prepared):
    from mambaseg_core.data.dsec import DsecSemantic

    _, output = prepared
    dataset = DsecSemantic(output, "test", num_events=2000)
    assert len(dataset) == 1  # 7 labels → (7 - 5) // 2
    sample = dataset[0]
    assert sample["image"].shape == (3, 440, 640) and sample["events"].shape == (10, 440, 640)
    assert sample["label"].shape == (440, 640)


def test_prepare_names_the_missing_file(tmp_path):
    source = write_dsec_download_fixture(tmp_path / "download")
    (source / "train/zurich_city_00_a/calibration/cam_to_cam.yaml").unlink()
    from mambaseg_core.data.prepare_dsec import prepare_dsec

    with pytest.raises(DatasetError, match=r"calibration/cam_to_cam\.yaml: file not found"):
        prepare_dsec(source, tmp_path / "out", log=lambda _: None)
