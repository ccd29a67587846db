"""End-to-end latency of mambaseg_node: image published -> ~/raw_mask received, across two processes.

Graph: this script (publisher + subscriber) -> mambaseg_node (`python -m mambaseg_ros.node`, its own process)
-> this script. Data: a random RGB image per frame plus a synthetic event stream of `--events-per-frame`
events spread over the frame period, sent as `--packets-per-frame` mono EventPackets before the image (the
same payload every frame, shifted in time through `time_base`). Frames are published at `--rate` Hz on a
wall-clock schedule after `--warmup` lock-step frames. Latency = receive time - publish time of the image
(one process, one clock), so it includes DDS transport both ways, conversion, the event wait, voxel grid,
forward pass and colorize/overlay/publish. Missed frames = published - received (the node keeps only the
newest frame when busy).

    python benchmarks/node_latency.py --model-config config/model/mambaseg_dsec.yaml --device cuda:0 \
        --image-size 480x640 --image-fit crop_bottom --rate 20
    python benchmarks/node_latency.py --tiny --device cpu      # small random model, CPU (CI-class machines)

    python benchmarks/node_latency.py --no-ros --device cuda:0 ...    # per-stage Segmenter times, no ROS needed

Needs rclpy and event_camera_msgs (not with --no-ros). Writes the "Node latency" section of docs/benchmarks.md
("Segmenter latency" with --no-ros; --no-write: neither).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from _report import table, write_section  # noqa: E402

from mambaseg_core.pipeline.engine import ENGINE_MODES  # noqa: E402

# A small random-weight model for CPU runs (network input 128x192).
TINY_MODEL = dict(
    image_size=[128, 192],
    image_channels=3,
    num_classes=11,
    event_bins=10,
    dims=[16, 32, 64, 128],
    depths=[1, 1, 1, 1],
    decoder_dim=64,
)
BASE_US = 1_000_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default=str(REPO_ROOT / "config" / "model" / "mambaseg_dsec.yaml"))
    parser.add_argument("--tiny", action="store_true", help="use the small built-in model config instead")
    parser.add_argument("--checkpoint", default="", help="weights (default: random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scan-backend", default="", help="selective-scan backend override")
    parser.add_argument("--image-size", default="", help="HxW of the camera image (default: the network input)")
    parser.add_argument("--image-fit", default="resize", choices=("resize", "crop_bottom"))
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(ENGINE_MODES),
        help="engine modes, one node start each (default: fp32 graph on CUDA, fp32 eager on CPU)",
    )
    parser.add_argument("--frames", type=int, default=60, help="timed frames")
    parser.add_argument("--warmup", type=int, default=5, help="lock-step frames before timing")
    parser.add_argument("--rate", type=float, default=10.0, help="publish rate of timed frames, Hz")
    parser.add_argument("--events-per-frame", type=int, default=100_000)
    parser.add_argument("--packets-per-frame", type=int, default=10)
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="s for start-up + first frame")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--no-ros", action="store_true", help="time the Segmenter in-process instead (no rclpy)")
    return parser.parse_args()


def checkpoint_size(checkpoint: str) -> tuple[int, int]:
    from mambaseg_core.models import load_model

    height, width = load_model(checkpoint).config.image_size
    return int(height), int(width)


def network_size(model_config: dict | str) -> tuple[int, int]:
    from mambaseg_core.models import load_model_config

    height, width = load_model_config(model_config).image_size
    return int(height), int(width)


class EventStream:
    """Pre-encoded mono packets for one frame period, re-based per frame through time_base."""

    def __init__(self, events_per_frame: int, packets: int, period_us: int, height: int, width: int):
        from mambaseg_core.events import EventBatch, encode_mono

        rng = np.random.default_rng(0)
        self.span_us = period_us // packets
        per_packet = max(1, events_per_frame // packets)
        batch = EventBatch.from_arrays(
            rng.integers(0, width, per_packet),
            rng.integers(0, height, per_packet),
            np.sort(rng.integers(0, self.span_us, per_packet)),
            rng.integers(0, 2, per_packet),
        )
        self.payload = encode_mono(batch, 0)
        self.packets, self.height, self.width = packets, height, width

    def packet_starts(self, stamp_us: int) -> list[int]:
        """Start times (µs) of the packets covering (stamp - period, stamp + one span]; the last one releases
        the node's event wait."""
        return [stamp_us - (self.packets - k) * self.span_us for k in range(self.packets + 1)]

    def messages(self, stamp_us: int) -> list:
        """The packets of `packet_starts` as EventPackets."""
        from event_camera_msgs.msg import EventPacket

        from mambaseg_ros.conversions import us_to_stamp

        out = []
        for start_us in self.packet_starts(stamp_us):
            msg = EventPacket(encoding="mono", width=self.width, height=self.height, time_base=start_us * 1000)
            msg.header.stamp = us_to_stamp(start_us)
            msg.events = self.payload
            out.append(msg)
        return out


