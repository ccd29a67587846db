"""mambaseg_node: camera image + event stream in; class-id mask, colored mask and overlay out.

Thin glue over `mambaseg_core.pipeline.Segmenter` (which does all tensor work):
- `events` (event_camera_msgs/EventPacket evt3|mono, or dvs/prophesee EventArray): decoded on the executor
  thread, moved into the image clock (`EventStream`, shared with the bag tools), appended to the Segmenter's
  ring buffer.
- `image` (sensor_msgs/Image): converted to RGB/gray and put in a one-frame slot; a newer frame replaces a
  waiting one (counted as `dropped_busy`).
- A worker thread takes the frame, stages its pixels for the GPU, waits up to `max_event_latency_ms` for events up
  to the frame stamp, segments it and publishes `~/raw_mask` (mono8, 255 = unlabeled), `~/colored_mask` and
  `~/overlay` (rgb8), each with the input image's header.
- `/diagnostics` every `diagnostics_period_s`: rates, latency percentiles, the p50 time of every stage (queue, the
  pixels staged, event wait, the Segmenter's stages, each publish), every drop/reject counter, device,
  scan backend, model.
Malformed input never stops the node: each kind is counted (see `_Counters`) and reported.
"""

from __future__ import annotations

import collections
import gc
import importlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mambaseg_core.config import ConfigError
from mambaseg_core.events import EventBatch, Evt3Decoder, UnsupportedEncodingError, encode_evt3
from mambaseg_core.pipeline import STAGES, Segmenter, build_model
from mambaseg_core.pipeline.event_clock import EventStream
from mambaseg_core.pipeline.ros_messages import MASK_ENCODINGS, mask_image
from mambaseg_ros.conversions import (
    event_array_to_batch,
    event_packet_to_batch,
    image_to_rgb_or_mono,
    numpy_to_image,
    stamp_to_us,
)
from mambaseg_ros.params import NodeSettings, ParameterError, declare_parameters, read_settings

NODE_NAME = "mambaseg_node"
_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
    "system_default": ReliabilityPolicy.SYSTEM_DEFAULT,
}
_EVENT_ARRAY_PACKAGES = {"dvs": "dvs_msgs", "prophesee": "prophesee_event_msgs"}
# Counters that mean "an input was lost or degraded" (WARN when they grow) vs. plain activity.
PROBLEM_COUNTERS = (
    "dropped_busy",
    "skipped_no_events",
    "image_only",
    "late_events",
    "images_rejected",
    "images_wrong_size",
    "event_packets_malformed",
    "event_packets_unsupported_encoding",
    "time_jumps",
    "inference_errors",
)
ACTIVITY_COUNTERS = ("images", "event_packets", "events", "masks")


class _Counters:
    """Thread-safe monotonically increasing counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: collections.Counter[str] = collections.Counter()

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._values[key] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {key: self._values[key] for key in (*ACTIVITY_COUNTERS, *PROBLEM_COUNTERS)}


@dataclass
class _Frame:
    header: Header
    image: np.ndarray  # (H, W) or (H, W, 3) uint8/uint16 RGB
    stamp_us: int
    received: float  # time.monotonic()


class _FrameSlot:
    """Holds the newest waiting frame; the worker also waits here for events (one condition for both)."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self._frame: _Frame | None = None
        self.closed = False

    def put(self, frame: _Frame) -> bool:
        """Store `frame`; True if it replaced a frame nobody had taken yet."""
        with self.condition:
            replaced = self._frame is not None
            self._frame = frame
            self.condition.notify_all()
        return replaced

    def take(self) -> _Frame | None:
        """Block until a frame is waiting (None once closed)."""
        with self.condition:
            while self._frame is None and not self.closed:
                self.condition.wait()
            frame, self._frame = self._frame, None
            return None if self.closed else frame

    def notify(self) -> None:
        with self.condition:
            self.condition.notify_all()

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()


def _percentiles(samples: collections.deque[float]) -> tuple[float, float, float]:
    if not samples:
        return (float("nan"),) * 3  # type: ignore[return-value]
    p50, p90, p99 = np.percentile(np.fromiter(samples, float), (50, 90, 99))
    return float(p50), float(p90), float(p99)


