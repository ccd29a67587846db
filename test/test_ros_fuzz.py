"""Thousands of malformed messages (random bytes, unknown encodings, bad image layouts and sizes, clocks stepping
back, an event flood): the node stays up, keeps memory bounded, still segments a good frame, and /diagnostics
counts every rejected message by kind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from event_camera_msgs.msg import EventPacket  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from seg_harness import (  # noqa: E402
    SpunNode,
    event_packet,
    frame_player,
    image_message,
    node_overrides,
    ros_context,
    synthetic_frame,
    write_tiny_model_config,
)
from sensor_msgs.msg import Image  # noqa: E402

from mambaseg_core.events import EventBatch  # noqa: E402
from mambaseg_ros.conversions import us_to_stamp  # noqa: E402
from mambaseg_ros.node import MambaSegNode  # noqa: E402

H, W = 32, 48  # the tiny model's input size = the sensor size here
RAW_MASK = "/mambaseg_node/raw_mask"
BUFFER_MAX_EVENTS = 20_000


@pytest.fixture
def setup(tmp_path) -> Iterator[tuple[Any, Any]]:
    with ros_context() as context:
        overrides = node_overrides(
            write_tiny_model_config(tmp_path),
            sensor_width=W,
            sensor_height=H,
            buffer_max_events=BUFFER_MAX_EVENTS,
            events_queue_size=2000,
            image_queue_size=100,
            diagnostics_period_s=0.2,
        )
        spun = SpunNode(MambaSegNode(context=context, parameter_overrides=overrides))
        client = rclpy.create_node("fuzz_client", context=context)
        try:
            yield spun, frame_player(client, "/image", "/events", [RAW_MASK])
        finally:
            spun.stop()
            client.destroy_node()


def publish_all(driver: Any, node: MambaSegNode, kind: str, messages: list[Any]) -> None:
    """Publish in chunks the reliable queues can hold, waiting until the node has received each chunk."""
    publisher = driver.image_pub if kind == "images" else driver.events_pub
    for start in range(0, len(messages), 40):
        chunk = messages[start : start + 40]
        target = node.counters.snapshot()[kind] + len(chunk)
        for msg in chunk:
            publisher.publish(msg)
        assert driver.wait_for(lambda t=target: node.counters.snapshot()[kind] >= t, 60.0), (
            f"the node received {target - node.counters.snapshot()[kind]} {kind} fewer than sent"
        )


def packet(encoding: str, data: bytes, stamp_us: int, big_endian: bool = False) -> EventPacket:
    msg = EventPacket(encoding=encoding, width=W, height=H, time_base=0, is_bigendian=big_endian)
    msg.header.stamp = us_to_stamp(stamp_us)
    msg.events = data
    return msg


def bad_image(rng: np.random.Generator, index: int) -> Image:
    msg = image_message(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), 1_000_000 + index)
    match index % 5:
        case 0:
            msg.encoding = rng.choice(["yuv422", "jpeg", "", "32FC1", "RGB8"])
        case 1:
            msg.step = int(rng.integers(0, W * 3))
        case 2:
            msg.data = bytes(int(rng.integers(0, H * W * 3)))
        case 3:
            msg.height, msg.data = 0, b""
        case 4:
            msg.width = W + int(rng.integers(1, 100))
    return msg


def test_fuzzed_inputs_are_counted_and_the_node_survives(setup):
    spun, driver = setup
    node = spun.node
    diagnostics: list[DiagnosticArray] = []
    driver.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, QoSProfile(depth=10))
    assert driver.wait_for_connections()
    rng = np.random.default_rng(0)
    stamp = iter(range(2_000_000_000, 3_000_000_000, 1000))

    random_evt3 = [packet("evt3", rng.bytes(int(rng.integers(0, 600))), next(stamp)) for _ in range(1000)]
    random_mono = [packet("mono", rng.bytes(8 * int(rng.integers(1, 60))), next(stamp)) for _ in range(300)]
    ragged_mono = [packet("mono", rng.bytes(8 * int(rng.integers(0, 50)) + int(rng.integers(1, 8))), next(stamp))
                   for _ in range(300)]  # fmt: skip
    big_endian = [packet("mono", bytes(16), next(stamp), big_endian=True) for _ in range(100)]
    unknown = [packet(str(rng.choice(["libcaer_cmp", "evt2", "", "EVT3", "trigger"])), rng.bytes(32), next(stamp))
               for _ in range(200)]  # fmt: skip
    for messages in (random_evt3, random_mono, ragged_mono, big_endian, unknown):
        publish_all(driver, node, "event_packets", messages)

    bad_images = [bad_image(rng, i) for i in range(500)]
    wrong_size = [image_message(np.zeros((H + 8, W, 3), np.uint8), 1_000_000 + i) for i in range(50)]
    publish_all(driver, node, "images", bad_images + wrong_size)

    # An event flood far beyond the buffer, then good frames whose clock steps back (a bag loop).
    flood = synthetic_frame(0, H, W).events
    n = 200_000
    flood = EventBatch.from_arrays(
        np.resize(flood.x, n), np.resize(flood.y, n), np.linspace(flood.t[0], flood.t[-1], n), np.resize(flood.p, n)
    )
    publish_all(driver, node, "event_packets", [event_packet(flood, W, H)])
    assert len(node.segmenter.buffer) <= BUFFER_MAX_EVENTS
    frames = [synthetic_frame(i, H, W) for i in (15, 16, 1)]  # 16 -> 1: the clock goes back 750 ms (bag loop)
    assert driver.run_lockstep(frames, timeout_per_frame=60.0), "the node stopped producing masks"

    expected = {
        "event_packets_malformed": len(ragged_mono) + len(big_endian),
        "event_packets_unsupported_encoding": len(unknown),
        "images_rejected": len(bad_images),
        "images_wrong_size": len(wrong_size),
        "masks": len(frames),
    }

    def reported() -> dict[str, str]:
        if not diagnostics:
            return {}
        return {kv.key: kv.value for kv in diagnostics[-1].status[0].values}

    def all_counted() -> bool:
        values = reported()
        return bool(values) and all(values.get(f"total_{key}") == str(count) for key, count in expected.items())

    assert driver.wait_for(all_counted, 30.0), f"diagnostics: {reported()}"
    values = reported()
    print({key: values[key] for key in sorted(values) if key.startswith("total_")})
    assert int(values["total_time_jumps"]) >= 1
    assert int(values["events_buffered"]) <= BUFFER_MAX_EVENTS
    assert any(d.status[0].level == DiagnosticStatus.WARN for d in diagnostics)  # while rejects were growing
