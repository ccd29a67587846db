"""Test helpers for the segmentation pipeline and node: a tiny random-weight model, synthetic frames + events,
and a lock-step frame driver for ROS tests. ROS modules are imported lazily (pipeline tests import this too).

Run as a script it is the separate publisher process of the cross-process test:
    python test/seg_harness.py --frames 4 --image-topic /cam/image --events-topic /cam/events \
        --mask-topic /mambaseg_node/raw_mask --height 64 --width 96
It publishes each frame's events then its image, waits for the mask of that frame, and exits 0 once every
frame got its mask (1 on timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mambaseg_core.events import EventBatch

TINY_MODEL = dict(
    image_size=[32, 48],
    image_channels=3,
    num_classes=6,
    event_bins=10,
    dims=[16, 16, 32, 64],
    depths=[1, 1, 1, 1],
    decoder_dim=32,
)
BASE_US = 1_000_000_000  # frame 0 at t = 1000 s
FRAME_PERIOD_US = 50_000
EVENTS_PER_FRAME = 1500
REPO_ROOT = Path(__file__).resolve().parents[1]


def write_tiny_model_config(folder: Path) -> Path:
    path = folder / "tiny_model.yaml"
    path.write_text(yaml.safe_dump(TINY_MODEL))
    return path


def node_params(model_config: Path, /, **overrides: Any) -> dict[str, Any]:
    """Node parameters for tests: the tiny random-weight model on CPU, reliable QoS, a generous event wait."""
    return {
        "model_config": str(model_config),
        "allow_random_weights": True,
        "device": "cpu",
        "window_events": 1000,
        "image_reliability": "reliable",
        "events_reliability": "reliable",
        "max_event_latency_ms": 5000.0,
        **overrides,
    }


def write_params(folder: Path, model_config: Path, /, **overrides: Any) -> Path:
    """`node_params` as a params file."""
    path = folder / "node_params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": node_params(model_config, **overrides)}}))
    return path


@dataclass
class Frame:
    """A frame as `mambaseg_ros.player.FramePlayer` sends it (same fields as its PlayerFrame, without importing
    ROS here: the pipeline tests use these frames too)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    stamp_us: int
    events: EventBatch


def synthetic_frame(index: int, height: int, width: int) -> Frame:
    """Random image + events in [stamp - FRAME_PERIOD_US, stamp + 1 ms): the last ones release the node's wait."""
    rng = np.random.default_rng(index)
    stamp = BASE_US + index * FRAME_PERIOD_US
    n = EVENTS_PER_FRAME
    events = EventBatch.from_arrays(
        rng.integers(0, width, n),
        rng.integers(0, height, n),
        np.sort(rng.integers(stamp - FRAME_PERIOD_US, stamp + 1000, n)),
        rng.integers(0, 2, n),
    )
    return Frame(image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8), stamp_us=stamp, events=events)


def event_packet(events: EventBatch, width: int, height: int) -> Any:
    """One mono EventPacket holding `events`, stamped with (and time_base at) its first event's time."""
    from mambaseg_ros.player import event_packets

    return event_packets(events, width=width, height=height, encoding="mono")[0]


def image_message(image: np.ndarray, stamp_us: int, frame_id: str = "camera") -> Any:
    from std_msgs.msg import Header

    from mambaseg_ros.conversions import numpy_to_image, us_to_stamp

    return numpy_to_image(image, "rgb8", Header(stamp=us_to_stamp(stamp_us), frame_id=frame_id))


def frame_player(node: Any, image_topic: str, events_topic: str, output_topics: list[str]) -> Any:
    """The product's frame player, sending each frame's events as one mono packet (the tests' convention)."""
    from mambaseg_ros.player import FramePlayer

    return FramePlayer(node, image_topic, events_topic, output_topics, encoding="mono")