class MambaSegNode(Node):
    """The segmentation node (module docstring). Raises ParameterError at construction for invalid parameters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._slot = _FrameSlot()  # first: destroy_node must work even if start-up fails below
        self._worker: threading.Thread | None = None
        declare_parameters(self)
        self.settings: NodeSettings = read_settings(self)
        settings = self.settings
        self.device, self.device_fallback = self._select_device(settings.device)
        self.segmenter = self._build_segmenter(settings)
        self.counters = _Counters()
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=500)
        # Per-frame milliseconds of each stage of the worker, in the order they run (see _work).
        self._stage_ms: dict[str, collections.deque[float]] = {}
        self._last_report = (time.monotonic(), self.counters.snapshot())
        self._jump_tolerance_us = int(settings.time_jump_tolerance_ms * 1000)
        self._events = EventStream(
            settings.event_clock,  # type: ignore[arg-type]  # validated by read_settings
            self._jump_tolerance_us,
            settings.segmenter.sensor_size,
        )
        self._last_image_us: int | None = None

        output_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self._mask_publishers = {
            name: self.create_publisher(Image, f"~/{name}", output_qos)
            for name, wanted in (
                ("raw_mask", settings.publish_raw_mask),
                ("colored_mask", settings.publish_colored_mask),
                ("overlay", settings.publish_overlay),
            )
            if wanted
        }
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(
            Image, "image", self._on_image, self._input_qos(settings.image_reliability, settings.image_queue_size)
        )
        events_qos = self._input_qos(settings.events_reliability, settings.events_queue_size)
        if settings.event_msg_type == "event_packet":
            from event_camera_msgs.msg import EventPacket

            self.create_subscription(EventPacket, "events", self._on_event_packet, events_qos)
        else:
            self.create_subscription(
                self._event_array_type(settings.event_msg_type), "events", self._on_event_array, events_qos
            )
        self.create_timer(settings.diagnostics_period_s, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="mambaseg_inference", daemon=True)
        self._worker.start()
        height, width = self.segmenter.network_size
        warmup_ms = self.segmenter.warmup()
        # JIT-compile the EVT3 decoder now: compiled on the first real packet it would make the first frames'
        # events arrive seconds late (and those frames be skipped).
        Evt3Decoder().decode(encode_evt3(EventBatch.from_arrays([0, 1], [0, 1], [0, 1], [0, 1])))
        self.scan_backend = self.segmenter.scan_backend
        self.get_logger().info(
            f"ready: {self._model_description()} on {self.device} ({self.segmenter.engine.precision}), "
            f"network input {height}x{width}, "
            f"{len(self.segmenter.classes.names)} classes ({self.segmenter.classes.key}), scan {self.scan_backend}, "
            f"warm-up {warmup_ms:.0f} ms"
        )

    # ---- start-up ------------------------------------------------------------------------------------

    def _select_device(self, requested: str) -> tuple[str, bool]:
        if not requested.startswith("cuda"):
            return requested, False
        if not torch.cuda.is_available():
            self.get_logger().error(
                f"!!! device '{requested}' requested but CUDA is not available: FALLING BACK TO CPU "
                "(expect seconds per frame with full-size models) !!!"
            )
            return "cpu", True
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ParameterError("device", f"'{requested}' does not exist ({torch.cuda.device_count()} CUDA devices)")
        return requested, False

    def _build_segmenter(self, settings: NodeSettings) -> Segmenter:
        if settings.checkpoint and settings.model_config:
            self.get_logger().warning(
                "both checkpoint and model_config given: the checkpoint's config is used "
                "(model_config only supplies image_size to official checkpoints)"
            )
        try:
            model = build_model(
                settings.checkpoint,
                settings.model_config,
                device=self.device,
                scan_backend=settings.scan_backend or None,
                random_seed=settings.random_seed if settings.allow_random_weights else None,
            )
        except FileNotFoundError as exc:
            name = "checkpoint" if settings.checkpoint else "model_config"
            raise ParameterError(name, str(exc)) from None
        except ConfigError as exc:
            raise ParameterError("model_config", str(exc)) from None
        except ValueError as exc:  # unreadable checkpoint, mismatched keys, unknown official image size
            raise ParameterError("checkpoint" if settings.checkpoint else "model_config", str(exc)) from None
        if not settings.checkpoint:
            self.get_logger().warning("RANDOM WEIGHTS (allow_random_weights): masks are meaningless")
        try:
            return Segmenter(model, settings.segmenter, self.device)
        except ConfigError as exc:  # class set vs. the model's class count
            raise ParameterError(exc.key, str(exc).split(": ", 1)[-1]) from None
        except ValueError as exc:  # sensor size vs. the network input
            raise ParameterError("sensor_width", str(exc)) from None

    def _event_array_type(self, kind: str) -> type:
        package = _EVENT_ARRAY_PACKAGES[kind]
        try:
            return importlib.import_module(f"{package}.msg").EventArray
        except ImportError:
            raise ParameterError("event_msg_type", f"'{kind}' needs the {package} package, not importable") from None

    @staticmethod
    def _input_qos(reliability: str, depth: int) -> QoSProfile:
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=_RELIABILITY[reliability])

    def _model_description(self) -> str:
        settings = self.settings
        if settings.checkpoint:
            return Path(settings.checkpoint).name
        return f"random weights (seed {settings.random_seed}) of {Path(settings.model_config).name}"

    # ---- inputs (executor thread) --------------------------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        self.counters.add("images")
        try:
            image = image_to_rgb_or_mono(msg)
        except ValueError as exc:
            self.counters.add("images_rejected")
            self.get_logger().warning(f"image rejected: {exc}", throttle_duration_sec=5.0)
            return
        try:
            self.segmenter.check_image(image)
        except ValueError as exc:
            self.counters.add("images_wrong_size")
            self.get_logger().warning(f"image rejected: {exc}", throttle_duration_sec=5.0)
            return
        stamp_us = stamp_to_us(msg.header.stamp)
        if self._last_image_us is not None and stamp_us < self._last_image_us - self._jump_tolerance_us:
            # Clear only events of the old timeline: after a bag loop the events may have jumped back first.
            latest = self.segmenter.latest_event_us
            stale = latest is not None and latest > stamp_us + self._jump_tolerance_us
            self._on_time_jump("image stamp went back", clear=stale)
        self._last_image_us = stamp_us
        if self._slot.put(_Frame(msg.header, image, stamp_us, time.monotonic())):
            self.counters.add("dropped_busy")

    def _on_event_packet(self, msg: Any) -> None:
        self.counters.add("event_packets")
        try:
            batch = event_packet_to_batch(msg, self._events)
        except UnsupportedEncodingError as exc:
            self.counters.add("event_packets_unsupported_encoding")
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        except (ValueError, TypeError) as exc:
            self.counters.add("event_packets_malformed")
            self.get_logger().warning(f"event packet rejected: {exc}", throttle_duration_sec=5.0)
            return
        self._add_events(batch, stamp_to_us(msg.header.stamp), msg.encoding)

    def _on_event_array(self, msg: Any) -> None:
        self.counters.add("event_packets")
        try:
            batch = event_array_to_batch(msg)
        except (ValueError, TypeError) as exc:
            self.counters.add("event_packets_malformed")
            self.get_logger().warning(f"event array rejected: {exc}", throttle_duration_sec=5.0)
            return
        self._add_events(batch, stamp_to_us(msg.header.stamp), "event_array")

    def _add_events(self, batch: EventBatch, stamp_us: int, source: str) -> None:
        batch, jumped = self._events.align(batch, stamp_us, source)
        if jumped:
            self._on_time_jump("event time went back or strayed from the packet stamps")
        self.segmenter.add_events(batch)
        self.counters.add("events", len(batch))
        self._slot.notify()

    def _on_time_jump(self, why: str, clear: bool = True) -> None:
        self.counters.add("time_jumps")
        action = "event buffer cleared" if clear else "buffered events already follow the new clock"
        self.get_logger().warning(f"time jump ({why}): {action}", throttle_duration_sec=5.0)
        if clear:
            self.segmenter.reset()

    # ---- inference (worker thread) -------------------------------------------------------------------

    def _wait_for_events(self, frame: _Frame) -> bool:
        """Wait until events up to the frame stamp arrived or max_event_latency_ms passed; True if they did."""
        deadline = frame.received + self.settings.max_event_latency_ms / 1000.0
        with self._slot.condition:
            while not self._slot.closed:
                if self.segmenter.events_reached(frame.stamp_us):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._slot.condition.wait(remaining)
        return False

    def _work(self) -> None:
        while (frame := self._slot.take()) is not None:
            taken = time.monotonic()
            self.segmenter.stage_image(frame.image)  # pixels' copy + image's stage 0 overlap the wait
            staged = time.monotonic()
            if not self._wait_for_events(frame):
                if self._slot.closed:
                    return
                self.counters.add("late_events")
            stages = {
                "queue": (taken - frame.received) * 1e3,
                "stage_image": (staged - taken) * 1e3,
                "wait_events": (time.monotonic() - staged) * 1e3,
            }
            try:
                result = self.segmenter.segment(frame.image, frame.stamp_us)
            except ValueError as exc:
                self.counters.add("images_wrong_size")
                self.get_logger().warning(f"frame rejected: {exc}", throttle_duration_sec=5.0)
                continue
            except Exception as exc:  # a failing forward pass must not kill the node
                self.counters.add("inference_errors")
                self.get_logger().error(f"inference failed: {exc!r}", throttle_duration_sec=5.0)
                continue
            if result is None:
                self.counters.add("skipped_no_events")
                continue
            if result.events_used == 0:
                self.counters.add("image_only")
            stages.update({name: result.timings_ms[name] for name in STAGES})
            try:  # the class ids go out first; the colored mask and overlay are rendered after them
                for name, publisher in self._mask_publishers.items():
                    start = time.monotonic()
                    publisher.publish(numpy_to_image(mask_image(result, name), MASK_ENCODINGS[name], frame.header))
                    stages[f"publish_{name}"] = (time.monotonic() - start) * 1e3
            except Exception as exc:
                if self._slot.closed or not rclpy.ok(context=self.context):
                    return  # shutting down
                self.counters.add("inference_errors")
                self.get_logger().error(f"publishing failed: {exc!r}", throttle_duration_sec=5.0)
                continue
            self.counters.add("masks")
            self._latency_ms.append((time.monotonic() - frame.received) * 1e3)
            for name, ms in stages.items():
                self._stage_ms.setdefault(name, collections.deque(maxlen=500)).append(ms)

    # ---- diagnostics ---------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        counts = self.counters.snapshot()
        then, previous = self._last_report
        self._last_report = (now, counts)
        period = max(now - then, 1e-6)
        grown = [key for key in PROBLEM_COUNTERS if counts[key] > previous[key]]
        status = DiagnosticStatus(name=f"{self.get_name()}: segmentation", hardware_id=self.device)
        if counts["inference_errors"] > previous["inference_errors"]:
            status.level, status.message = DiagnosticStatus.ERROR, "inference failing"
        elif grown or self.device_fallback:
            status.level = DiagnosticStatus.WARN
            status.message = ", ".join(grown + (["running on CPU fallback"] if self.device_fallback else []))
        else:
            status.level, status.message = DiagnosticStatus.OK, "ok"
        latency = _percentiles(self._latency_ms)
        inference = _percentiles(self._stage_ms.get("forward", collections.deque()))
        values = {
            "image_rate_hz": (counts["images"] - previous["images"]) / period,
            "event_packet_rate_hz": (counts["event_packets"] - previous["event_packets"]) / period,
            "event_rate_ev_per_s": (counts["events"] - previous["events"]) / period,
            "output_rate_hz": (counts["masks"] - previous["masks"]) / period,
            "latency_is": "image received -> masks published, last 500 frames",
            "latency_p50_ms": latency[0],
            "latency_p90_ms": latency[1],
            "latency_p99_ms": latency[2],
            "inference_p50_ms": inference[0],
            "inference_p99_ms": inference[2],
            "stages_are": "image received -> masks published, in order: " + ", ".join(self._stage_ms),
            **{f"stage_p50_ms.{name}": _percentiles(samples)[0] for name, samples in list(self._stage_ms.items())},
            **{f"total_{key}": counts[key] for key in (*ACTIVITY_COUNTERS, *PROBLEM_COUNTERS)},
            "events_buffered": len(self.segmenter.buffer),
            "events_dropped_age_or_capacity": self.segmenter.buffer.stats.dropped_overflow,
            "buffer_resets_time_backwards": self.segmenter.buffer.stats.resets_time_backwards,
            "device": self.device + (" (fallback from " + self.settings.device + ")" if self.device_fallback else ""),
            "scan_backend": self.scan_backend,
            "model": self._model_description(),
            "precision": self.segmenter.engine.precision,
            "network_input": "x".join(map(str, self.segmenter.network_size)),
            "window": (
                f"{self.settings.segmenter.window_events} events"
                if self.settings.segmenter.window_mode == "count"
                else f"{self.settings.segmenter.window_duration_us} us"
            ),
        }
        status.values = [
            KeyValue(key=key, value=f"{value:.3f}" if isinstance(value, float) else str(value))
            for key, value in values.items()
        ]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # ---- shutdown ------------------------------------------------------------------------------------

    def destroy_node(self) -> None:
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of `mambaseg_node`: 0 on SIGINT / external shutdown, 2 on invalid parameters."""
    rclpy.init(args=args)
    node = None
    try:
        node = MambaSegNode()
        # Everything allocated so far (torch, ROS, the model: ~230k objects) lives as long as the process. Frozen,
        # it is no longer rescanned by the cyclic GC, whose full collections otherwise stall a frame for 20-150 ms.
        gc.collect()
        gc.freeze()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParameterError as exc:
        print(f"[{NODE_NAME}] FATAL: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