def run_pipeline_only(args: argparse.Namespace, config_path: str, height: int, width: int, setup: list) -> int:
    """--no-ros: the node's per-frame work in this process (mono decode, ring buffer, Segmenter.segment), timed
    per stage; for machines without ROS (e.g. the GPU box). Writes the "Segmenter latency" section."""
    from mambaseg_core.config import load_config
    from mambaseg_core.events import decode_mono
    from mambaseg_core.ops.selective_scan import available_backends
    from mambaseg_core.pipeline import Segmenter, SegmenterConfig, build_model

    model = build_model(
        args.checkpoint,
        config_path,
        device=args.device,
        scan_backend=args.scan_backend or None,
        random_seed=None if args.checkpoint else 0,
    )
    config = load_config(SegmenterConfig, {"window_events": args.events_per_frame, "image_fit": args.image_fit})
    segmenter = Segmenter(model, config, args.device)
    warmup_ms = segmenter.warmup()
    backend = str(model.config.scan_backend)
    if backend == "auto":
        backend = f"auto -> {available_backends(args.device)[0]}"
    period_us = int(1e6 / args.rate)
    stream = EventStream(args.events_per_frame, args.packets_per_frame, period_us, height, width)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    rows: list[dict[str, float]] = []
    for i in range(args.warmup + args.frames):
        stamp = BASE_US + i * period_us
        start = time.perf_counter()
        for start_us in stream.packet_starts(stamp):
            segmenter.add_events(decode_mono(stream.payload, start_us * 1000))
        decode_ms = (time.perf_counter() - start) * 1e3
        result = segmenter.segment(images[i % len(images)], stamp)
        if result is not None and i >= args.warmup:
            rows.append({"decode + buffer": decode_ms, **result.timings_ms})
    setup = [*setup, ("device", f"{args.device}, scan backend {backend}, warm-up forward {warmup_ms:.0f} ms")]
    setup.append(("schedule", f"{args.warmup} warm-up frames, then {args.frames} timed frames back to back"))
    stats = [(stage, *(float(np.percentile([r[stage] for r in rows], q)) for q in (50, 90, 99))) for stage in rows[0]]
    body = table(["setting", "value"], setup) + "\n\n" + table(["stage", "p50 ms", "p90 ms", "p99 ms"], stats)
    body += "\n\nPer-frame work of mambaseg_node without ROS transport (`benchmarks/node_latency.py --no-ros`)."
    print(body)
    if not args.no_write:
        write_section("Segmenter latency", body)
    return 0


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="node_latency_"))
    model_config: str | dict = TINY_MODEL if args.tiny else args.model_config
    if args.tiny:
        (workdir / "tiny_model.yaml").write_text(yaml.safe_dump(TINY_MODEL))
        config_path = str(workdir / "tiny_model.yaml")
    else:
        config_path = args.model_config
    # A checkpoint carries its own architecture (and, for ours, its network size); describe what actually runs.
    net_h, net_w = network_size(model_config) if not args.checkpoint else checkpoint_size(args.checkpoint)
    height, width = (int(v) for v in args.image_size.split("x")) if args.image_size else (net_h, net_w)
    setup = [
        ("model", Path(args.checkpoint).name if args.checkpoint
                  else f"{'tiny built-in' if args.tiny else Path(args.model_config).name}, random weights"),
        ("network input", f"{net_h}x{net_w}"),
        ("camera image", f"{height}x{width} rgb8, image_fit={args.image_fit}"),
        ("events", f"{args.events_per_frame} per frame in {args.packets_per_frame + 1} mono packets"),
        ("host", f"{os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f} at start"),
    ]  # fmt: skip
    if args.no_ros:
        return run_pipeline_only(args, config_path, height, width, setup)

    rows, notes = [], []
    for mode in args.modes or [("fp32 graph" if args.device.startswith("cuda") else "fp32 eager")]:
        row, note = measure_node(args, mode, config_path, height, width, workdir)
        rows.append(row)
        notes.append(note)
    setup += [
        ("device", notes[0]["device"]),
        ("schedule", f"{args.warmup} warm-up frames lock-step, then {args.frames} frames at {args.rate:g} Hz"),
        ("transport", notes[0]["transport"]),
        ("ROS 2", notes[0]["ros"]),
    ]
    headers = ["engine mode", "sent", "received", "missed", "p50 ms", "p90 ms", "p99 ms", "max ms",
               "node in->out p50 ms", "node forward p50 ms", "dropped busy", "node rc"]  # fmt: skip
    stages = list(dict.fromkeys(stage for note in notes for stage in note["stages"]))
    stage_rows = [[row[0], *(note["stages"].get(stage, "?") for stage in stages)] for row, note in zip(rows, notes)]
    body = table(["setting", "value"], setup) + "\n\n" + table(headers, rows)
    body += (
        "\n\nLatency: image publish -> raw mask receive in the publishing process (`benchmarks/node_latency.py`). "
        "`node in->out`: image callback -> all masks published, inside the node (its /diagnostics); the rest is "
        "DDS transport and executor wake-ups both ways. `node forward`: the Segmenter's forward stage."
    )
    body += (
        "\n\nInside the node, p50 ms of each stage of its worker, in the order they run (its /diagnostics): "
        "`queue` image callback -> worker, `wait_events` for the events up to the image stamp, the Segmenter's "
        "stages, then converting and publishing each output (the colored mask and overlay include rendering)."
        "\n\n" + table(["engine mode", *stages], stage_rows)
    )
    print(body)
    if not args.no_write:
        write_section("Node latency" + (" (GPU)" if args.device.startswith("cuda") else ""), body)
    return 0 if all(row[-1] == 0 for row in rows) else 1