@contextlib.contextmanager
def ros_context() -> Iterator[Any]:
    """A private, initialised rclpy context (shut down on exit)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def node_overrides(model_config: Path, /, **values: Any) -> list[Any]:
    """`node_params` as rclpy parameter overrides (in-process nodes)."""
    from rclpy.parameter import Parameter

    return [Parameter(name, value=value) for name, value in node_params(model_config, **values).items()]


class SpunNode:
    """The node under test spinning in its own executor thread."""

    def __init__(self, node: Any):
        from rclpy.executors import SingleThreadedExecutor

        self.node = node
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.thread.join(timeout=10.0)


@dataclass
class NodeSession:
    """A node process (`python -m mambaseg_ros.node`) and a listener of its raw masks in this process."""

    node: subprocess.Popen
    masks: list[Any]
    subscription: Any
    executor: Any
    node_rc: int | None = None  # set when the session ends (SIGINT)
    node_output: str = ""

    def spin_until(self, predicate: Any, timeout: float) -> bool:
        """Spin the listener until predicate() or the timeout; returns predicate()."""
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def drive(self, driver: subprocess.Popen, expected_masks: int, timeout: float) -> tuple[int, str]:
        """Spin while `driver` (a publisher/player process) runs, then until `expected_masks` masks arrived (plus
        0.5 s for extra ones); stop it and return its (rc, output). The driver is killed if anything fails."""
        try:
            self.spin_until(lambda: driver.poll() is not None, timeout)
            self.spin_until(lambda: len(self.masks) >= expected_masks, 30.0)
            self.spin_until(lambda: False, 0.5)  # extra masks would arrive now
            return stop(driver)
        finally:
            if driver.poll() is None:
                driver.kill()

    def wait_until_up(self, timeout: float = 120.0) -> None:
        assert self.spin_until(
            lambda: self.subscription.get_publisher_count() > 0 or self.node.poll() is not None, timeout
        )
        assert self.node.poll() is None, "the node process exited during start-up"


@contextlib.contextmanager
def node_session(params: Path, remaps: dict[str, str], *, env: dict[str, str] | None = None, depth: int = 50):
    """Start the node with `params` and topic `remaps`, listen to ~/raw_mask; on exit SIGINT it (rc, output kept)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    command = [sys.executable, "-m", "mambaseg_ros.node", "--ros-args", "--params-file", str(params)]
    for topic, target in remaps.items():
        command += ["-r", f"{topic}:={target}"]
    node = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env or process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node("test_mask_listener", context=context)
    masks: list[Any] = []
    qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
    subscription = listener.create_subscription(Image, "/mambaseg_node/raw_mask", masks.append, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    session = NodeSession(node, masks, subscription, executor)
    try:
        yield session
    finally:
        session.node_rc, session.node_output = stop(node)
        executor.shutdown()
        listener.destroy_node()
        rclpy.try_shutdown(context=context)


def stamps_us(messages: list[Any]) -> list[int]:
    from mambaseg_ros.conversions import stamp_to_us

    return [stamp_to_us(m.header.stamp) for m in messages]


def process_env() -> dict[str, str]:
    """This environment (ROS domain, discovery range, FastDDS profile) with the source tree importable."""
    path = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "test"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def stop(process: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str]:
    """SIGINT, wait, return (rc, output)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return -9, output
    return process.returncode, output


def main() -> int:
    import rclpy

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--image-topic", required=True)
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--mask-topic", required=True)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("seg_harness_publisher")
    try:
        driver = frame_player(node, args.image_topic, args.events_topic, [args.mask_topic])
        if not driver.wait_for_connections(args.timeout):
            print("publisher: the node never connected", file=sys.stderr)
            return 1
        frames = [synthetic_frame(i, args.height, args.width) for i in range(args.frames)]
        ok = driver.run_lockstep(frames, args.timeout)
        print(f"publisher: {len(driver.received[args.mask_topic])} masks for {len(frames)} frames", flush=True)
        return 0 if ok else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
