"""launch/mambaseg.launch.py through the launch shim (start, publish, mask arrives, SIGINT, rc 0), with real
launch_ros where installed; config/mambaseg_node.yaml and config/rviz/mambaseg.rviz against the node."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from launch_shim import plan_launch  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from seg_harness import (  # noqa: E402
    frame_player,
    process_env,
    stamps_us,
    stop,
    synthetic_frame,
    write_params,
    write_tiny_model_config,
)

from mambaseg_ros.params import PARAMETERS  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "mambaseg.launch.py"
ARGUMENTS = {"image_topic", "events_topic", "params_file", "checkpoint", "device"}
OUTPUTS = ["/mambaseg_node/raw_mask", "/mambaseg_node/colored_mask", "/mambaseg_node/overlay"]


def shim_plan(tmp_path: Path, overrides: dict[str, str] | None = None):
    return plan_launch(
        LAUNCH_FILE,
        overrides,
        share_dirs={"mambaseg_ros": REPO_ROOT},  # the source tree stands in for the installed share folder
        fallback_modules={"mambaseg_ros/mambaseg_node": "mambaseg_ros.node"},
        tmp_dir=tmp_path,
    )


def test_launch_defaults_resolve(tmp_path):
    plan = shim_plan(tmp_path)
    assert set(plan.arguments) == ARGUMENTS
    assert all(plan.descriptions[name] for name in ARGUMENTS), "every launch argument needs a description"
    assert Path(plan.arguments["params_file"]) == REPO_ROOT / "config" / "mambaseg_node.yaml"
    profile = Path(plan.environment["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert profile == REPO_ROOT / "config" / "fastdds_shm.xml" and profile.is_file()
    (command,) = plan.commands
    ros_args = command[command.index("--ros-args") :]
    assert ros_args[1:3] == ["-r", "__node:=mambaseg_node"]
    assert "image:=/camera/image_raw" in ros_args and "events:=/event_camera/events" in ros_args
    param_files = [ros_args[i + 1] for i, arg in enumerate(ros_args) if arg == "--params-file"]
    assert param_files[0] == plan.arguments["params_file"]
    launch_params = yaml.safe_load(Path(param_files[1]).read_text())["/**"]["ros__parameters"]
    assert launch_params == {"checkpoint": "", "device": "cuda:0"}  # strings, also when empty


def test_launch_file_starts_a_working_node(tmp_path):
    params = write_params(tmp_path, write_tiny_model_config(tmp_path))
    plan = shim_plan(
        tmp_path,
        {"image_topic": "/shim/image", "events_topic": "/shim/events", "params_file": str(params), "device": "cpu"},
    )
    (command,) = plan.commands
    node = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**process_env(), **plan.environment},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    client = rclpy.create_node("test_launch_client", context=context)
    try:
        driver = frame_player(client, "/shim/image", "/shim/events", OUTPUTS)
        assert driver.wait_for_connections(120.0), "the launched node never connected"
        frames = [synthetic_frame(i, 32, 48) for i in range(2)]
        assert driver.run_lockstep(frames)
    finally:
        rc, output = stop(node)
        print(output)
        client.destroy_node()
        rclpy.try_shutdown(context=context)
    for topic in OUTPUTS:
        assert stamps_us(driver.received[topic]) == [f.stamp_us for f in frames], topic
    assert rc == 0, f"SIGINT should end the launched node with rc 0, got {rc}"


def test_launch_file_with_real_launch_ros():
    pytest.importorskip("launch_ros", reason="launch/launch_ros are not installable here (docs/spec ros.md §4)")
    import runpy

    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    description = runpy.run_path(str(LAUNCH_FILE))["generate_launch_description"]()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert declared == ARGUMENTS and len(nodes) == 1
    assert nodes[0].node_package == "mambaseg_ros" and nodes[0].node_executable == "mambaseg_node"


def test_params_file_lists_every_parameter_with_its_default():
    text = (REPO_ROOT / "config" / "mambaseg_node.yaml").read_text()
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert list(values) == [spec.name for spec in PARAMETERS]
    for spec in PARAMETERS:
        default = [] if isinstance(spec.default, Parameter.Type) else spec.default
        assert values[spec.name] == default, spec.name
    for line in text.splitlines():
        if ":" in line and not line.strip().startswith("#") and not line.strip().endswith(":"):
            assert "#" in line, f"uncommented key: {line.strip()}"


def test_rviz_config_shows_image_overlay_and_colored_mask():
    config = yaml.safe_load((REPO_ROOT / "config" / "rviz" / "mambaseg.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"]}
    assert topics == {"/camera/image_raw", "/mambaseg_node/overlay", "/mambaseg_node/colored_mask"}
    assert os.path.basename(LAUNCH_FILE) == "mambaseg.launch.py"
