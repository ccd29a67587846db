"""Offline segmentation of a bag: bag -> Segmenter -> a copy of the bag plus the node's three output topics.

Every input message is copied unchanged (same topics, types, QoS, log times). Event packets are decoded and moved
into the image clock by the node's `EventStream` (evt3: stream decoder + header-offset clock; mono: as is), and fed
to the Segmenter. Each image waits (in bag time, not wall time) until the event stream has reached its stamp, so its
window holds every event recorded before it whatever the message order in the bag; after `max_event_wait_ms`
of bag time without that, it is segmented with the events there are (counted as `late_events`). Masks are
written at the image's log time with the image's header: raw_mask (mono8 class ids, 255 = unlabeled),
colored_mask and overlay (rgb8), under `output_namespace` (default the node's, /mambaseg_node).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mambaseg_core.bags.messages import EVENT_PACKET, IMAGE, image_message
from mambaseg_core.bags.reader import BagError, BagEventPacket, BagImage, BagReader, BagRecord
from mambaseg_core.bags.topics import DEFAULT_TOPICS, NODE_NAMESPACE, OUTPUT_NAMES, output_topics
from mambaseg_core.bags.writer import BagWriter, qos_profile
from mambaseg_core.events import UnsupportedEncodingError
from mambaseg_core.pipeline import SegmentationResult, Segmenter
from mambaseg_core.pipeline.event_clock import EventClockSetting, EventStream
from mambaseg_core.pipeline.ros_messages import MASK_ENCODINGS, mask_image

OUTPUT_QOS = qos_profile(depth=5)  # the node's output publishers
ResultCallback = Callable[[BagImage, SegmentationResult], None]


@dataclass
class SegmentOptions:
    """What to read and write (topic defaults: mambaseg_core.bags.topics)."""

    image_topic: str = DEFAULT_TOPICS.image
    events_topic: str = DEFAULT_TOPICS.events
    output_namespace: str = NODE_NAMESPACE
    outputs: tuple[str, ...] = OUTPUT_NAMES  # a subset of raw_mask, colored_mask, overlay
    storage: str | None = None  # mcap | sqlite3; None = the input bag's
    event_clock: EventClockSetting = "auto"  # auto (evt3: header_offset, else as_is) | header_offset | as_is
    max_event_wait_ms: float = 1000.0  # bag time an image waits for events up to its stamp
    time_jump_tolerance_ms: float = 500.0  # event clock steps beyond this reset the event buffer


@dataclass
class SegmentReport:
    """Counters of one run; `malformed` holds skipped messages per topic with the first error of each."""

    images: int = 0
    masks: int = 0
    skipped_no_events: int = 0  # Segmenter policy missing_events=skip
    late_events: int = 0  # segmented after max_event_wait_ms without the event stream reaching the image stamp
    rejected_images: int = 0  # wrong size for the model / sensor_size
    event_packets: int = 0
    events: int = 0
    unsupported_event_packets: int = 0
    time_jumps: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # first error per kind (topic or counter name)

    def summary(self) -> str:
        lines = [
            f"images {self.images}, masks {self.masks}, skipped (no events) {self.skipped_no_events}, "
            f"late events {self.late_events}, rejected images {self.rejected_images}",
            f"event packets {self.event_packets} ({self.events} events), unsupported encoding "
            f"{self.unsupported_event_packets}, time jumps {self.time_jumps}",
        ]
        for topic, count in self.malformed.items():
            lines.append(f"malformed messages on {topic}: {count} skipped (first: {self.errors.get(topic)})")
        for kind in ("rejected_images", "unsupported_event_packets"):
            if kind in self.errors:
                lines.append(f"{kind}: first error: {self.errors[kind]}")
        return "\n".join(lines)


class _Run:
    """The per-bag state: event stream, images waiting for their events, output topics."""

    def __init__(
        self,
        segmenter: Segmenter,
        writer: BagWriter,
        options: SegmentOptions,
        outputs: dict[str, str],
        report: SegmentReport,
        on_result: ResultCallback | None,
    ):
        self.segmenter = segmenter
        self.writer = writer
        self.outputs = outputs  # {output name: topic}
        self.report = report
        self.on_result = on_result
        tolerance_us = int(options.time_jump_tolerance_ms * 1000)
        self.events = EventStream(options.event_clock, tolerance_us, segmenter.config.sensor_size)
        self.pending: collections.deque[BagImage] = collections.deque()  # images waiting for their events
        self.max_wait_ns = int(options.max_event_wait_ms * 1e6)

    def feed(self, record: BagRecord) -> None:
        item = record.decoded
        if isinstance(item, BagEventPacket):
            self._on_packet(item)
        elif isinstance(item, BagImage):
            self._on_image(item)
        self._flush(record.log_time_ns)

    def finish(self) -> None:
        self._flush(None)

    def _on_packet(self, packet: BagEventPacket) -> None:
        report = self.report
        report.event_packets += 1
        try:
            batch = self.events.decode(
                packet.encoding, packet.payload, time_base=packet.time_base, is_bigendian=packet.is_bigendian
            )
        except UnsupportedEncodingError as exc:
            report.unsupported_event_packets += 1
            report.errors.setdefault("unsupported_event_packets", str(exc))
            return
        except ValueError as exc:
            report.malformed[packet.topic] = report.malformed.get(packet.topic, 0) + 1
            report.errors.setdefault(packet.topic, f"{type(exc).__name__}: {exc}")
            return
        batch, jumped = self.events.align(batch, packet.stamp_ns // 1000, packet.encoding)
        if jumped:  # the images waiting belong to the old timeline
            self._flush(None)
            self.segmenter.reset()
            report.time_jumps += 1
        self.segmenter.add_events(batch)
        report.events += len(batch)

    def _on_image(self, image: BagImage) -> None:
        self.report.images += 1
        try:
            self.segmenter.check_image(image.pixels)
        except ValueError as exc:
            self._reject(exc)
            return
        self.pending.append(image)

    def _reject(self, exc: ValueError) -> None:
        self.report.rejected_images += 1
        self.report.errors.setdefault("rejected_images", str(exc))

    def _flush(self, now_ns: int | None) -> None:
        """Segment the waiting images whose events are complete (all of them when `now_ns` is None)."""
        while self.pending:
            image = self.pending[0]
            complete = self.segmenter.events_reached(image.stamp_ns // 1000)
            timed_out = now_ns is None or now_ns - image.log_time_ns > self.max_wait_ns
            if not (complete or timed_out):
                return
            self.pending.popleft()
            if not complete and now_ns is not None:  # at the end of the bag no more events can come
                self.report.late_events += 1
            self._segment(image)

    def _segment(self, image: BagImage) -> None:
        try:
            result = self.segmenter.segment(image.pixels, image.stamp_ns // 1000)
        except ValueError as exc:
            self._reject(exc)
            return
        if result is None:
            self.report.skipped_no_events += 1
            return
        for name, topic in self.outputs.items():
            message = image_message(mask_image(result, name), MASK_ENCODINGS[name], image.stamp_ns, image.frame_id)
            self.writer.write(topic, image.log_time_ns, message)
        self.report.masks += 1
        if self.on_result is not None:
            self.on_result(image, result)


def bag_storage(path: str | Path) -> str:
    """The storage plugin of a bag folder: mcap or sqlite3."""
    path = Path(path)
    if any(path.glob("*.mcap")):
        return "mcap"
    if any(path.glob("*.db3")):
        return "sqlite3"
    raise BagError(f"{path} holds no .mcap or .db3 file")


def segment_bag(
    input_path: str | Path,
    output_path: str | Path,
    segmenter: Segmenter,
    options: SegmentOptions | None = None,
    *,
    on_result: ResultCallback | None = None,
    progress: bool = False,
) -> SegmentReport:
    """Segment every image of `input_path` and write `output_path` (module docstring); returns the counters.

    Raises BagError for a missing bag or topic (the message names it and lists the bag's topics), ValueError
    for unknown output names or an output topic the input already has.
    """
    options = options or SegmentOptions()
    unknown = set(options.outputs) - set(OUTPUT_NAMES)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {list(OUTPUT_NAMES)}")
    all_outputs = output_topics(options.output_namespace)
    outputs = {name: all_outputs[name] for name in options.outputs}
    report = SegmentReport()
    with BagReader(input_path) as reader:
        reader.require_topic(options.image_topic, IMAGE)
        reader.require_topic(options.events_topic, EVENT_PACKET)
        taken = sorted(set(outputs.values()) & set(reader.topics))
        if taken:
            raise ValueError(f"the input bag already has the output topic(s) {taken}: choose another namespace")
        storage = options.storage or bag_storage(input_path)
        with BagWriter(output_path, storage, reader.store) as writer:
            for connection in reader.connections:
                if not writer.has_topic(connection.topic):  # one declaration per topic
                    writer.copy_connection(connection)
            for topic in outputs.values():
                writer.add_topic(topic, IMAGE, OUTPUT_QOS)
            run = _Run(segmenter, writer, options, outputs, report, on_result)
            records = reader.records([options.image_topic], [options.events_topic])
            for record in tqdm(records, total=reader.message_count, unit="msg", disable=not progress):
                writer.write_raw(record.connection.topic, record.log_time_ns, record.data)
                run.feed(record)
            run.finish()
        for topic, count in reader.malformed.counts.items():
            report.malformed[topic] = report.malformed.get(topic, 0) + count
            report.errors.setdefault(topic, reader.malformed.first_error[topic])
    return report
