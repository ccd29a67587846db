"""The bag player and recorder over real ROS 2: the player drives the real node process (one mask per image of a
100-frame bag), and what the player publishes the recorder writes back byte for byte."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from seg_harness import (  # noqa: E402
    node_session,
    process_env,
    ros_context,
    stamps_us,
    write_params,
    write_tiny_model_config,
)

from mambaseg_core.bags import DEFAULT_TOPICS, BagFrame, BagReader, SequenceSource, write_sequence_bag  # noqa: E402
from mambaseg_core.events import EventBatch  # noqa: E402
from mambaseg_ros.bag_play import BagPlayer, PlayOptions  # noqa: E402
from mambaseg_ros.bag_record import BagRecorder  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 32, 48  # the tiny model's network size: no resize in the node
BASE_US, PERIOD_US = 3_000_000_000, 50_000
INPUTS = [DEFAULT_TOPICS.image, DEFAULT_TOPICS.events]


def random_frames(n: int) -> Iterator[BagFrame]:
    """Random frames every 50 ms, each with 300 events spread over the 50 ms before it."""
    rng = np.random.default_rng(0)
    for k in range(n):
        stamp = BASE_US + k * PERIOD_US
        t = np.sort(rng.integers(stamp - PERIOD_US, stamp, 300))
        events = EventBatch.from_arrays(
            rng.integers(0, WIDTH, 300), rng.integers(0, HEIGHT, 300), t, rng.integers(0, 2, 300)
        )
        yield BagFrame(stamp * 1000, rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), events)


def write_bag(path: Path, frames: int) -> Path:
    write_sequence_bag(path, SequenceSource("random", HEIGHT, WIDTH, frames, random_frames(frames)))
    return path


def test_player_drives_the_node_process_one_mask_per_image(tmp_path):
    frames = 100
    bag = write_bag(tmp_path / "bag", frames)
    params = write_params(tmp_path, write_tiny_model_config(tmp_path))
    env = {**process_env(), "OMP_NUM_THREADS": "1"}  # the tiny model; 2 OpenMP threads crawl on a shared CPU
    remaps = {"image": DEFAULT_TOPICS.image, "events": DEFAULT_TOPICS.events}
    with node_session(params, remaps, env=env, depth=200) as session:
        session.wait_until_up()
        play_cmd = [sys.executable, "-m", "mambaseg_ros.bag_cli", "play", str(bag), "--rate", "2"]
        play_cmd += ["--topics", *INPUTS, "--wait-subscribers", *INPUTS, "--timeout", "60"]
        play_cmd += ["--lockstep", DEFAULT_TOPICS.image, "/mambaseg_node/raw_mask"]
        player = subprocess.Popen(
            play_cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        player_rc, player_output = session.drive(player, frames, 300.0)
        print(player_output)
        assert player_rc == 0
    print(session.node_output[-3000:])
    assert stamps_us(session.masks) == [BASE_US + k * PERIOD_US for k in range(frames)]
    assert session.node_rc == 0


def test_recorder_writes_back_what_the_player_publishes(tmp_path):
    bag = write_bag(tmp_path / "bag", 8)
    with ros_context() as context:
        # The recorder is spun on this thread (sqlite3 objects stay on the thread that made them), the player
        # plays from its own thread with its own executor.
        recorder_node = rclpy.create_node("bag_test_recorder", context=context)
        recorder = BagRecorder(recorder_node, tmp_path / "recorded", topics=INPUTS, storage="sqlite3")
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(recorder_node)
        player_node = rclpy.create_node("bag_test_player", context=context)
        options = PlayOptions(rate=4.0, topics=INPUTS, wait_for_subscribers=INPUTS, subscriber_timeout_s=30.0)
        reports: list = []
        player = threading.Thread(target=lambda: reports.append(BagPlayer(player_node, bag, options).play()))
        try:
            player.start()
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline and (player.is_alive() or not reports):
                executor.spin_once(timeout_sec=0.05)
            assert reports, "the player failed (see the thread's traceback)"
            print(reports[0].summary())
            expected = sum(reports[0].published.values())
            deadline = time.monotonic() + 10.0
            while sum(recorder.counts.values()) < expected and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
        finally:
            player.join(timeout=30.0)
            recorder.close()
            executor.shutdown()
            recorder_node.destroy_node()
            player_node.destroy_node()
    with BagReader(bag) as reader:
        original = {topic: [r.data for r in reader.records(only=[topic])] for topic in INPUTS}
    with BagReader(tmp_path / "recorded") as reader:
        assert reader.topics == {
            DEFAULT_TOPICS.image: "sensor_msgs/msg/Image",
            DEFAULT_TOPICS.events: "event_camera_msgs/msg/EventPacket",
        }
        recorded = {topic: [bytes(r.data) for r in reader.records(only=[topic])] for topic in INPUTS}
    for topic in INPUTS:
        print(f"{topic}: {len(recorded[topic])} of {len(original[topic])} recorded")
        assert recorded[topic] == [bytes(d) for d in original[topic]]
