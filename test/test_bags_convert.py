"""Dataset -> bag -> `segment` round trips: the masks in the output bag equal those the Segmenter computes from
the dataset's own files (DSEC-Semantic and DDD17 fixtures); the synthetic writer stores frames, labels and an
event stream that decodes back exactly."""

from __future__ import annotations

import importlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("rosbags", reason="needs rosbags (make setup installs it)")

from seg_harness import TINY_MODEL

from mambaseg_core.bags import (
    DEFAULT_TOPICS,
    BagEventPacket,
    BagImage,
    BagReader,
    SegmentOptions,
    ddd17_source,
    dsec_source,
    output_topics,
    segment_bag,
    synthetic_source,
    write_sequence_bag,
)
from mambaseg_core.data.fixtures import write_ddd17_fixture, write_dsec_fixture
from mambaseg_core.events import EventBatch
from mambaseg_core.models import MambaSeg, load_model_config
from mambaseg_core.pipeline import Segmenter, SegmenterConfig
from mambaseg_core.pipeline.event_clock import EventStream
from mambaseg_core.synthetic import SceneConfig, SequenceConfig, generate_sequence

TOPICS = DEFAULT_TOPICS
MASK_TOPICS = output_topics()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The tiny model gains nothing from 2 threads, and OpenMP's spin-waits on a shared 2-core machine made
    # one forward pass 100x slower (3 s instead of 25 ms) while other processes were busy.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> MambaSeg:
    torch.manual_seed(0)
    return MambaSeg(load_model_config(dict(TINY_MODEL))).eval()


def read_output_masks(bag: Path) -> dict[str, dict[int, np.ndarray]]:
    """{output topic: {stamp ns: pixels}} of a segmented bag."""
    masks: dict[str, dict[int, np.ndarray]] = {topic: {} for topic in MASK_TOPICS.values()}
    with BagReader(bag) as reader:
        for record in reader.records(list(MASK_TOPICS.values()), only=list(MASK_TOPICS.values())):
            assert isinstance(record.decoded, BagImage)
            masks[record.connection.topic][record.decoded.stamp_ns] = record.decoded.pixels
    return masks


