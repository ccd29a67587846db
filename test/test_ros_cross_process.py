"""Separate processes: publisher process -> node process (python -m mambaseg_ros.node --ros-args ...) -> this test's
subscriber. One mask per image; SIGINT ends the node with rc 0; invalid parameters end it with rc 2, naming them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
pytestmark = pytest.mark.ros

from seg_harness import (  # noqa: E402
    BASE_US,
    FRAME_PERIOD_US,
    node_session,
    process_env,
    stamps_us,
    write_params,
    write_tiny_model_config,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAMES = 4


def test_publisher_node_subscriber_in_three_processes(tmp_path):
    params = write_params(tmp_path, write_tiny_model_config(tmp_path))
    with node_session(params, {"image": "/xp/image", "events": "/xp/events"}) as session:
        session.wait_until_up()
        publisher = subprocess.Popen(
            [
                *(sys.executable, str(REPO_ROOT / "test" / "seg_harness.py"), "--frames", str(FRAMES)),
                *("--image-topic", "/xp/image", "--events-topic", "/xp/events"),
                *("--mask-topic", "/mambaseg_node/raw_mask"),
            ],
            cwd=REPO_ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        publisher_rc, publisher_output = session.drive(publisher, FRAMES, 240.0)
        print(publisher_output)
        assert publisher_rc == 0
    print(session.node_output)
    assert stamps_us(session.masks) == [BASE_US + i * FRAME_PERIOD_US for i in range(FRAMES)]
    assert all(m.encoding == "mono8" for m in session.masks)
    assert session.node_rc == 0, f"SIGINT should end the node with rc 0, got {session.node_rc}"


def test_invalid_parameter_exits_with_rc_2_naming_it(tmp_path):
    params = write_params(tmp_path, write_tiny_model_config(tmp_path), overlay_alpha=0.5, device="quantum")
    node = subprocess.run(
        [sys.executable, "-m", "mambaseg_ros.node", "--ros-args", "--params-file", str(params)],
        cwd=REPO_ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(node.stderr)
    assert node.returncode == 2
    assert "parameter 'device'" in node.stderr
