"""mambaseg_node in-process: one mask per image with the input header, right encodings and sizes, class ids equal
to the Segmenter called directly on the same inputs; parameter validation at start-up names the parameter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from seg_harness import (  # noqa: E402
    SpunNode,
    frame_player,
    node_overrides,
    ros_context,
    stamps_us,
    synthetic_frame,
    write_tiny_model_config,
)

from mambaseg_core.pipeline import Segmenter, build_model  # noqa: E402
from mambaseg_ros.conversions import image_to_numpy  # noqa: E402
from mambaseg_ros.node import MambaSegNode  # noqa: E402
from mambaseg_ros.params import ParameterError  # noqa: E402

OUTPUTS = ["/mambaseg_node/raw_mask", "/mambaseg_node/colored_mask", "/mambaseg_node/overlay"]
IMAGE_H, IMAGE_W = 64, 96  # twice the tiny model's 32x48: exercises resize + nearest upsampling


@pytest.fixture
def context() -> Iterator[Any]:
    with ros_context() as context:
        yield context


def test_one_mask_per_image_matching_the_segmenter(context, tmp_path):
    model_config = write_tiny_model_config(tmp_path)
    overrides = node_overrides(model_config, diagnostics_period_s=0.2)
    spun = SpunNode(MambaSegNode(context=context, parameter_overrides=overrides))
    client = rclpy.create_node("test_client", context=context)
    diagnostics: list[DiagnosticArray] = []
    client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    try:
        driver = frame_player(client, "/image", "/events", OUTPUTS)
        assert driver.wait_for_connections(), "the node's topics never connected"
        frames = [synthetic_frame(i, IMAGE_H, IMAGE_W) for i in range(3)]
        assert driver.run_lockstep(frames), f"received {[len(v) for v in driver.received.values()]} of 3 each"
        driver.wait_for(lambda: False, 0.5)  # anything extra would arrive now

        def reported() -> dict[str, str]:
            return {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}

        assert driver.wait_for(lambda: reported().get("total_masks") == "3", 5.0), reported()
        settings = spun.node.settings
    finally:
        spun.stop()
        client.destroy_node()

    for topic, encoding, channels in zip(OUTPUTS, ("mono8", "rgb8", "rgb8"), (1, 3, 3)):
        messages = driver.received[topic]
        assert stamps_us(messages) == [f.stamp_us for f in frames], topic
        for msg in messages:
            assert (msg.encoding, msg.height, msg.width) == (encoding, IMAGE_H, IMAGE_W), topic
            assert msg.step == IMAGE_W * channels and msg.header.frame_id == "camera"

    # The same frames through a Segmenter built the way the node builds it.
    direct = Segmenter(build_model(None, str(model_config), random_seed=0), settings.segmenter, "cpu")
    for frame in frames:
        direct.add_events(frame.events)
    for frame, raw, colored in zip(frames, *(driver.received[t] for t in OUTPUTS[:2])):
        expected = direct.segment(frame.image, frame.stamp_us)
        ids = image_to_numpy(raw)
        print(f"frame {frame.stamp_us}: {int((ids != expected.class_ids).sum())} ids differ")
        np.testing.assert_array_equal(ids, expected.class_ids)
        np.testing.assert_array_equal(image_to_numpy(colored), expected.colored)

    # Every stage of the worker is timed, in order, and the stages add up to no more than the node's latency.
    values = reported()
    assert values["precision"] == "fp32"  # the default, auto, on the CPU
    stages = ["queue", "stage_image", "wait_events", "window", "voxel", "preprocess", "forward", "postprocess"]
    stages += ["publish_raw_mask", "publish_colored_mask", "publish_overlay"]
    assert values["stages_are"].endswith(", ".join(stages)), values["stages_are"]
    stage_ms = {name: float(values[f"stage_p50_ms.{name}"]) for name in stages}
    assert all(ms >= 0 for ms in stage_ms.values()) and stage_ms["forward"] > 0, stage_ms
    assert float(values["inference_p50_ms"]) == stage_ms["forward"]
    assert sum(stage_ms.values()) <= 1.5 * float(values["latency_p90_ms"]), (stage_ms, values["latency_p90_ms"])


@pytest.mark.parametrize("events_first", [True, False])
def test_bag_loop_clears_old_events_and_recovers(context, tmp_path, events_first):
    overrides = node_overrides(write_tiny_model_config(tmp_path))
    spun = SpunNode(MambaSegNode(context=context, parameter_overrides=overrides))
    client = rclpy.create_node("test_client", context=context)
    try:
        driver = frame_player(client, "/image", "/events", OUTPUTS[:1])
        assert driver.wait_for_connections()
        assert driver.run_lockstep([synthetic_frame(i, 32, 48) for i in (30, 31)])
        looped = synthetic_frame(0, 32, 48)  # 1.55 s back in time, beyond time_jump_tolerance_ms
        driver.send(looped, events_first=events_first)
        assert driver.wait_for(lambda: len(driver.received[OUTPUTS[0]]) == 3, 60.0), "no mask after the loop"
        counts = spun.node.counters.snapshot()
    finally:
        spun.stop()
        client.destroy_node()
    assert stamps_us(driver.received[OUTPUTS[0]])[-1] == looped.stamp_us
    assert counts["time_jumps"] >= 1 and counts["skipped_no_events"] == 0


def test_network_resolution_output_and_publish_toggles(context, tmp_path):
    model_config = write_tiny_model_config(tmp_path)
    overrides = node_overrides(model_config, output_resolution="network", publish_overlay=False)
    spun = SpunNode(MambaSegNode(context=context, parameter_overrides=overrides))
    client = rclpy.create_node("test_client", context=context)
    try:
        assert spun.node.count_publishers("/mambaseg_node/overlay") == 0
        driver = frame_player(client, "/image", "/events", OUTPUTS[:2])
        assert driver.wait_for_connections()
        assert driver.run_lockstep([synthetic_frame(0, IMAGE_H, IMAGE_W)])
    finally:
        spun.stop()
        client.destroy_node()
    raw = driver.received[OUTPUTS[0]][0]
    assert (raw.height, raw.width) == (32, 48)


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"overlay_alpha": 2.0}, "overlay_alpha"),
        ({"device": "tpu:0"}, "device"),
        ({"allow_random_weights": False}, "checkpoint"),
        ({"checkpoint": "/nonexistent/mambaseg.pt"}, "checkpoint"),
        ({"model_config": ""}, "model_config"),
        ({"window_mode": "frames"}, "window_mode"),
        ({"window_events": 0}, "window_events"),
        ({"image_reliability": "sometimes"}, "image_reliability"),
        ({"class_set": "dsec11"}, "class_set"),  # the tiny model has 6 classes
        ({"palette": [0xFF0000, 0x00FF00]}, "palette"),
        ({"sensor_width": 48}, "sensor_width"),
        ({"sensor_width": 40, "sensor_height": 32, "image_fit": "crop_bottom"}, "sensor_width"),
    ],
)
def test_invalid_parameters_are_rejected_at_start_up(context, tmp_path, values, name):
    model_config = write_tiny_model_config(tmp_path)
    with pytest.raises(ParameterError) as info:
        MambaSegNode(context=context, parameter_overrides=node_overrides(model_config, **values))
    print(info.value)
    assert info.value.name == name and f"'{name}'" in str(info.value)


def test_node_loads_a_checkpoint_without_random_weights(context, tmp_path):
    import torch

    from mambaseg_core.models import save_checkpoint

    model = build_model(None, str(write_tiny_model_config(tmp_path)), random_seed=3)
    save_checkpoint(model, tmp_path / "tiny.pt")
    overrides = node_overrides(tmp_path / "unused.yaml", checkpoint=str(tmp_path / "tiny.pt"), model_config="")
    overrides = [p for p in overrides if p.name != "allow_random_weights"]
    node = MambaSegNode(context=context, parameter_overrides=overrides)
    try:
        loaded = node.segmenter.model.state_dict()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    finally:
        node.destroy_node()


def test_node_accepts_an_official_checkpoint(context, tmp_path, reference_dir):
    """The official-format fixture (64x96 gray, 6 classes) loads through the node; image_size comes from
    model_config because official checkpoints do not record it. Its logits match the official run."""
    import torch

    reference = torch.load(reference_dir / "official_small_gray.pt", map_location="cpu", weights_only=False)
    model_config = tmp_path / "size.yaml"
    model_config.write_text("image_size: [64, 96]\n")
    overrides = node_overrides(model_config, checkpoint=str(reference_dir / "official_small_gray.pt"))
    overrides = [p for p in overrides if p.name != "allow_random_weights"]
    node = MambaSegNode(context=context, parameter_overrides=overrides)
    try:
        assert node.segmenter.network_size == (64, 96) and node.segmenter.image_channels == 1
        with torch.inference_mode():
            logits = node.segmenter.model(image=reference["image"].float(), events=reference["events"].float())
    finally:
        node.destroy_node()
    error = ((logits - reference["logits"]).abs().max() / reference["logits"].abs().max()).item()
    print(f"max relative error vs. the official logits: {error:.2e}")
    assert error < 1e-4


def test_unreadable_checkpoint_is_a_parameter_error(context, tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    overrides = node_overrides(write_tiny_model_config(tmp_path), checkpoint=str(bad))
    with pytest.raises(ParameterError) as info:
        MambaSegNode(context=context, parameter_overrides=overrides)
    print(info.value)
    assert info.value.name == "checkpoint"
