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

    python benchmarks/node_latency.py --pace sensor --dataset DSEC --device cuda:0 --modes "fp16 graph branches"

`--pace sensor` drives the node as the sensors would (the "Node latency at the sensors' pace" section): a publisher
process sends the dataset's synthetic stream (latency.py) as 1 ms EVT3 packets, each when its last millisecond is
over, and a camera frame every 50 ms when its exposure stamp is due, all on the wall clock; the frame's window is
complete with the packet after its stamp (~1 ms later), as with a real sensor pair (a driver's own latency left
out). Latency, one host clock: that packet's publish -> ~/raw_mask received here (what the node adds after the
last needed sensor data), and the image's publish -> ~/raw_mask received.

Needs rclpy and event_camera_msgs (not with --no-ros). Writes the "Node latency" section of docs/benchmarks.md
("Segmenter latency" with --no-ros; --no-write: neither).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
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
from latency import DATASETS, FRAME_US, synthetic_stream  # noqa: E402

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
    parser.add_argument(
        "--model-config", default="", help="model YAML (default: the DSEC one; --pace sensor: the dataset's)"
    )
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
    parser.add_argument(
        "--warmup", type=int, help="frames before timing (default 5, lock-step; --pace sensor: 20, the first second)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="publish rate of timed frames, Hz")
    parser.add_argument("--events-per-frame", type=int, default=100_000)
    parser.add_argument("--packets-per-frame", type=int, default=10)
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="s for start-up + first frame")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--no-ros", action="store_true", help="time the Segmenter in-process instead (no rclpy)")
    parser.add_argument(
        "--pace",
        choices=("burst", "sensor"),
        default="burst",
        help="burst: each frame's events in one burst, then its image; sensor: 1 ms EVT3 packets and 20 Hz frames "
        "on the wall clock (--dataset's sensor, event rate and window)",
    )
    parser.add_argument("--dataset", choices=list(DATASETS), default="DSEC", help="--pace sensor: whose stream")
    parser.add_argument("--publish-sensor", metavar="TIMES_JSON", help=argparse.SUPPRESS)  # the publisher process
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
    if args.warmup is None:
        args.warmup = 20 if args.pace == "sensor" else 5
    if args.publish_sensor:
        return publish_at_sensor_pace(args)
    workdir = Path(tempfile.mkdtemp(prefix="node_latency_"))
    sensor_pace = args.pace == "sensor" and not args.no_ros
    if not args.model_config:
        args.model_config = str(REPO_ROOT / "config" / "model" / DATASETS[args.dataset if sensor_pace else "DSEC"][0])
    model_config: str | dict = TINY_MODEL if args.tiny else args.model_config
    if args.tiny:
        (workdir / "tiny_model.yaml").write_text(yaml.safe_dump(TINY_MODEL))
        config_path = str(workdir / "tiny_model.yaml")
    else:
        config_path = args.model_config
    # A checkpoint carries its own architecture (and, for ours, its network size); describe what actually runs.
    net_h, net_w = network_size(model_config) if not args.checkpoint else checkpoint_size(args.checkpoint)
    if sensor_pace:
        height, width = DATASETS[args.dataset][1]
        # The dataset's crop where the network has the sensor's width (its own models), else a resize (--tiny).
        args.image_fit = DATASETS[args.dataset][2]["image_fit"] if net_w == width else "resize"
        events = (
            f"{args.dataset}'s synthetic stream ({DATASETS[args.dataset][3] / 1e6:g} M events/s) in 1 ms EVT3 packets"
        )
        camera = f"{height}x{width} rgb8 every {FRAME_US // 1000} ms, image_fit={args.image_fit}"
    else:
        height, width = (int(v) for v in args.image_size.split("x")) if args.image_size else (net_h, net_w)
        events = f"{args.events_per_frame} per frame in {args.packets_per_frame + 1} mono packets"
        camera = f"{height}x{width} rgb8, image_fit={args.image_fit}"
    setup = [
        ("model", Path(args.checkpoint).name if args.checkpoint
                  else f"{'tiny built-in' if args.tiny else Path(args.model_config).name}, random weights"),
        ("network input", f"{net_h}x{net_w}"),
        ("camera image", camera),
        ("events", events),
        ("host", f"{os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f} at start"),
    ]  # fmt: skip
    if args.no_ros:
        return run_pipeline_only(args, config_path, height, width, setup)

    measure = measure_at_sensor_pace if sensor_pace else measure_in_bursts
    rows, notes = [], []
    for mode in args.modes or [("fp32 graph" if args.device.startswith("cuda") else "fp32 eager")]:
        row, note = measure(args, mode, config_path, height, width, workdir)
        rows.append(row)
        notes.append(note)
    schedule = (
        f"{args.warmup} warm-up frames, then {args.frames} timed frames at {1e6 / FRAME_US:g} Hz on the wall clock"
        if sensor_pace
        else f"{args.warmup} warm-up frames lock-step, then {args.frames} frames at {args.rate:g} Hz"
    )
    setup += [
        ("device", notes[0]["device"]),
        ("schedule", schedule),
        ("transport", notes[0]["transport"]),
        ("ROS 2", notes[0]["ros"]),
    ]
    if sensor_pace:
        headers = ["engine mode", "frames", "received", "missed", "window's last packet -> mask p50 ms", "p90 ms",
                   "p99 ms", "max ms", "image -> mask p50 ms", "p99 ms", "node in->out p50 ms",
                   "node forward p50 ms", "dropped busy", "node rc"]  # fmt: skip
        about = (
            "Latency, one host clock (`benchmarks/node_latency.py --pace sensor`): from the publish of the packet "
            "that completes the frame's window (the packet after the image stamp, sent ~1 ms after the image) to the "
            "raw mask's arrival in the publishing host's benchmark process; that packet's transport and decoding, the "
            "node's hand-over to its worker, the rest of the forward, the mask's conversion and its transport are "
            "inside it. `image -> mask` counts from the image's publish, so it also holds the ~1 ms the node waits "
            "for that packet (while it stages the frame). `node in->out`: image callback -> all masks published."
        )
    else:
        headers = ["engine mode", "sent", "received", "missed", "p50 ms", "p90 ms", "p99 ms", "max ms",
                   "node in->out p50 ms", "node forward p50 ms", "dropped busy", "node rc"]  # fmt: skip
        about = (
            "Latency: image publish -> raw mask receive in the publishing process (`benchmarks/node_latency.py`). "
            "`node in->out`: image callback -> all masks published, inside the node (its /diagnostics); the rest "
            "is DDS transport and executor wake-ups both ways. `node forward`: the Segmenter's forward stage."
        )
    stages = list(dict.fromkeys(stage for note in notes for stage in note["stages"]))
    stage_rows = [[row[0], *(note["stages"].get(stage, "?") for stage in stages)] for row, note in zip(rows, notes)]
    body = table(["setting", "value"], setup) + "\n\n" + table(headers, rows) + "\n\n" + about
    body += (
        "\n\nInside the node, p50 ms of each stage of its worker, in the order they run (its /diagnostics): "
        "`queue` image callback -> worker, `wait_events` for the events up to the image stamp, the Segmenter's "
        "stages, then converting and publishing each output (the colored mask and overlay include rendering)."
        "\n\n" + table(["engine mode", *stages], stage_rows)
    )
    print(body)
    if not args.no_write:
        title = "Node latency at the sensors' pace" if sensor_pace else "Node latency"
        write_section(title + (" (GPU)" if args.device.startswith("cuda") else ""), body)
    return 0 if all(row[-1] == 0 for row in rows) else 1


