"""Frame camera: saturation and black clipping, and that events still see edges where the frames fail."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg_core.synthetic.camera import FrameCamera, FrameCameraConfig, frame_condition
from mambaseg_core.synthetic.scene import SceneConfig
from mambaseg_core.synthetic.sequence import SequenceConfig, generate_sequence


def test_exposure_range_limits_clip_to_black_and_white():
    camera = FrameCamera(FrameCameraConfig(read_noise=0.0, shot_noise=0.0), seed=0)
    scene = np.full((8, 8, 3), 1e-5, np.float32)
    for _ in range(50):  # auto-exposure runs into its maximum
        frame = camera.capture(scene, 0.05)
    assert camera.exposure == pytest.approx(camera.exposure_range[1], rel=0.05)
    assert frame.max() <= 12
    for _ in range(50):
        frame = camera.capture(np.full((8, 8, 3), 1e4, np.float32), 0.05)
    assert camera.exposure == pytest.approx(camera.exposure_range[0], rel=0.05)
    assert np.all(frame == 255)
    assert frame_condition(frame) == "hdr_bright"


def test_auto_exposure_brings_a_uniform_scene_to_its_target():
    config = FrameCameraConfig(read_noise=0.0, shot_noise=0.0)
    camera = FrameCamera(config, seed=0)
    for _ in range(100):
        frame = camera.capture(np.full((4, 4, 3), 0.3, np.float32), 0.05)
    expected = 255 * config.ae_target ** (1 / config.gamma)
    print("grey level", frame[0, 0, 0], "expected", expected)
    assert abs(int(frame[0, 0, 0]) - expected) <= 2
    assert frame_condition(frame) == "normal"


def _label_edges(label: np.ndarray) -> np.ndarray:
    edges = np.zeros(label.shape, bool)
    edges[:, 1:] |= label[:, 1:] != label[:, :-1]
    edges[1:] |= label[1:] != label[:-1]
    return edges


@pytest.mark.parametrize(("lighting", "tag"), [("night", "dark"), ("low_sun", "hdr_bright")])
def test_frames_fail_where_events_still_see_edges(lighting, tag):
    scene = SceneConfig(height=48, width=64, seed=11, duration_s=1.0, lighting=lighting)
    frames = list(generate_sequence(SequenceConfig(scene=scene, sim_rate_hz=500.0)))[4:]
    tags = [f.condition for f in frames]
    print(lighting, tags)
    assert tags.count(tag) >= 0.8 * len(tags)
    if tag == "dark":
        assert np.median([np.median(f.rgb) for f in frames]) < 40
    else:
        assert np.mean([(f.rgb.max(axis=2) == 255).mean() for f in frames]) > 0.04
    on_edges = off_edges = 0.0
    for f in frames:
        edges = _label_edges(f.label)
        hits = np.zeros(f.label.shape)
        np.add.at(hits, (f.events.y, f.events.x), 1)
        on_edges += hits[edges].mean()
        off_edges += hits[~edges].mean()
    print("events per pixel per frame on / off label edges", on_edges / len(frames), off_edges / len(frames))
    assert on_edges / len(frames) > 0.2  # the event camera keeps seeing the scene's structure
    assert on_edges > 2 * off_edges
