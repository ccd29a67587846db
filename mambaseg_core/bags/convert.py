"""Sequence -> rosbag2: images, ground-truth labels, camera info and the event stream as ~1 ms EventPackets.

Per frame, in log-time order (log time = header stamp, so `ros2 bag play` replays the recording's timing):
the event packets before the frame's stamp, then the image (rgb8 or mono8), its camera info and, where the
frame has one, its label (mono8, 255 = unlabeled) -- all three with the image's stamp. Packets cut the stream
at every `packet_us` boundary of the image clock and at every image stamp; each is stamped with its first
event's time (as the metavision driver does) and encoded evt3 (default, the driver's format) or mono.
Topic names: mambaseg_core.bags.topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mambaseg_core.bags.messages import (
    CAMERA_INFO,
    EVENT_PACKET,
    IMAGE,
    camera_info_message,
    event_packet_message,
    image_message,
)
from mambaseg_core.bags.sources import BagFrame, SequenceSource
from mambaseg_core.bags.topics import DEFAULT_TOPICS, BagTopics
from mambaseg_core.bags.writer import EVENTS_QOS, IMAGE_QOS, BagWriter
from mambaseg_core.events import EventBatch
from mambaseg_core.events.packets import SUPPORTED_ENCODINGS, packet_bounds


@dataclass
class ConvertReport:
    """What a conversion wrote."""

    path: Path
    frames: int = 0
    labels: int = 0
    packets: int = 0
    events: int = 0

    def summary(self) -> str:
        return (
            f"{self.path}: {self.frames} images, {self.labels} labels, "
            f"{self.packets} event packets ({self.events} events)"
        )


class _SequenceWriter:
    """Writes one sequence's messages into an open BagWriter and counts them."""

    def __init__(
        self,
        writer: BagWriter,
        source: SequenceSource,
        topics: BagTopics,
        encoding: str,
        packet_us: int,
        frame_id: str,
        report: ConvertReport,
    ):
        self.writer = writer
        self.source = source
        self.topics = topics
        self.encoding = encoding
        self.packet_us = packet_us
        self.frame_id = frame_id
        self.report = report
        self.seq = 0  # EventPacket.seq: consecutive, so a consumer can detect lost packets
        self.last_event_us: int | None = None

    def write_events(self, events: EventBatch) -> None:
        if len(events) == 0:
            return
        if np.any(np.diff(events.t) < 0) or (self.last_event_us is not None and events.t[0] < self.last_event_us):
            raise ValueError(f"{self.source.name}: event times go backwards (the stream must be time-sorted)")
        self.last_event_us = int(events.t[-1])
        for start, stop in packet_bounds(events.t, self.packet_us):
            chunk = events[start:stop]
            message = event_packet_message(
                chunk,
                encoding=self.encoding,
                width=self.source.width,
                height=self.source.height,
                seq=self.seq,
                frame_id=self.frame_id,
            )
            self.writer.write(self.topics.events, int(chunk.t[0]) * 1000, message)
            self.seq += 1
            self.report.packets += 1
            self.report.events += len(chunk)

    def write_frame(self, frame: BagFrame) -> None:
        source, stamp = self.source, frame.stamp_ns
        if frame.image.shape[:2] != (source.height, source.width) or frame.image.dtype != np.uint8:
            raise ValueError(
                f"{source.name}: frame at {stamp} ns is {frame.image.dtype} {frame.image.shape}, "
                f"expected uint8 {source.height}x{source.width}"
            )
        encoding = "rgb8" if frame.image.ndim == 3 else "mono8"
        self.writer.write(self.topics.image, stamp, image_message(frame.image, encoding, stamp, self.frame_id))
        info = camera_info_message(stamp, self.frame_id, source.height, source.width, source.intrinsics)
        self.writer.write(self.topics.camera_info, stamp, info)
        if frame.label is not None:
            self.writer.write(self.topics.labels, stamp, image_message(frame.label, "mono8", stamp, self.frame_id))
            self.report.labels += 1
        self.report.frames += 1


def write_sequence_bag(
    path: str | Path,
    source: SequenceSource,
    *,
    topics: BagTopics = DEFAULT_TOPICS,
    storage: str = "mcap",
    encoding: str = "evt3",
    packet_us: int = 1000,
    frame_id: str = "camera",
    progress: bool = False,
) -> ConvertReport:
    """Write `source` as a new rosbag2 at `path` (module docstring); returns what was written."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise ValueError(f"unknown event encoding {encoding!r}; choose one of {list(SUPPORTED_ENCODINGS)}")
    if packet_us < 1:
        raise ValueError(f"packet_us must be >= 1, got {packet_us}")
    report = ConvertReport(Path(path))
    with BagWriter(path, storage) as writer:
        writer.add_topic(topics.image, IMAGE, IMAGE_QOS)
        writer.add_topic(topics.camera_info, CAMERA_INFO, IMAGE_QOS)
        writer.add_topic(topics.labels, IMAGE, IMAGE_QOS)
        writer.add_topic(topics.events, EVENT_PACKET, EVENTS_QOS)
        sequence = _SequenceWriter(writer, source, topics, encoding, packet_us, frame_id, report)
        carry = EventBatch.empty()  # events at or after the last written image: they follow it
        for frame in tqdm(source.frames, total=source.num_frames, unit="frame", disable=not progress):
            events = EventBatch.concatenate([carry, frame.events])
            before = int(np.searchsorted(events.t * 1000, frame.stamp_ns, side="left"))
            sequence.write_events(events[:before])
            sequence.write_frame(frame)
            carry = events[before:]
        sequence.write_events(carry)
    return report
