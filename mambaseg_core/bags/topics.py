"""Default topic names of the bag tools, in one place (converters write them, `segment` and `play` read them).

Inputs follow the usual driver names (the launch file's defaults); outputs are the node's own topics, so a bag
written by `mambaseg-bag segment` looks like a recording of a live `mambaseg_node`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mambaseg_core.pipeline.ros_messages import MASK_ENCODINGS

NODE_NAMESPACE = "/mambaseg_node"
OUTPUT_NAMES = tuple(MASK_ENCODINGS)
"""Node outputs: class ids (mono8, 255 = unlabeled), colored mask (rgb8), overlay (rgb8)."""


@dataclass(frozen=True)
class BagTopics:
    """Topic names of a sequence bag."""

    image: str = "/camera/image_raw"  # sensor_msgs/Image rgb8 (DSEC, synthetic) or mono8 (DDD17)
    events: str = "/event_camera/events"  # event_camera_msgs/EventPacket, evt3 (default) or mono
    camera_info: str = "/camera/camera_info"  # sensor_msgs/CameraInfo, one per image, same stamp
    labels: str = "/ground_truth/semantic"  # sensor_msgs/Image mono8 class ids at the image size, 255 = unlabeled


DEFAULT_TOPICS = BagTopics()


def output_topics(namespace: str = NODE_NAMESPACE) -> dict[str, str]:
    """{output name: topic}, e.g. {"raw_mask": "/mambaseg_node/raw_mask", ...}."""
    return {name: f"{namespace.rstrip('/')}/{name}" for name in OUTPUT_NAMES}