class NodeUnderTest:
    """mambaseg_node in its own process with the engine `mode` and `params`, and this process's side: a ROS node that
    records when each ~/raw_mask arrives (stamp µs -> `clock()`) and keeps the node's /diagnostics. Close it."""

    def __init__(self, args: argparse.Namespace, mode: str, params: dict, workdir: Path, clock=time.perf_counter):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from mambaseg_ros.conversions import stamp_to_us

        self.args = args
        params = {**params, **ENGINE_MODES[mode]._asdict(), "checkpoint": args.checkpoint}
        params.update(allow_random_weights=not args.checkpoint, device=args.device, scan_backend=args.scan_backend)
        params.update(image_reliability="reliable", events_reliability="reliable", diagnostics_period_s=0.5)
        self.tag = tag = mode.replace(" ", "_")  # names its files in `workdir`
        params_path = workdir / f"params_{tag}.yaml"
        params_path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))
        self.env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        os.environ.update({k: self.env[k] for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
        node_cmd = [sys.executable, "-m", "mambaseg_ros.node", "--ros-args", "--params-file", str(params_path)]
        node_cmd += ["-r", "image:=/bench/image", "-r", "events:=/bench/events"]
        self.log_path = workdir / f"node_{tag}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            node_cmd, cwd=REPO_ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )

        rclpy.init()
        self.bench = rclpy.create_node("node_latency_bench")
        self.received: dict[int, float] = {}
        self.diagnostics: list[DiagnosticArray] = []
        self.mask_sub = self.bench.create_subscription(
            Image,
            "/mambaseg_node/raw_mask",
            lambda m: self.received.setdefault(stamp_to_us(m.header.stamp), clock()),
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.bench.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.bench)

    def spin_until(self, predicate, timeout: float) -> bool:
        """Spin until `predicate()` holds (True) or `timeout` s pass or the node exits (then: the predicate)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or self.process.poll() is not None:
                return predicate()
            self.executor.spin_once(timeout_sec=0.002)
        return True

    def stats(self) -> dict:
        """The node's latest /diagnostics values."""
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values} if self.diagnostics else {}

    def close(self) -> int:
        """Stop the node (SIGINT) and this side; the node's exit code."""
        import rclpy

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        rc = self.process.wait(timeout=60)
        self._log.close()
        self.executor.shutdown()
        self.bench.destroy_node()
        rclpy.try_shutdown()
        return rc

    def notes(self) -> dict:
        stats = self.stats()
        return {
            "stages": {k.split(".", 1)[1]: v for k, v in stats.items() if k.startswith("stage_p50_ms.")},
            "device": f"{stats.get('device', self.args.device)}, scan backend {stats.get('scan_backend', '?')}",
            "transport": "FastDDS, reliable, " + Path(self.env["FASTDDS_DEFAULT_PROFILES_FILE"]).name,
            "ros": f"rclpy {importlib.metadata.version('rclpy')}, "
            f"ROS_DISTRO {os.environ.get('ROS_DISTRO', 'unset (PyPI wheels)')}",
        }

    def node_columns(self, rc: int) -> list:
        stats = self.stats()
        keys = ("latency_p50_ms", "inference_p50_ms", "total_dropped_busy")
        return [*(stats.get(key, "?") for key in keys), rc]


def latency_columns(latencies: np.ndarray) -> list[float]:
    """p50, p90, p99, max (nan when empty)."""
    if not len(latencies):
        return [float("nan")] * 4
    return [*(float(v) for v in np.percentile(latencies, (50, 90, 99))), float(latencies.max())]


def measure_in_bursts(
    args: argparse.Namespace, mode: str, config_path: str, height: int, width: int, workdir: Path
) -> tuple[list, dict]:
    """--pace burst: start mambaseg_node with the engine `mode`, drive it and return its table row and notes."""
    from event_camera_msgs.msg import EventPacket
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mambaseg_ros.conversions import numpy_to_image, us_to_stamp

    period_us = int(1e6 / args.rate)
    params = {
        "model_config": config_path,
        "window_events": args.events_per_frame,
        "image_fit": args.image_fit,
        "max_event_latency_ms": 1000.0,
    }
    run = NodeUnderTest(args, mode, params, workdir)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = run.bench.create_publisher(Image, "/bench/image", qos)
    events_pub = run.bench.create_publisher(
        EventPacket, "/bench/events", QoSProfile(depth=1000, reliability=qos.reliability)
    )
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
        connected = run.spin_until(
            lambda: (
                image_pub.get_subscription_count() > 0
                and events_pub.get_subscription_count() > 0
                and run.mask_sub.get_publisher_count() > 0
            ),
            args.startup_timeout,
        )
        if not connected:
            raise RuntimeError(f"the node did not come up; see {run.log_path}")

        def rejected_frames() -> int:  # the node counts the images it cannot use; no mask will come for them
            stats = run.stats()
            return sum(int(stats.get(f"total_{key}", 0)) for key in ("images_rejected", "images_wrong_size"))

        for i in range(args.warmup):
            stamp = publish(i)
            if not run.spin_until(lambda s=stamp: s in run.received or rejected_frames() > 0, args.startup_timeout):
                raise RuntimeError(f"no mask for warm-up frame {i}; see {run.log_path}")
            if stamp not in run.received:
                raise RuntimeError(
                    f"the node rejected the benchmark images (wrong size or encoding?); see {run.log_path}"
                )
        timed = []
        start = time.perf_counter()
        for j in range(args.frames):
            run.spin_until(lambda j=j: time.perf_counter() >= start + j / args.rate, 10.0)
            timed.append(publish(args.warmup + j))
        run.spin_until(lambda: all(s in run.received for s in timed), 10.0)
        run.spin_until(lambda: False, 1.0)  # a last diagnostics message
        latencies = np.array([(run.received[s] - published[s]) * 1e3 for s in timed if s in run.received])
        notes = run.notes()
    finally:
        rc = run.close()
    row = [mode, len(timed), len(latencies), len(timed) - len(latencies), *latency_columns(latencies)]
    return row + run.node_columns(rc), notes


def measure_at_sensor_pace(
    args: argparse.Namespace, mode: str, config_path: str, height: int, width: int, workdir: Path
) -> tuple[list, dict]:
    """--pace sensor: start mambaseg_node with the engine `mode` and the dataset's window, wait until it is ready,
    run the publisher process (`publish_at_sensor_pace`) and return the table row and notes."""
    params = {
        "model_config": config_path,
        **DATASETS[args.dataset][2],
        "image_fit": args.image_fit,
        "sensor_height": height,
        "sensor_width": width,
        "event_msg_type": "event_packet",
    }
    run = NodeUnderTest(args, mode, params, workdir, clock=time.time)
    times_path = workdir / f"sent_{run.tag}.json"
    try:
        # Its first /diagnostics: the node spins. Packets sent before (while its main() still froze the start-up
        # heap out of the GC, up to ~1 s) would queue, and their catch-up made the first ~25 frames wait 50 ms.
        if not run.spin_until(lambda: bool(run.diagnostics), args.startup_timeout):
            raise RuntimeError(f"the node did not come up; see {run.log_path}")
        publisher = subprocess.Popen(
            [sys.executable, __file__, "--publish-sensor", str(times_path), "--dataset", args.dataset,
             "--frames", str(args.frames), "--warmup", str(args.warmup)],
            env=run.env,
        )  # fmt: skip
        stream_s = (args.warmup + args.frames + 1) * FRAME_US / 1e6
        if not run.spin_until(lambda: publisher.poll() is not None, stream_s + 120):
            publisher.kill()
            raise RuntimeError("the publisher did not finish")
        if publisher.returncode != 0:
            raise RuntimeError(f"the publisher failed (exit code {publisher.returncode})")
        run.spin_until(lambda: False, 1.0)  # the last masks and a last diagnostics message
        notes = run.notes()
    finally:
        rc = run.close()
    sent = {int(stamp): times for stamp, times in json.loads(times_path.read_text()).items()}
    timed = sorted(sent)[args.warmup :]
    got = [s for s in timed if s in run.received]
    from_packet = np.array([(run.received[s] - sent[s][1]) * 1e3 for s in got])
    from_image = np.array([(run.received[s] - sent[s][0]) * 1e3 for s in got])
    frames_path = workdir / f"frames_{run.tag}.json"  # per frame, for looking into the tail
    frames_path.write_text(
        json.dumps({"stamps_us": got, "from_packet_ms": from_packet.tolist(), "from_image_ms": from_image.tolist(),
                    "node_diagnostics": run.stats()})
    )  # fmt: skip
    print(f"per-frame latencies: {frames_path}")
    image_columns = latency_columns(from_image)
    row = [mode, len(timed), len(got), len(timed) - len(got), *latency_columns(from_packet)]
    return [*row, image_columns[0], image_columns[2], *run.node_columns(rc)], notes


def publish_at_sensor_pace(args: argparse.Namespace) -> int:
    """The publisher process of --pace sensor: the dataset's synthetic stream as 1 ms EVT3 packets, each sent when its
    last millisecond is over, and a camera frame every FRAME_US, sent when its exposure stamp is due, on the wall
    clock. A packet is stamped with its start in the host clock (a driver's transfer latency left out), so that the
    node's clock maps its events exactly onto the frames' stamps. Writes {frame stamp µs: [image publish, publish of
    the packet after the stamp]} (time.time()) to the JSON file given."""
    import rclpy
    from event_camera_msgs.msg import EventPacket
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from mambaseg_ros.conversions import numpy_to_image, us_to_stamp

    _, sensor, _, rate = DATASETS[args.dataset]
    stream = synthetic_stream(sensor, rate, args.warmup + args.frames + 1)
    per_frame = len(stream[0])
    rclpy.init()
    node = rclpy.create_node("node_latency_sensors")
    reliable = ReliabilityPolicy.RELIABLE
    events_pub = node.create_publisher(EventPacket, "/bench/events", QoSProfile(depth=1000, reliability=reliable))
    image_pub = node.create_publisher(Image, "/bench/image", QoSProfile(depth=10, reliability=reliable))
    while events_pub.get_subscription_count() == 0 or image_pub.get_subscription_count() == 0:
        time.sleep(0.05)
    time.sleep(0.5)  # discovery settles both ways
    packet = EventPacket(encoding="evt3", height=sensor[0], width=sensor[1])
    image = np.random.default_rng(1).integers(0, 256, (*sensor, 3), dtype=np.uint8)
    frame = numpy_to_image(image, "rgb8", Header(frame_id="cam"))
    origin = time.time() + 0.2  # wall time of stream time 0
    origin_us = int(origin * 1e6)
    sent: dict[int, list[float]] = {}
    for j, payload in enumerate(p for packets in stream for p in packets):
        stamp_us = origin_us + j * 1000
        if j and j % per_frame == 0:  # a frame exposed at this packet's start
            wait_until_wall(origin + j * 1e-3)
            frame.header.stamp = us_to_stamp(stamp_us)
            sent[stamp_us] = [time.time(), 0.0]
            image_pub.publish(frame)
        wait_until_wall(origin + (j + 1) * 1e-3)
        packet.header.stamp = us_to_stamp(stamp_us)
        packet.events = payload
        if stamp_us in sent:
            sent[stamp_us][1] = time.time()
        events_pub.publish(packet)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()
    Path(args.publish_sensor).write_text(json.dumps(sent))
    return 0


def wait_until_wall(deadline: float) -> None:
    """Sleep until time.time() reaches `deadline`."""
    if (left := deadline - time.time()) > 0:
        time.sleep(left)


if __name__ == "__main__":
    sys.exit(main())
