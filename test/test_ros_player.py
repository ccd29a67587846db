"""The frame player (used by `make demo`) and a shortened demo run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")

from seg_harness import TINY_MODEL, process_env

from mambaseg_core.events import EventBatch, Evt3Decoder, decode_mono
from mambaseg_ros.conversions import stamp_to_us
from mambaseg_ros.player import event_packets

pytestmark = pytest.mark.ros


def random_events(n: int = 5000, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(2_000_000, 2_050_000, n))
    return EventBatch.from_arrays(rng.integers(0, 64, n), rng.integers(0, 48, n), t, rng.integers(0, 2, n))


@pytest.mark.parametrize("encoding", ["evt3", "mono"])
@pytest.mark.parametrize("packet_us", [None, 1000, 7000])
def test_event_packets_split_by_time_and_decode_back(encoding, packet_us):
    events = random_events()
    packets = event_packets(events, width=64, height=48, encoding=encoding, packet_us=packet_us)
    # packets are cut on absolute multiples of packet_us (as the bag converter cuts them)
    expected_count = 1 if packet_us is None else len(np.unique(events.t // packet_us))
    assert len(packets) == expected_count
    decoder = Evt3Decoder(64, 48)
    decoded = []
    for msg in packets:
        payload = bytes(msg.events)
        batch = decoder.decode(payload) if encoding == "evt3" else decode_mono(payload, msg.time_base)
        first_us = stamp_to_us(msg.header.stamp)
        assert first_us == batch.t[0], "a packet is stamped with its first event's time"
        if packet_us is not None:
            last_us = first_us + int(batch.t[-1] - batch.t[0])
            assert first_us // packet_us == last_us // packet_us, "a packet stays within one absolute time slot"
        decoded.append(batch)
    merged = EventBatch.concatenate(decoded)
    offset = int(events.t[0]) - int(merged.t[0])  # evt3 carries 24-bit sensor time: compare relative times
    for field in "xyp":
        np.testing.assert_array_equal(getattr(merged, field), getattr(events, field))
    np.testing.assert_array_equal(merged.t + offset, events.t)


def test_event_packets_reject_unknown_encoding():
    with pytest.raises(ValueError, match="libcaer"):
        event_packets(random_events(10), width=64, height=48, encoding="libcaer")


@pytest.mark.slow
def test_shortened_demo_writes_artefacts_and_answers_every_frame(tmp_path, repo_root):
    config = tmp_path / "tiny_dsec11.yaml"  # the demo scores against the DSEC 11-class ground truth
    config.write_text(yaml.safe_dump({**TINY_MODEL, "num_classes": 11}))
    out = tmp_path / "demo_output"
    cmd = [sys.executable, "-m", "mambaseg_ros.demo", "--seconds", "0.5", "--model-config", str(config)]
    cmd += ["--random-weights", "--device", "cpu", "--out", str(out)]
    run = subprocess.run(cmd, cwd=repo_root, env=process_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "metrics_vs_ground_truth"}, indent=1))
    assert summary["sequence"]["frames"] == 9
    assert summary["masks_received"] == 9 and summary["all_frames_answered"]
    assert summary["node_exit_code"] == 0
    assert "RANDOM WEIGHTS" in summary["model"]
    metrics = summary["metrics_vs_ground_truth"]["all"]
    assert metrics["pixels"] == 9 * 32 * 48  # every ground-truth pixel scored once
    strip = cv2.imread(str(out / "strip.png"))
    assert strip is not None and strip.shape[0] > 200
    assert (out / "demo.mp4").stat().st_size > 0
    assert "mIoU" in (out / "summary.md").read_text()
