"""sensor_msgs/Image <-> numpy for every supported encoding, time helpers, EventPacket -> EventBatch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs the ROS 2 Python wheels (rclpy, sensor_msgs)")
pytestmark = pytest.mark.ros

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mambaseg_core.events import EventBatch, UnsupportedEncodingError, encode_evt3, encode_mono  # noqa: E402
from mambaseg_core.pipeline.event_clock import EventStream  # noqa: E402
from mambaseg_ros.conversions import (  # noqa: E402
    IMAGE_ENCODINGS,
    event_packet_to_batch,
    image_to_numpy,
    image_to_rgb_or_mono,
    numpy_to_image,
    stamp_to_us,
    us_to_stamp,
)

H, W = 6, 9


def _array(encoding: str, seed: int = 0) -> np.ndarray:
    kind, channels = IMAGE_ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    high = 256 if kind == "u1" else 65536
    shape = (H, W) if channels == 1 else (H, W, channels)
    return rng.integers(0, high, shape).astype(np.dtype(kind))


def _padded_message(array: np.ndarray, encoding: str, pad: int, big_endian: bool) -> Image:
    """A message built by hand (not by numpy_to_image): `pad` garbage bytes after every row."""
    data = array.astype(array.dtype.newbyteorder(">" if big_endian else "<")).reshape(H, -1).view(np.uint8)
    rows = np.concatenate([data, np.full((H, pad), 0xAB, np.uint8)], axis=1)
    return Image(
        height=H, width=W, encoding=encoding, is_bigendian=int(big_endian), step=rows.shape[1], data=rows.tobytes()
    )


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
@pytest.mark.parametrize(("pad", "big_endian"), [(0, False), (7, False), (3, True)])
def test_image_to_numpy_every_encoding_padding_and_byte_order(encoding, pad, big_endian):
    array = _array(encoding)
    decoded = image_to_numpy(_padded_message(array, encoding, pad, big_endian))
    assert decoded.dtype == array.dtype.newbyteorder("=") and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_numpy_to_image_round_trip(encoding):
    array = _array(encoding, seed=1)
    header = Header(frame_id="cam", stamp=Time(sec=3, nanosec=4))
    msg = numpy_to_image(array, encoding, header)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (H, W, encoding, 0)
    assert msg.step == array.itemsize * W * (1 if array.ndim == 2 else array.shape[2])
    assert msg.header == header
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_color_orders_become_rgb_and_alpha_is_dropped():
    rgb = _array("rgb8")
    for encoding, stored in (("rgb8", rgb), ("bgr8", rgb[:, :, ::-1]), ("8UC3", rgb[:, :, ::-1])):
        np.testing.assert_array_equal(image_to_rgb_or_mono(numpy_to_image(np.ascontiguousarray(stored), encoding)), rgb)
    alpha = np.full((H, W, 1), 7, np.uint8)
    np.testing.assert_array_equal(image_to_rgb_or_mono(numpy_to_image(np.concatenate([rgb, alpha], 2), "rgba8")), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], 2)
    np.testing.assert_array_equal(image_to_rgb_or_mono(numpy_to_image(bgra, "bgra8")), rgb)
    mono16 = _array("mono16")
    np.testing.assert_array_equal(image_to_rgb_or_mono(numpy_to_image(mono16, "mono16")), mono16)


_BAYER_OFFSETS = {  # pattern -> (row, col) of R and of B in the 2x2 tile
    "rggb": ((0, 0), (1, 1)),
    "bggr": ((1, 1), (0, 0)),
    "gbrg": ((1, 0), (0, 1)),
    "grbg": ((0, 1), (1, 0)),
}


@pytest.mark.parametrize("pattern", sorted(_BAYER_OFFSETS))
@pytest.mark.parametrize("depth", [8, 16])
def test_bayer_flat_colour_demosaics_to_that_colour(pattern, depth):
    red, green, blue = (200, 100, 30) if depth == 8 else (50000, 20000, 7000)
    dtype = np.uint8 if depth == 8 else np.uint16
    mosaic = np.full((8, 10), green, dtype)
    (r_row, r_col), (b_row, b_col) = _BAYER_OFFSETS[pattern]
    mosaic[r_row::2, r_col::2] = red
    mosaic[b_row::2, b_col::2] = blue
    rgb = image_to_rgb_or_mono(numpy_to_image(mosaic, f"bayer_{pattern}{depth}"))
    assert rgb.shape == (8, 10, 3) and rgb.dtype == dtype
    np.testing.assert_array_equal(rgb[2:-2, 2:-2].reshape(-1, 3), np.tile([red, green, blue], (6 * 4, 1)))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"encoding": "yuv422_yuy2"}, "unsupported image encoding"),
        ({"encoding": ""}, "unsupported image encoding"),
        ({"step": 3 * W - 1}, "step"),
        ({"data": bytes(3 * W * H - 1)}, "data holds"),
        ({"height": 0, "data": b""}, "height and width"),
        ({"width": W + 1}, "step"),
    ],
)
def test_malformed_images_raise_value_error(change, match):
    msg = numpy_to_image(_array("rgb8"), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=match):
        image_to_numpy(msg)


def test_numpy_to_image_checks_dtype_and_channels():
    with pytest.raises(ValueError, match="rgb8 needs a uint8"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint16), "rgb8")
    with pytest.raises(ValueError, match="mono8 needs"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "mono8")
    with pytest.raises(ValueError, match="unsupported"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "jpeg")


def test_stamp_helpers_round_trip():
    assert stamp_to_us(Time(sec=12, nanosec=345_678_999)) == 12_345_678
    stamp = us_to_stamp(12_345_678)
    assert (stamp.sec, stamp.nanosec) == (12, 345_678_000)
    assert stamp_to_us(us_to_stamp(0)) == 0


def _events(n: int = 500) -> EventBatch:
    rng = np.random.default_rng(0)
    return EventBatch.from_arrays(
        rng.integers(0, 640, n),
        rng.integers(0, 480, n),
        np.sort(rng.integers(1_000, 900_000, n)),
        rng.integers(0, 2, n),
    )


def _packet(encoding: str, data: bytes, time_base: int = 0, big_endian: bool = False):
    from event_camera_msgs.msg import EventPacket

    return EventPacket(
        encoding=encoding, events=data, time_base=time_base, width=640, height=480, is_bigendian=big_endian
    )


def test_event_packets_decode_mono_and_evt3():
    events = _events()
    time_base = 1_000 * 1000
    mono = event_packet_to_batch(_packet("mono", encode_mono(events, time_base), time_base), EventStream())
    for name in "xytp":
        np.testing.assert_array_equal(getattr(mono, name), getattr(events, name))
    evt3 = event_packet_to_batch(_packet("evt3", encode_evt3(events)), EventStream())
    np.testing.assert_array_equal(evt3.x, events.x)
    np.testing.assert_array_equal(evt3.t - evt3.t[0], events.t - events.t[0])


def test_bad_event_packets_raise_value_error():
    with pytest.raises(UnsupportedEncodingError, match="libcaer_cmp"):
        event_packet_to_batch(_packet("libcaer_cmp", b"\x00" * 16), EventStream())
    with pytest.raises(ValueError, match="8-byte"):
        event_packet_to_batch(_packet("mono", b"\x00" * 7), EventStream())
    with pytest.raises(ValueError, match="big-endian"):
        event_packet_to_batch(_packet("mono", b"\x00" * 8, big_endian=True), EventStream())


def test_event_arrays_decode_duck_typed_dvs_messages():
    from types import SimpleNamespace

    from mambaseg_ros.conversions import event_array_to_batch

    def event(x, y, sec, nanosec, polarity):
        return SimpleNamespace(x=x, y=y, ts=Time(sec=sec, nanosec=nanosec), polarity=polarity)

    msg = SimpleNamespace(events=[event(3, 4, 10, 2_500, True), event(5, 6, 10, 7_999, False)])
    batch = event_array_to_batch(msg)
    np.testing.assert_array_equal(batch.t, [10_000_002, 10_000_007])
    np.testing.assert_array_equal(batch.x, [3, 5])
    np.testing.assert_array_equal(batch.p, [1, 0])
