"""Launch mambaseg_node: camera image + event stream in, ~/raw_mask, ~/colored_mask, ~/overlay out.

    ros2 launch mambaseg_ros mambaseg.launch.py image_topic:=/camera/image_raw \
        events_topic:=/event_camera/events checkpoint:=/path/to/mambaseg_dsec.pt device:=cuda:0

Deliberately plain (arguments, one environment variable, one Node; no OpaqueFunction or conditions) so
that the test shim (test/launch_shim.py) reproduces exactly what `ros2 launch` does with it.
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("mambaseg_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "image_topic", default_value="/camera/image_raw", description="sensor_msgs/Image input topic"
            ),
            DeclareLaunchArgument(
                "events_topic",
                default_value="/event_camera/events",
                description="event_camera_msgs/EventPacket input topic (evt3 or mono)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "mambaseg_node.yaml"]),
                description="Node parameters (YAML, /**: ros__parameters:)",
            ),
            DeclareLaunchArgument(
                "checkpoint", default_value="", description="Model weights (.pt, ours or official MambaSeg)"
            ),
            DeclareLaunchArgument("device", default_value="cuda:0", description="Inference device: cuda:N or cpu"),
            # Large images over shared memory, UDP on loopback only (docs/spec ros.md §2).
            SetEnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE", PathJoinSubstitution([share, "config", "fastdds_shm.xml"])
            ),
            Node(
                package="mambaseg_ros",
                executable="mambaseg_node",
                name="mambaseg_node",
                output="screen",
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                    },
                ],
                remappings=[
                    ("image", LaunchConfiguration("image_topic")),
                    ("events", LaunchConfiguration("events_topic")),
                ],
            ),
        ]
    )
