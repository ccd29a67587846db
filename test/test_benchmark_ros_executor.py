"""benchmarks/ros_executor.py end to end, briefly: a publisher process at 1 kHz, the real node's packet callback."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 Python packages (rclpy): the benchmark runs mambaseg_node")
pytest.importorskip("event_camera_msgs", reason="needs event_camera_msgs: the benchmark sends EventPackets")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_packet_reaches_the_node_and_is_timed(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("ros_executor_benchmark", BENCHMARKS / "ros_executor.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        row, counters = bench.measure("DDD17", 2.0, tmp_path)
    finally:
        sys.path.remove(str(BENCHMARKS))
    dataset, rate, _, packets, *delivery = row[:7]
    assert (dataset, rate) == ("DDD17", "1000")
    # ~1 s of the 2 s stream falls in the measured part (after the first 300 packets): at 1 kHz, ~1000 packets.
    assert 500 <= packets <= 1300, packets
    assert 0 < float(delivery[0]) <= float(delivery[1]) <= float(delivery[2])  # publish -> callback, µs
    assert counters["event_packets"] >= 1900  # the whole stream arrived (a reliable topic)
    assert counters["events"] > 1_000_000 and not any(counters[key] for key in bench.PROBLEMS)
