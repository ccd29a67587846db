"""Separate processes: publisher process -> node process (python -m mambaseg_ros.node --ros-args ...) -> this test's
subscriber. One mask per image; SIGINT ends the node with rc 0; invalid parameters end it with rc 2, naming them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from seg_harness import (  # noqa: E402
    BASE_US,
    FRAME_PERIOD_US,
    process_env,
    stamps_us,
    stop,
    write_params,
    write_tiny_model_config,
)
from sensor_msgs.msg import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAMES = 4


def test_publisher_node_subscriber_in_three_processes(tmp_path):
    params = write_params(tmp_path, write_tiny_model_config(tmp_path))
    node_cmd = [sys.executable, "-m", "mambaseg_ros.node", "--ros-args", "--params-file", str(params)]
    node_cmd += ["-r", "image:=/xp/image", "-r", "events:=/xp/events"]
    node = subprocess.Popen(
        node_cmd, cwd=REPO_ROOT, env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node("test_listener", context=context)
    masks: list[Image] = []
    subscription = listener.create_subscription(
        Image, "/mambaseg_node/raw_mask", masks.append, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)

    def spin_until(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return predicate()

    publisher = None
    try:
        assert spin_until(lambda: subscription.get_publisher_count() > 0 or node.poll() is not None, 120.0)
        assert node.poll() is None, "the node process exited during start-up"
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
        spin_until(lambda: publisher.poll() is not None, 240.0)
        spin_until(lambda: len(masks) >= FRAMES, 30.0)
        spin_until(lambda: False, 0.5)  # extra masks would arrive now
        publisher_rc, publisher_output = stop(publisher)
        print(publisher_output)
        assert publisher_rc == 0
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        node_rc, node_output = stop(node)
        print(node_output)
        executor.shutdown()
        listener.destroy_node()
        rclpy.try_shutdown(context=context)
    assert stamps_us(masks) == [BASE_US + i * FRAME_PERIOD_US for i in range(FRAMES)]
    assert all(m.encoding == "mono8" for m in masks)
    assert node_rc == 0, f"SIGINT should end the node with rc 0, got {node_rc}"


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
