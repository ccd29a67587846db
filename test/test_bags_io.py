"""Bag I/O without ROS: type hashes, writer/reader round trips (sqlite3 + mcap), independent decoders (mcap +
mcap_ros2, rclpy's real typesupport), malformed messages, missing topics, and streaming with bounded memory."""

from __future__ import annotations

import inspect
import tracemalloc

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags", reason="needs rosbags (make setup installs it)")

from mambaseg_core.bags import (
    EVENT_PACKET,
    IMAGE,
    BagError,
    BagImage,
    BagReader,
    BagWriter,
    event_packet_message,
    image_message,
    typestore,
)
from mambaseg_core.bags.writer import EVENTS_QOS
from mambaseg_core.events import EventBatch, Evt3Decoder
from mambaseg_core.pipeline.ros_messages import image_to_rgb_or_mono

# docs/spec ros.md §3 and §5: identical from rosidl (the wheels / colcon build) and from rosbags.
EVENT_PACKET_RIHS01 = "RIHS01_d6fa176260b1f37e5a40845305315e150a0f18191241eb64f407442aa29844aa"
IMAGE_RIHS01 = "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
STORAGES = ["mcap", "sqlite3"]


def random_events(n: int, t0: int, t1: int, seed: int = 0, height: int = 24, width: int = 32) -> EventBatch:
    rng = np.random.default_rng(seed)
    return EventBatch.from_arrays(
        rng.integers(0, width, n), rng.integers(0, height, n), np.sort(rng.integers(t0, t1, n)), rng.integers(0, 2, n)
    )


def write_small_bag(path, storage: str, frames: int = 5, height: int = 24, width: int = 32):
    """frames x (one evt3 packet, one rgb8 image); returns the images and packets' events."""
    rng = np.random.default_rng(1)
    images, batches = [], []
    with BagWriter(path, storage) as writer:
        writer.add_topic("/cam/image", IMAGE)
        writer.add_topic("/cam/events", EVENT_PACKET, EVENTS_QOS)
        for k in range(frames):
            stamp_us = 5_000_000 + 50_000 * k
            events = random_events(200, stamp_us - 50_000, stamp_us, seed=k, height=height, width=width)
            packet = event_packet_message(events, encoding="evt3", width=width, height=height, seq=k, frame_id="cam")
            writer.write("/cam/events", int(events.t[0]) * 1000, packet)
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            writer.write("/cam/image", stamp_us * 1000, image_message(image, "rgb8", stamp_us * 1000, "cam"))
            images.append(image)
            batches.append(events)
    return images, batches


def test_type_hashes_match_the_real_typesupport():
    store = typestore()
    assert store.hash_rihs01("event_camera_msgs/msg/EventPacket") == EVENT_PACKET_RIHS01
    assert store.hash_rihs01("sensor_msgs/msg/Image") == IMAGE_RIHS01


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_and_current_metadata(tmp_path, storage):
    images, batches = write_small_bag(tmp_path / "bag", storage)
    metadata = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 9
    assert metadata["storage_identifier"] == storage
    hashes = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
        for t in metadata["topics_with_message_count"]
    }
    assert hashes == {"/cam/image": IMAGE_RIHS01, "/cam/events": EVENT_PACKET_RIHS01}
    qos = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
        for t in metadata["topics_with_message_count"]
    }
    assert qos["/cam/events"][0]["depth"] == 1000 and qos["/cam/events"][0]["reliability"] == "reliable"

    decoder = Evt3Decoder()
    got_images, got_events = [], []
    with BagReader(tmp_path / "bag") as reader:
        for record in reader.records(["/cam/image"], ["/cam/events"]):
            if isinstance(record.decoded, BagImage):
                got_images.append(record.decoded.pixels)
                assert record.decoded.frame_id == "cam" and record.decoded.stamp_ns == record.log_time_ns
            else:
                got_events.append(decoder.decode(record.decoded.payload))
    assert len(got_images) == len(images)
    for got, expected in zip(got_images, images, strict=True):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(got_events, batches, strict=True):
        # evt3 keeps 24-bit sensor time: compare times relative to the packet's first event.
        np.testing.assert_array_equal(got.t - got.t[0], expected.t - expected.t[0])
        for field in "xyp":
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))


