"""rosbag2 I/O without a ROS runtime (pure `rosbags`): type store, writer, streaming reader, offline
segmentation of a bag with the Segmenter, and dataset / synthetic sequences -> bags.

    from mambaseg_core.bags import dsec_source, write_sequence_bag, segment_bag
    write_sequence_bag("seq_bag", dsec_source("DSEC/test/zurich_city_13_a"))
    report = segment_bag("seq_bag", "seq_bag_masks", segmenter)
"""

from mambaseg_core.bags.convert import ConvertReport, write_sequence_bag
from mambaseg_core.bags.dump import OverlayDump
from mambaseg_core.bags.messages import (
    CAMERA_INFO,
    EVENT_PACKET,
    IMAGE,
    Intrinsics,
    camera_info_message,
    event_packet_message,
    image_message,
)
from mambaseg_core.bags.reader import BagError, BagEventPacket, BagImage, BagReader, BagRecord
from mambaseg_core.bags.segment import SegmentOptions, SegmentReport, bag_storage, segment_bag
from mambaseg_core.bags.sources import (
    BagFrame,
    SequenceSource,
    ddd17_source,
    dsec_source,
    rectify_events,
    synthetic_source,
)
from mambaseg_core.bags.topics import DEFAULT_TOPICS, NODE_NAMESPACE, OUTPUT_NAMES, BagTopics, output_topics
from mambaseg_core.bags.typesys import typestore
from mambaseg_core.bags.writer import BagWriter, qos_profile

__all__ = [
    "CAMERA_INFO",
    "DEFAULT_TOPICS",
    "EVENT_PACKET",
    "IMAGE",
    "NODE_NAMESPACE",
    "OUTPUT_NAMES",
    "BagError",
    "BagEventPacket",
    "BagFrame",
    "BagImage",
    "BagReader",
    "BagRecord",
    "BagTopics",
    "BagWriter",
    "ConvertReport",
    "Intrinsics",
    "OverlayDump",
    "SegmentOptions",
    "SegmentReport",
    "SequenceSource",
    "bag_storage",
    "camera_info_message",
    "ddd17_source",
    "dsec_source",
    "event_packet_message",
    "image_message",
    "output_topics",
    "qos_profile",
    "rectify_events",
    "segment_bag",
    "synthetic_source",
    "typestore",
    "write_sequence_bag",
]