def measure_node(
    args: argparse.Namespace, mode: str, config_path: str, height: int, width: int, workdir: Path
) -> tuple[list, dict]:
    """Start mambaseg_node with the engine `mode`, drive it and return its table row and notes."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from event_camera_msgs.msg import EventPacket
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mambaseg_ros.conversions import numpy_to_image, stamp_to_us, us_to_stamp

    engine = ENGINE_MODES[mode]
    period_us = int(1e6 / args.rate)
    params = {
        "checkpoint": args.checkpoint,
        "model_config": config_path,
        "allow_random_weights": not args.checkpoint,
        "device": args.device,
        "scan_backend": args.scan_backend,
        **engine._asdict(),
        "window_events": args.events_per_frame,
        "image_fit": args.image_fit,
        "image_reliability": "reliable",
        "events_reliability": "reliable",
        "max_event_latency_ms": 1000.0,
        "diagnostics_period_s": 0.5,
    }
    tag = mode.replace(" ", "_")
    params_path = workdir / f"params_{tag}.yaml"
    params_path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.update({k: env[k] for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    node_cmd = [sys.executable, "-m", "mambaseg_ros.node", "--ros-args", "--params-file", str(params_path)]
    node_cmd += ["-r", "image:=/bench/image", "-r", "events:=/bench/events"]
    log_path = workdir / f"node_{tag}.log"
    node_log = open(log_path, "w")  # noqa: SIM115 - closed below
    node = subprocess.Popen(node_cmd, cwd=REPO_ROOT, env=env, stdout=node_log, stderr=subprocess.STDOUT)

    rclpy.init()
    bench = rclpy.create_node("node_latency_bench")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = bench.create_publisher(Image, "/bench/image", qos)
    events_pub = bench.create_publisher(
        EventPacket, "/bench/events", QoSProfile(depth=1000, reliability=qos.reliability)
    )
    received: dict[int, float] = {}
    diagnostics: list[DiagnosticArray] = []
    mask_sub = bench.create_subscription(
        Image,
        "/mambaseg_node/raw_mask",
        lambda m: received.setdefault(stamp_to_us(m.header.stamp), time.perf_counter()),
        qos,
    )
    bench.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(bench)

    def spin_until(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or node.poll() is not None:
                return predicate()
            executor.spin_once(timeout_sec=0.002)
        return True

    stream = EventStream(args.events_per_frame, args.packets_per_frame, period_us, height, width)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    published: dict[int, float] = {}

    def publish(index: int) -> int:
        stamp = BASE_US + index * period_us
        for msg in stream.messages(stamp):
            events_pub.publish(msg)
        image_msg = numpy_to_image(
            images[index % len(images)], "rgb8", Header(stamp=us_to_stamp(stamp), frame_id="cam")
        )
        published[stamp] = time.perf_counter()
        image_pub.publish(image_msg)
        return stamp

    try:
        connected = spin_until(
            lambda: (
                image_pub.get_subscription_count() > 0
                and events_pub.get_subscription_count() > 0
                and mask_sub.get_publisher_count() > 0
            ),
            args.startup_timeout,
        )
        if not connected:
            raise RuntimeError(f"the node did not come up; see {log_path}")

        def rejected_frames() -> int:  # the node counts the images it cannot use; no mask will come for them
            values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
            return sum(int(values.get(f"total_{key}", 0)) for key in ("images_rejected", "images_wrong_size"))

        for i in range(args.warmup):
            stamp = publish(i)
            if not spin_until(lambda s=stamp: s in received or rejected_frames() > 0, args.startup_timeout):
                raise RuntimeError(f"no mask for warm-up frame {i}; see {log_path}")
            if stamp not in received:
                raise RuntimeError(f"the node rejected the benchmark images (wrong size or encoding?); see {log_path}")
        timed = []
        start = time.perf_counter()
        for j in range(args.frames):
            spin_until(lambda j=j: time.perf_counter() >= start + j / args.rate, 10.0)
            timed.append(publish(args.warmup + j))
        spin_until(lambda: all(s in received for s in timed), 10.0)
        spin_until(lambda: False, 1.0)  # a last diagnostics message
        latencies = np.array([(received[s] - published[s]) * 1e3 for s in timed if s in received])
        missed = len(timed) - len(latencies)
        node_stats = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
        node_rc = node.wait(timeout=60)
        node_log.close()
        executor.shutdown()
        bench.destroy_node()
        rclpy.try_shutdown()

    p50, p90, p99 = np.percentile(latencies, (50, 90, 99)) if len(latencies) else (np.nan,) * 3
    row = [
        mode,
        len(timed),
        len(latencies),
        missed,
        float(p50),
        float(p90),
        float(p99),
        float(latencies.max()) if len(latencies) else float("nan"),
        node_stats.get("latency_p50_ms", "?"),
        node_stats.get("inference_p50_ms", "?"),
        node_stats.get("total_dropped_busy", "?"),
        node_rc,
    ]
    rclpy_version = importlib.metadata.version("rclpy")
    notes = {
        "stages": {k.split(".", 1)[1]: v for k, v in node_stats.items() if k.startswith("stage_p50_ms.")},
        "device": f"{node_stats.get('device', args.device)}, scan backend {node_stats.get('scan_backend', '?')}",
        "transport": "FastDDS, reliable, " + Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).name,
        "ros": f"rclpy {rclpy_version}, ROS_DISTRO {os.environ.get('ROS_DISTRO', 'unset (PyPI wheels)')}",
    }
    return row, notes


if __name__ == "__main__":
    sys.exit(main())