def test_mcap_bag_decodes_with_the_independent_mcap_reader(tmp_path):
    pytest.importorskip("mcap_ros2", reason="needs mcap-ros2-support (dev extra)")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    images, batches = write_small_bag(tmp_path / "bag", "mcap")
    (mcap_file,) = (tmp_path / "bag").glob("*.mcap")
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        decoded = list(reader.iter_decoded_messages(log_time_order=True))
    schemas = {channel.topic: schema for schema, channel, _, _ in decoded}
    assert schemas["/cam/image"].name == "sensor_msgs/msg/Image" and schemas["/cam/image"].encoding == "ros2msg"
    got = [msg for _, channel, _, msg in decoded if channel.topic == "/cam/image"]
    for msg, expected in zip(got, images, strict=True):
        assert msg.encoding == "rgb8" and (msg.height, msg.width) == expected.shape[:2]
        np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(expected.shape), expected)
    packets = [msg for _, channel, _, msg in decoded if channel.topic == "/cam/events"]
    assert [p.encoding for p in packets] == ["evt3"] * len(batches)
    assert [p.seq for p in packets] == list(range(len(batches)))


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_messages_deserialize_with_rclpy(tmp_path, storage):
    pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
    pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
    from event_camera_msgs.msg import EventPacket
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    images, batches = write_small_bag(tmp_path / "bag", storage)
    classes = {"/cam/image": Image, "/cam/events": EventPacket}
    with BagReader(tmp_path / "bag") as reader:
        messages = [
            (r.connection.topic, deserialize_message(r.data, classes[r.connection.topic])) for r in reader.records()
        ]
    got_images = [m for topic, m in messages if topic == "/cam/image"]
    got_packets = [m for topic, m in messages if topic == "/cam/events"]
    for msg, expected in zip(got_images, images, strict=True):
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(expected.shape), expected)
        assert msg.header.frame_id == "cam"
    decoder = Evt3Decoder()
    for msg, expected in zip(got_packets, batches, strict=True):
        decoded = decoder.decode(np.frombuffer(msg.events, np.uint8))
        np.testing.assert_array_equal(decoded.x, expected.x)
        assert msg.header.stamp.sec * 1_000_000 + msg.header.stamp.nanosec // 1000 == expected.t[0]


def test_malformed_messages_are_counted_and_skipped(tmp_path):
    good = image_message(np.zeros((4, 6), np.uint8), "mono8", 1_000, "cam")
    unsupported = image_message(np.zeros((4, 6), np.uint8), "mono8", 3_000, "cam")
    unsupported.encoding = "32FC1"  # a valid message in an encoding the Segmenter cannot take
    with BagWriter(tmp_path / "bag", "sqlite3") as writer:
        writer.add_topic("/cam/image", IMAGE)
        writer.write("/cam/image", 1_000, good)
        writer.write_raw("/cam/image", 2_000, b"\x00\x01\x00\x00garbage")  # truncated CDR
        writer.write("/cam/image", 3_000, unsupported)
        writer.write("/cam/image", 4_000, good)
    with BagReader(tmp_path / "bag") as reader:
        records = list(reader.records(["/cam/image"]))
    assert [r.decoded is not None for r in records] == [True, False, False, True]
    assert [r.log_time_ns for r in records] == [1_000, 2_000, 3_000, 4_000]  # still yielded, undecoded
    assert reader.malformed.counts["/cam/image"] == 2
    assert "/cam/image: 2 skipped" in reader.malformed.summary()


def test_missing_topic_and_bag_errors_name_them(tmp_path):
    write_small_bag(tmp_path / "bag", "mcap", frames=1)
    with BagReader(tmp_path / "bag") as reader:
        with pytest.raises(BagError, match=r"no topic '/nope'.*/cam/image \(sensor_msgs/msg/Image\)"):
            reader.require_topic("/nope", IMAGE)
        with pytest.raises(BagError, match="'/cam/events' is event_camera_msgs/msg/EventPacket, expected sensor_msgs"):
            reader.require_topic("/cam/events", IMAGE)
    with pytest.raises(BagError, match="bag not found"):
        BagReader(tmp_path / "absent")
    with pytest.raises(FileExistsError, match="already exists"):
        BagWriter(tmp_path / "bag")


def test_image_decoding_honours_step_padding_and_colour_order():
    store = typestore()
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = pixels[:, :, ::-1].reshape(2, 9)  # bgr8 rows with 3 bytes of padding each
    msg = store.types[IMAGE](
        header=image_message(pixels, "rgb8", 0, "").header,
        height=2,
        width=3,
        encoding="bgr8",
        is_bigendian=0,
        step=12,
        data=padded.reshape(-1),
    )
    np.testing.assert_array_equal(image_to_rgb_or_mono(msg), pixels)
    msg.step = 8
    with pytest.raises(ValueError, match="step 8 is less than width"):
        image_to_rgb_or_mono(msg)


def peak_memory_reading(path, storage: str, frames: int, height: int = 128, width: int = 128) -> int:
    """Peak traced bytes while reading a bag of `frames` rgb8 images one record at a time."""
    with BagWriter(path, storage) as writer:
        writer.add_topic("/cam/image", IMAGE)
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        for k in range(frames):
            writer.write("/cam/image", k * 1_000_000, image_message(image, "rgb8", k * 1_000_000, "cam"))
    with BagReader(path) as reader:
        records = reader.records(["/cam/image"])
        assert inspect.isgenerator(records)
        tracemalloc.start()
        count = sum(isinstance(record.decoded, BagImage) for record in records)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert count == frames
    return peak


@pytest.mark.parametrize("storage", STORAGES)
def test_reader_streams_with_bounded_memory(tmp_path, storage):
    # A bag 8x longer must not need more memory to read: the reader holds a chunk, not the bag.
    image_bytes = 128 * 128 * 3
    short = peak_memory_reading(tmp_path / "short", storage, 40)
    long = peak_memory_reading(tmp_path / "long", storage, 320)
    print(f"peak memory reading 40 / 320 images: {short / image_bytes:.1f} / {long / image_bytes:.1f} images")
    assert long < 1.5 * short + 4 * image_bytes
    assert long < 60 * image_bytes  # the whole bag is 320 images