def assert_masks_equal(bag: Path, expected: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    got = read_output_masks(bag)
    assert sorted(got[MASK_TOPICS["raw_mask"]]) == sorted(expected)
    for stamp, (ids, colored, blended) in expected.items():
        for name, array in (("raw_mask", ids), ("colored_mask", colored), ("overlay", blended)):
            mismatches = int((got[MASK_TOPICS[name]][stamp] != array).sum())
            print(f"{name} at {stamp} ns: {mismatches} pixels differ from the direct Segmenter")
            assert mismatches == 0


def test_dsec_sequence_to_bag_to_masks_equals_segmenter_on_the_dataset(tmp_path, model):
    root = write_dsec_fixture(tmp_path / "dsec", sequences={"test": ["zurich_city_13_a"]}, n_labels=5)
    sequence = root / "test" / "zurich_city_13_a"
    config = SegmenterConfig(window_events=2000)
    report = write_sequence_bag(tmp_path / "bag", dsec_source(sequence), storage="mcap")
    assert report.frames == report.labels == 5
    run = segment_bag(tmp_path / "bag", tmp_path / "out", Segmenter(model, config))
    print(run.summary())
    assert run.masks == 5 and not run.malformed and run.late_events == 0

    # The reference, from the dataset files directly: all events of events.h5 in the image clock, rectified
    # into the ev_inf frame (truncation toward zero, out-of-frame dropped), then Segmenter per ev_inf image.
    with h5py.File(sequence / "events" / "left" / "events.h5") as f:
        x, y, t, p = (np.asarray(f[f"events/{k}"]) for k in "xytp")
        t_offset = int(np.asarray(f["t_offset"]))
    with h5py.File(sequence / "events" / "left" / "rectify_map.h5") as f:
        rect = np.asarray(f["rectify_map"])
    xr, yr = rect[y, x, 0].astype(np.int32), rect[y, x, 1].astype(np.int32)
    keep = (xr >= 0) & (xr < 640) & (yr >= 0) & (yr < 480)
    direct = Segmenter(model, config)
    direct.add_events(EventBatch.from_arrays(xr[keep], yr[keep], t[keep].astype(np.int64) + t_offset, p[keep]))
    stamps = np.loadtxt(sequence / "semantic" / "timestamps.txt", dtype=np.int64)
    expected = {}
    for k, stamp_us in enumerate(stamps):
        image = np.array(Image.open(sequence / "images" / "left" / "ev_inf" / f"{k:06d}.png").convert("RGB"))
        result = direct.segment(image, int(stamp_us))
        expected[int(stamp_us) * 1000] = (result.class_ids, result.colored, result.overlay)
    assert_masks_equal(tmp_path / "out", expected)

    with BagReader(tmp_path / "out") as reader:
        labels = [r.decoded.pixels for r in reader.records([TOPICS.labels], only=[TOPICS.labels])]
    label0 = np.asarray(Image.open(sequence / "semantic" / "11classes" / "data" / "000000.png"))
    np.testing.assert_array_equal(labels[0][:440], label0)
    assert (labels[0][440:] == 255).all() and labels[0].shape == (480, 640)


def test_ddd17_recording_to_bag_to_masks_equals_segmenter_on_the_dataset(tmp_path, model):
    folder = write_ddd17_fixture(tmp_path / "ddd17", n_frames=6) / "dir0"
    config = SegmenterConfig(window_mode="duration", window_duration_us=50_000)
    write_sequence_bag(tmp_path / "bag", ddd17_source(folder), storage="sqlite3", encoding="mono")
    run = segment_bag(tmp_path / "bag", tmp_path / "out", Segmenter(model, config))
    print(run.summary())
    assert run.masks == 6 and not run.malformed

    t_ns = np.fromfile(folder / "events.dat.t", "<i8")
    xyp = np.fromfile(folder / "events.dat.xyp", "<i2").reshape(-1, 3)
    direct = Segmenter(model, config)
    direct.add_events(EventBatch.from_arrays(xyp[:, 0], xyp[:, 1], t_ns // 1000, xyp[:, 2]))
    frame_times = np.load(folder / "index" / "index_50ms.npy")[:, 0]
    expected = {}
    for j, stamp_ns in enumerate(frame_times):
        gray = np.array(Image.open(folder / "imgs" / f"img_{j + 1:08d}.png").convert("L"))
        result = direct.segment(gray, int(stamp_ns) // 1000)
        expected[int(stamp_ns)] = (result.class_ids, result.colored, result.overlay)
    assert_masks_equal(tmp_path / "out", expected)


@pytest.mark.parametrize("encoding", ["evt3", "mono"])
def test_synthetic_sequence_bag_holds_the_frames_labels_and_event_stream(tmp_path, encoding):
    config = SequenceConfig(scene=SceneConfig(height=32, width=48, seed=5, duration_s=0.4, lighting="day"))
    frames = list(generate_sequence(config))
    t_offset_us = 1_700_000_000_000_000  # a wall-clock-like stamp: evt3's 24-bit time must still align
    report = write_sequence_bag(
        tmp_path / "bag", synthetic_source(config, t_offset_us=t_offset_us), encoding=encoding, packet_us=1000
    )
    events = EventBatch.concatenate([f.events for f in frames])
    assert report.frames == len(frames) and report.events == len(events)

    images, labels, decoded, packet_spans = [], [], [], []
    stream = EventStream()
    last_log = -1
    with BagReader(tmp_path / "bag") as reader:
        for record in reader.records(
            [TOPICS.image, TOPICS.labels], [TOPICS.events], only=[TOPICS.image, TOPICS.labels, TOPICS.events]
        ):
            assert record.log_time_ns >= last_log  # written in log-time order
            last_log = record.log_time_ns
            item = record.decoded
            if isinstance(item, BagEventPacket):
                decoded_batch = stream.decode(item.encoding, item.payload, time_base=item.time_base)
                batch, jumped = stream.align(decoded_batch, item.stamp_ns // 1000, item.encoding)
                assert not jumped and item.stamp_ns == record.log_time_ns
                decoded.append(batch)
                packet_spans.append(int(batch.t[-1] - batch.t[0]))
            elif record.connection.topic == TOPICS.image:
                images.append(item)
            else:
                labels.append(item)
    got = EventBatch.concatenate(decoded)
    for field in "xytp":
        expected = getattr(events, field) + (t_offset_us if field == "t" else 0)
        np.testing.assert_array_equal(getattr(got, field), expected)
    assert max(packet_spans) < 1000  # ~1 ms packets
    assert [i.stamp_ns for i in images] == [(f.t_us + t_offset_us) * 1000 for f in frames]
    for image, label, frame in zip(images, labels, frames, strict=True):
        np.testing.assert_array_equal(image.pixels, frame.rgb)
        np.testing.assert_array_equal(label.pixels, frame.label)
        assert image.encoding == "rgb8" and label.encoding == "mono8"


def write_frames_bag(path: Path, events_lag_ns: int, frames: int = 6) -> None:
    """Random 32x48 frames every 50 ms with 800 events in the 50 ms before each; the packets of a frame are
    logged `events_lag_ns` after their own stamps (a recorder that got them late)."""
    from mambaseg_core.bags import EVENT_PACKET, IMAGE, BagWriter, event_packet_message, image_message

    rng = np.random.default_rng(3)
    with BagWriter(path, "mcap") as writer:
        writer.add_topic(TOPICS.image, IMAGE)
        writer.add_topic(TOPICS.events, EVENT_PACKET)
        for k in range(frames):
            stamp_us = 2_000_000 + 50_000 * k
            image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            writer.write(TOPICS.image, stamp_us * 1000, image_message(image, "rgb8", stamp_us * 1000, "cam"))
            t = np.sort(rng.integers(stamp_us - 50_000, stamp_us, 800))
            events = EventBatch.from_arrays(
                rng.integers(0, 48, 800), rng.integers(0, 32, 800), t, rng.integers(0, 2, 800)
            )
            for half in (events[:400], events[400:]):
                packet = event_packet_message(half, encoding="evt3", width=48, height=32, seq=k, frame_id="cam")
                writer.write(TOPICS.events, int(half.t[0]) * 1000 + events_lag_ns, packet)


def test_images_wait_for_events_recorded_after_them(tmp_path, model):
    # Lag 60 ms: every packet is logged after the image that needs it; the masks must not change.
    write_frames_bag(tmp_path / "on_time", events_lag_ns=0)
    write_frames_bag(tmp_path / "late", events_lag_ns=60_000_000)
    config = SegmenterConfig(window_events=600)
    reports = [
        segment_bag(tmp_path / name, tmp_path / f"{name}_out", Segmenter(model, config)) for name in ("on_time", "late")
    ]
    assert reports[0].masks == reports[1].masks == 6 and reports[1].late_events == 0
    on_time, late = (read_output_masks(tmp_path / f"{name}_out") for name in ("on_time", "late"))
    for topic in MASK_TOPICS.values():
        assert sorted(on_time[topic]) == sorted(late[topic])
        for stamp in on_time[topic]:
            np.testing.assert_array_equal(on_time[topic][stamp], late[topic][stamp])


def test_segment_copies_every_input_message_unchanged(tmp_path, model):
    config = SequenceConfig(scene=SceneConfig(height=32, width=48, seed=2, duration_s=0.2, lighting="day"))
    write_sequence_bag(tmp_path / "bag", synthetic_source(config), storage="sqlite3")
    options = SegmentOptions(outputs=("raw_mask",), output_namespace="/offline")
    report = segment_bag(
        tmp_path / "bag", tmp_path / "out", Segmenter(model, SegmenterConfig(window_events=300)), options
    )
    assert report.masks > 0
    with BagReader(tmp_path / "bag") as reader:
        original = [(r.connection.topic, r.log_time_ns, r.data) for r in reader.records()]
    with BagReader(tmp_path / "out") as reader:
        assert reader.topics["/offline/raw_mask"] == "sensor_msgs/msg/Image"
        copied = [
            (r.connection.topic, r.log_time_ns, r.data)
            for r in reader.records()
            if r.connection.topic != "/offline/raw_mask"
        ]
    assert sorted(copied) == sorted(original)


def test_segmented_bag_decodes_with_mcap_ros2_and_rclpy(tmp_path, model):
    # The output bag (copied connections + masks written at their images' log times) through two independent
    # decoders: the mcap + mcap_ros2 reader from the embedded schemas, and rclpy's real typesupport.
    config = SequenceConfig(scene=SceneConfig(height=32, width=48, seed=6, duration_s=0.25, lighting="day"))
    write_sequence_bag(tmp_path / "bag", synthetic_source(config))
    run = segment_bag(tmp_path / "bag", tmp_path / "out", Segmenter(model, SegmenterConfig(window_events=300)))
    assert run.masks > 0
    ours = read_output_masks(tmp_path / "out")
    with BagReader(tmp_path / "out") as reader:
        stored = [(r.connection.topic, r.connection.msgtype, r.data) for r in reader.records()]

    pytest.importorskip("mcap_ros2", reason="needs mcap-ros2-support (dev extra)")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (mcap_file,) = (tmp_path / "out").glob("*.mcap")
    with mcap_file.open("rb") as stream:
        decoded = list(make_reader(stream, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    assert len(decoded) == len(stored)
    for name, topic in MASK_TOPICS.items():
        masks = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for _, c, _, m in decoded if c.topic == topic}
        assert sorted(masks) == sorted(ours[topic])
        for stamp, msg in masks.items():
            shape = ours[topic][stamp].shape
            assert msg.encoding == ("mono8" if name == "raw_mask" else "rgb8")
            np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(shape), ours[topic][stamp])

    pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels")
    pytest.importorskip("event_camera_msgs", reason="needs the built event_camera_msgs interface (make setup)")
    from rclpy.serialization import deserialize_message

    for topic, msgtype, data in stored:
        package, _, name = msgtype.split("/")
        msg = deserialize_message(data, getattr(importlib.import_module(f"{package}.msg"), name))
        if topic == MASK_TOPICS["raw_mask"]:
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(32, 48), ours[topic][stamp])
