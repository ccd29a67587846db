"""What mambaseg_node's ROS executor costs beside inference, with event packets at the sensors' pace.

The node takes every EventPacket on its executor thread (rclpy's SingleThreadedExecutor: the packet's decoding,
clock alignment and ring-buffer append) while its worker thread waits for the GPU. latency.py's real-time section
replays that in one process without ROS; this measures what ROS adds, on this host:
- delivery: a packet's publish -> the node's packet callback (the header stamp is the publisher's wall clock);
- callback: the node's `_on_event_packet` (decoding + alignment + append);
- CPU per packet: the node process's CPU time during the stream, less its idle rate, per packet;
- worker wake-up: how late a thread that sleeps 4 ms without the GIL (the worker waiting for the GPU) wakes up,
  idle and during the stream: the executor's Python holds the GIL it needs to go on.
A publisher process (this script with --publish) sends 1 ms EVT3 packets at the dataset's event rate on a wall-clock
schedule; this process runs MambaSegNode (the tiny random-weight model on the CPU; no images are sent, so its worker
stays idle) spun by a SingleThreadedExecutor as mambaseg_node's main() spins it.

    python benchmarks/ros_executor.py                 # DSEC and DDD17 rates, 6 s of packets each
    python benchmarks/ros_executor.py --no-write      # print only

Needs rclpy and event_camera_msgs. Writes the "ROS executor" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import yaml  # noqa: E402
from _report import table, write_section  # noqa: E402
from latency import DATASETS, FRAME_US, synthetic_stream  # noqa: E402
from node_latency import TINY_MODEL  # noqa: E402

TOPIC = "/ros_executor_bench/events"
WAKE_S = 0.004  # the worker's wait for a DSEC forward
PROBLEMS = ("event_packets_malformed", "time_jumps")  # node counters that must stay 0 here


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seconds", type=float, default=6.0, help="packets sent per dataset (1 kHz)")
    parser.add_argument("--publish", choices=list(DATASETS), help=argparse.SUPPRESS)  # the publisher process
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args()


def publish(dataset: str, seconds: float) -> None:
    """Send the dataset's synthetic stream as 1 ms EVT3 EventPackets at wall-clock pace, each stamped when sent."""
    import rclpy
    from event_camera_msgs.msg import EventPacket
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    _, sensor, _, rate = DATASETS[dataset]
    packets = [packet for frame in synthetic_stream(sensor, rate, int(seconds * 1e6) // FRAME_US) for packet in frame]
    rclpy.init()
    node = rclpy.create_node("ros_executor_bench_publisher")
    publisher = node.create_publisher(
        EventPacket, TOPIC, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    )
    while publisher.get_subscription_count() == 0:
        time.sleep(0.05)
    time.sleep(0.5)  # discovery settles both ways
    msg = EventPacket(encoding="evt3", height=sensor[0], width=sensor[1])
    print("publishing", flush=True)
    due = time.perf_counter()
    for packet in packets:
        due += 1e-3
        while (left := due - time.perf_counter()) > 0:
            time.sleep(left)
        msg.events = packet
        now_ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
        publisher.publish(msg)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.try_shutdown()


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return tuple(ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.9, 0.99))  # type: ignore[return-value]


def wake_up_lateness_us(count: int) -> list[float]:
    """How late `count` GIL-free sleeps of WAKE_S end, µs."""
    late = []
    for _ in range(count):
        start = time.perf_counter()
        time.sleep(WAKE_S)
        late.append((time.perf_counter() - start - WAKE_S) * 1e6)
    return late


def spin(executor: Any) -> None:
    from rclpy.executors import ExternalShutdownException

    with contextlib.suppress(ExternalShutdownException):  # the context's shutdown ends the measurement
        executor.spin()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(dataset: str, seconds: float, workdir: Path) -> tuple[list[object], dict[str, Any]]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from mambaseg_ros.conversions import stamp_to_us
    from mambaseg_ros.node import MambaSegNode

    _, sensor, _, rate = DATASETS[dataset]
    delivery_us: list[float] = []
    callback_us: list[float] = []

    class TimedNode(MambaSegNode):
        def _on_event_packet(self, msg: Any) -> None:
            delivery_us.append(time.time_ns() / 1e3 - stamp_to_us(msg.header.stamp))
            start = time.perf_counter()
            super()._on_event_packet(msg)
            callback_us.append((time.perf_counter() - start) * 1e6)

    model_config = workdir / "tiny_model.yaml"
    model_config.write_text(yaml.safe_dump(TINY_MODEL))
    params = {
        "model_config": str(model_config),
        "allow_random_weights": True,
        "device": "cpu",
        "sensor_height": sensor[0],
        "sensor_width": sensor[1],
        "events_reliability": "reliable",
        "event_msg_type": "event_packet",
    }
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-r", f"events:={TOPIC}"])
    node = TimedNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    gc.collect()  # as mambaseg_node's main() does
    gc.freeze()
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    try:
        cpu0, wall0 = cpu_s(), time.perf_counter()
        idle = wake_up_lateness_us(300)
        idle_cpu_per_s = (cpu_s() - cpu0) / (time.perf_counter() - wall0)
        publisher = subprocess.Popen(
            [sys.executable, __file__, "--publish", dataset, "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert publisher.stdout is not None and publisher.stdout.readline() == "publishing\n"
        while len(delivery_us) < 300:  # past the first packets (and their catch-up, if any)
            time.sleep(0.01)
        first, cpu0, wall0 = len(delivery_us), cpu_s(), time.perf_counter()
        busy = wake_up_lateness_us(int((seconds - 1.0) / (WAKE_S + 0.0002)))
        packets, cpu, wall = len(delivery_us) - first, cpu_s() - cpu0, time.perf_counter() - wall0
        publisher.wait(timeout=60)
        counters = node.counters.snapshot()
    finally:
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=10)
        node.destroy_node()
        gc.unfreeze()
    cpu_per_packet_us = (cpu - idle_cpu_per_s * wall) / max(packets, 1) * 1e6
    payload = len(synthetic_stream(sensor, rate, 1)[0][0])
    row: list[object] = [dataset, f"{rate // 1000}", f"{payload / 1e3:.1f}", packets]
    row += [f"{v:.0f}" for v in percentiles(delivery_us[first:])]
    row += [f"{percentiles(callback_us[first:])[0]:.0f}", f"{cpu_per_packet_us:.0f}"]
    row += [
        "{:.0f} / {:.0f} / {:.0f}".format(*percentiles(idle)),
        "{:.0f} / {:.0f} / {:.0f}".format(*percentiles(busy)),
    ]
    print(row, flush=True)
    return row, counters


def main() -> int:
    args = parse_args()
    if args.publish:
        publish(args.publish, args.seconds)
        return 0
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    workdir = Path(tempfile.mkdtemp(prefix="ros_executor_"))
    rows, problems = [], []
    for dataset in args.datasets:
        row, counters = measure(dataset, args.seconds, workdir)
        rows.append(row)
        problems += [
            f"{dataset}: {key} {counters[key]}" for key in ("event_packets_malformed", "time_jumps") if counters[key]
        ]
    setup = [
        ("host", f"{os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f} at the end"),
        ("ROS 2", f"rclpy {importlib.metadata.version('rclpy')}, ROS_DISTRO {os.environ.get('ROS_DISTRO', 'unset')}"),
        ("transport", "FastDDS, reliable, " + Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).name),
        ("stream", f"1 ms EVT3 packets at wall-clock pace, {args.seconds:g} s a dataset (synthetic moving edges)"),
    ]  # fmt: skip
    headers = ["rate", "k events/s", "packet kB", "packets", "delivery p50 µs", "p90", "p99", "callback p50 µs",
               "CPU µs / packet", "worker wake-up late, idle p50 / p90 / p99 µs", "during the stream"]  # fmt: skip
    body = table(["setting", "value"], setup) + "\n\n" + table(headers, rows)
    body += (
        "\n\n`benchmarks/ros_executor.py`. Delivery: publish -> the node's packet callback. Callback: its decoding, "
        "clock alignment and append. CPU: the node process's, less its idle rate (the executor's wait-set handling "
        "is most of it). Wake-up: lateness of a 4 ms GIL-free sleep, as the worker's wait for the GPU; the "
        "difference between the columns is what the executor's hold on the GIL costs the worker per wake-up."
    )
    if problems:
        body += "\n\nCounters that should have stayed 0: " + ", ".join(problems)
    print(body)
    if not args.no_write:
        write_section("ROS executor", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
