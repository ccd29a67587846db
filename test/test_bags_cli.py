"""`mambaseg-bag` end to end in-process: convert-synthetic -> segment with PNG/MP4 dumps; bad input (missing
topic, existing output, missing dataset, unsupported image encoding, corrupt packets) fails or is reported,
naming what is wrong."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs rosbags (make setup installs it)")

from seg_harness import REPO_ROOT, process_env, write_tiny_model_config
from test_bags_convert import one_torch_thread  # noqa: F401  (autouse fixture)

from mambaseg_core.bags import EVENT_PACKET, IMAGE, BagReader, BagWriter, event_packet_message, image_message
from mambaseg_core.events import EventBatch
from mambaseg_ros.bag_cli import main

MODEL_ARGS = ["--random-weights", "--window-events", "300", "--no-progress"]


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    bag = folder / "synthetic"
    args = ["convert-synthetic", str(bag), "--seconds", "0.3", "--height", "32", "--width", "48"]
    assert main([*args, "--seed", "4", "--lighting", "day", "--storage", "sqlite3"]) == 0
    return bag


def test_convert_then_segment_with_overlay_dumps(tmp_path, synthetic_bag, capsys):
    config = write_tiny_model_config(tmp_path)
    rc = main(
        [
            "segment",
            str(synthetic_bag),
            str(tmp_path / "out"),
            "--model-config",
            str(config),
            *MODEL_ARGS,
            "--png-dir",
            str(tmp_path / "png"),
            "--mp4",
            str(tmp_path / "overlay.mp4"),
        ]
    )
    out = capsys.readouterr().out
    print(out)
    assert rc == 0
    with BagReader(tmp_path / "out") as reader:
        overlays = [
            r.decoded.pixels for r in reader.records(["/mambaseg_node/overlay"], only=["/mambaseg_node/overlay"])
        ]
    assert overlays and f"masks {len(overlays)}" in out
    pngs = sorted((tmp_path / "png").glob("overlay_*.png"))
    assert len(pngs) == len(overlays)
    np.testing.assert_array_equal(cv2.imread(str(pngs[-1]))[:, :, ::-1], overlays[-1])
    video = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(overlays)
    assert round(video.get(cv2.CAP_PROP_FPS)) == 20  # from the 50 ms image stamps
    video.release()


def test_bad_input_is_named(tmp_path, synthetic_bag, capsys):
    config = write_tiny_model_config(tmp_path)
    model = ["--model-config", str(config), *MODEL_ARGS]
    assert main(["segment", str(synthetic_bag), str(tmp_path / "a"), *model, "--image-topic", "/nope"]) == 2
    assert "no topic '/nope'" in capsys.readouterr().err
    assert main(["segment", str(synthetic_bag), str(synthetic_bag), *model]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["segment", str(synthetic_bag), str(tmp_path / "b"), "--model-config", str(config)]) == 2
    assert "no checkpoint given" in capsys.readouterr().err
    assert main(["convert-dsec", str(tmp_path / "missing_seq"), str(tmp_path / "c")]) == 2
    assert "missing_seq" in capsys.readouterr().err


def test_unsupported_encodings_and_corrupt_packets_are_reported(tmp_path, capsys):
    # Images of an encoding the Segmenter cannot take and one corrupt event packet: nothing can be segmented,
    # the run says why (naming the encoding and the topic) and exits 1.
    rng = np.random.default_rng(0)
    with BagWriter(tmp_path / "bag", "mcap") as writer:
        writer.add_topic("/camera/image_raw", IMAGE)
        writer.add_topic("/event_camera/events", EVENT_PACKET)
        for k in range(3):
            stamp_us = 1_000_000 + 50_000 * k
            t = np.sort(rng.integers(stamp_us - 50_000, stamp_us, 100))
            events = EventBatch.from_arrays(rng.integers(0, 48, 100), rng.integers(0, 32, 100), t, np.ones(100))
            writer.write(
                "/event_camera/events",
                int(t[0]) * 1000,
                event_packet_message(events, encoding="evt3", width=48, height=32, seq=k, frame_id="c"),
            )
            image = image_message(np.zeros((32, 48 * 4), np.uint8), "mono8", stamp_us * 1000, "c")
            image.encoding, image.width = "32FC1", 48
            writer.write("/camera/image_raw", stamp_us * 1000, image)
        writer.write_raw("/event_camera/events", 2_000_000_000, b"\x00\x01\x00\x00\x07")
    config = write_tiny_model_config(tmp_path)
    rc = main(["segment", str(tmp_path / "bag"), str(tmp_path / "out"), "--model-config", str(config), *MODEL_ARGS])
    captured = capsys.readouterr()
    print(captured.out, captured.err)
    assert rc == 1
    assert "malformed messages on /camera/image_raw: 3 skipped" in captured.out
    assert "32FC1" in captured.out
    assert "malformed messages on /event_camera/events: 1 skipped" in captured.out
    assert "no image of /camera/image_raw was segmented" in captured.err


def test_segment_and_convert_run_without_ros(tmp_path):
    # segment and convert-* must not need rclpy: run them with every ROS module import blocked.
    config = write_tiny_model_config(tmp_path)
    code = f"""
import sys
class BlockRos:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('rclpy', 'sensor_msgs', 'std_msgs', 'event_camera_msgs', 'builtin_interfaces'):
            raise ImportError('ROS import: ' + name)
sys.meta_path.insert(0, BlockRos())
from mambaseg_ros.bag_cli import main
assert main(['convert-synthetic', r'{tmp_path / "bag"}', '--seconds', '0.2', '--height', '32', '--width', '48']) == 0
assert main(['segment', r'{tmp_path / "bag"}', r'{tmp_path / "out"}', '--model-config', r'{config}',
             '--random-weights', '--window-events', '300', '--no-progress']) == 0
"""
    env = {**process_env(), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    print(out.stdout, out.stderr[-3000:])
    assert out.returncode == 0
    assert "masks" in out.stdout


def test_segment_engine_options_reach_the_segmenter(tmp_path):
    from mambaseg_ros.bag_cli import _segmenter, build_parser

    config = write_tiny_model_config(tmp_path)
    argv = ["segment", "in", "out", "--model-config", str(config), *MODEL_ARGS, "--precision", "bf16", "--cuda-graph"]
    segmenter = _segmenter(build_parser().parse_args(argv))
    # On this CPU the CUDA graph is ignored (with a warning); the precision is honoured.
    assert segmenter.config.precision == "bf16" and segmenter.config.cuda_graph is True
    assert segmenter.engine.precision == "bf16" and not segmenter.engine.cuda_graph
    default = _segmenter(
        build_parser().parse_args(["segment", "in", "out", "--model-config", str(config), *MODEL_ARGS])
    )
    assert default.config.precision == "fp32" and default.config.cuda_graph is False
