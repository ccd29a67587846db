"""`mambaseg-bag`: rosbag tools.

    mambaseg-bag segment IN OUT --checkpoint model.pt        # offline: bag -> Segmenter -> bag (+ masks)
    mambaseg-bag convert-dsec SEQUENCE_DIR OUT                # DSEC-Semantic sequence -> bag
    mambaseg-bag convert-ddd17 DIR OUT                        # one ddd17_seg recording (dirK) -> bag
    mambaseg-bag convert-synthetic OUT --seconds 5 --seed 3   # synthetic street sequence -> bag
    mambaseg-bag play BAG --rate 0.5                          # republish over ROS 2 (needs rclpy)
    mambaseg-bag record OUT --topics /a /b                    # record over ROS 2 (needs rclpy)

segment and convert-* need no ROS runtime (pure rosbags); rclpy is imported only by play and record.
Exit codes: 0 done, 1 ran but produced nothing usable, 2 bad input (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mambaseg_core.bags import (
    DEFAULT_TOPICS,
    NODE_NAMESPACE,
    OUTPUT_NAMES,
    BagTopics,
    OverlayDump,
    SegmentOptions,
    ddd17_source,
    dsec_source,
    segment_bag,
    synthetic_source,
    write_sequence_bag,
)
from mambaseg_core.bags.writer import STORAGES
from mambaseg_core.config import ConfigError, load_config
from mambaseg_core.data.errors import DatasetError
from mambaseg_core.events.packets import SUPPORTED_ENCODINGS
from mambaseg_core.pipeline import Segmenter, SegmenterConfig, build_model
from mambaseg_core.pipeline.event_clock import EVENT_CLOCK_SETTINGS

PROG = "mambaseg-bag"


def _add_topic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-topic", default=DEFAULT_TOPICS.image, help="default %(default)s")
    parser.add_argument("--events-topic", default=DEFAULT_TOPICS.events, help="default %(default)s")


def _add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output bag folder (must not exist)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="default %(default)s")
    parser.add_argument("--encoding", choices=SUPPORTED_ENCODINGS, default="evt3", help="EventPacket encoding")
    parser.add_argument("--packet-us", type=int, default=1000, help="event packet length, µs (default 1000)")
    parser.add_argument("--frame-id", default="camera", help="header frame_id of every message")
    _add_topic_arguments(parser)
    parser.add_argument("--camera-info-topic", default=DEFAULT_TOPICS.camera_info, help="default %(default)s")
    parser.add_argument("--labels-topic", default=DEFAULT_TOPICS.labels, help="default %(default)s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment every image of a bag offline (no ROS runtime)")
    seg.add_argument("input", type=Path, help="input bag folder (sqlite3 or mcap)")
    seg.add_argument("output", type=Path, help="output bag folder (must not exist): input topics + masks")
    seg.add_argument("--checkpoint", type=Path, help="model weights (ours or official)")
    seg.add_argument("--model-config", type=Path, help="model YAML (random weights; image_size for official ckpts)")
    seg.add_argument("--random-weights", action="store_true", help="allow running without a checkpoint")
    seg.add_argument("--seed", type=int, default=0, help="seed of random weights")
    seg.add_argument("--device", default="cpu", help="cpu | cuda:N (default cpu)")
    seg.add_argument("--config", type=Path, help="SegmenterConfig YAML (window, image_fit, classes, ...)")
    seg.add_argument("--window-mode", choices=("count", "duration"), help="overrides --config")
    seg.add_argument("--window-events", type=int, help="events per frame (window-mode count)")
    seg.add_argument("--window-duration-us", type=int, help="µs per frame (window-mode duration)")
    seg.add_argument("--image-fit", choices=("resize", "crop_bottom"), help="image -> network size")
    seg.add_argument("--output-resolution", choices=("input", "network"), help="mask size")
    seg.add_argument("--class-set", help="dsec11 | dsec19 | ddd17 | auto")
    seg.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="matrix products (default fp32)")
    seg.add_argument("--cuda-graph", action="store_true", default=None, help="replay one CUDA graph per frame")
    _add_topic_arguments(seg)
    seg.add_argument("--output-namespace", default=NODE_NAMESPACE, help="output topics' prefix (default %(default)s)")
    seg.add_argument("--outputs", nargs="+", choices=OUTPUT_NAMES, default=list(OUTPUT_NAMES))
    seg.add_argument("--storage", choices=sorted(STORAGES), help="output storage (default: the input's)")
    seg.add_argument("--event-clock", choices=EVENT_CLOCK_SETTINGS, default="auto")
    seg.add_argument("--png-dir", type=Path, help="also write every overlay as PNG here")
    seg.add_argument("--mp4", type=Path, help="also write the overlays as an MP4 video")
    seg.add_argument("--fps", type=float, help="MP4 frame rate (default: from the image stamps)")
    seg.add_argument("--no-progress", action="store_true")

    dsec = commands.add_parser("convert-dsec", help="DSEC-Semantic sequence folder -> bag")
    dsec.add_argument("sequence", type=Path, help="<root>/<split>/<sequence> in the layout MambaSeg reads")
    _add_convert_arguments(dsec)
    dsec.add_argument("--classes", type=int, choices=(11, 19), default=11, help="label set (default 11)")
    dsec.add_argument("--lead-ms", type=float, default=500.0, help="events before the first image (default 500)")
    dsec.add_argument("--calibration", type=Path, help="cam_to_cam.yaml (default <sequence>/calibration/...)")
    dsec.add_argument("--no-rectify", action="store_true", help="keep raw sensor event coordinates")

    ddd17 = commands.add_parser("convert-ddd17", help="one ddd17_seg recording folder (dirK) -> bag")
    ddd17.add_argument("folder", type=Path)
    _add_convert_arguments(ddd17)
    ddd17.add_argument("--lead-ms", type=float, default=50.0, help="events before the first frame (default 50)")

    synthetic = commands.add_parser("convert-synthetic", help="synthetic street sequence -> bag")
    _add_convert_arguments(synthetic)
    synthetic.add_argument("--seconds", type=float, default=5.0)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--lighting", default="random", help="a lighting scenario or random")
    synthetic.add_argument("--height", type=int, default=120)
    synthetic.add_argument("--width", type=int, default=160)
    synthetic.add_argument("--frame-rate", type=float, default=20.0, help="Hz (default 20)")

    play = commands.add_parser("play", help="republish a bag over ROS 2 (needs rclpy)")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    play.add_argument("--topics", nargs="+", help="play only these bag topics")
    play.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish bag topic FROM as TO")
    play.add_argument(
        "--wait-subscribers",
        nargs="+",
        default=[],
        metavar="TOPIC",
        help="bag topics that need a subscriber before playback starts",
    )
    play.add_argument(
        "--lockstep",
        nargs=2,
        metavar=("IMAGE_TOPIC", "ANSWER_TOPIC"),
        help="publish each image only once every earlier one was answered on ANSWER_TOPIC",
    )
    play.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for subscribers / an answer")

    record = commands.add_parser("record", help="record topics into a bag (needs rclpy)")
    record.add_argument("out", type=Path, help="output bag folder (must not exist)")
    record.add_argument("--topics", nargs="+", help="topics to record (default: all but /rosout, /parameter_events)")
    record.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    record.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    return parser


def _segmenter(args: argparse.Namespace) -> Segmenter:
    overrides = {
        key: value
        for key, value in (
            ("window_mode", args.window_mode),
            ("window_events", args.window_events),
            ("window_duration_us", args.window_duration_us),
            ("image_fit", args.image_fit),
            ("output_resolution", args.output_resolution),
            ("class_set", args.class_set),
            ("precision", args.precision),
            ("cuda_graph", args.cuda_graph),
        )
        if value is not None
    }
    config = load_config(SegmenterConfig, args.config, **overrides)
    model = build_model(
        args.checkpoint, args.model_config, device=args.device, random_seed=args.seed if args.random_weights else None
    )
    if not args.checkpoint:
        print(f"{PROG}: RANDOM WEIGHTS: the masks are meaningless", file=sys.stderr)
    return Segmenter(model, config, args.device)


def _segment(args: argparse.Namespace) -> int:
    segmenter = _segmenter(args)
    options = SegmentOptions(
        image_topic=args.image_topic,
        events_topic=args.events_topic,
        output_namespace=args.output_namespace,
        outputs=tuple(args.outputs),
        storage=args.storage,
        event_clock=args.event_clock,
    )
    dump = OverlayDump(args.png_dir, args.mp4, args.fps) if args.png_dir or args.mp4 else None
    try:
        report = segment_bag(args.input, args.output, segmenter, options, on_result=dump, progress=not args.no_progress)
    finally:
        if dump is not None:
            dump.close()
    print(report.summary())
    if report.masks == 0:
        print(f"{PROG} segment: error: no image of {args.image_topic} was segmented", file=sys.stderr)
        return 1
    return 0


def _topics(args: argparse.Namespace) -> BagTopics:
    return BagTopics(args.image_topic, args.events_topic, args.camera_info_topic, args.labels_topic)


def _convert(args: argparse.Namespace) -> int:
    from mambaseg_core.synthetic import SceneConfig, SequenceConfig

    if args.command == "convert-dsec":
        source = dsec_source(
            args.sequence,
            classes=args.classes,
            lead_ms=args.lead_ms,
            rectify_events_to_image=not args.no_rectify,
            calibration=args.calibration,
        )
    elif args.command == "convert-ddd17":
        source = ddd17_source(args.folder, lead_ms=args.lead_ms)
    else:
        scene = SceneConfig(
            height=args.height, width=args.width, seed=args.seed, duration_s=args.seconds, lighting=args.lighting
        )
        source = synthetic_source(SequenceConfig(scene=scene, frame_rate_hz=args.frame_rate))
    report = write_sequence_bag(
        args.out,
        source,
        topics=_topics(args),
        storage=args.storage,
        encoding=args.encoding,
        packet_us=args.packet_us,
        frame_id=args.frame_id,
        progress=True,
    )
    print(report.summary())
    return 0


def _parse_remaps(pairs: list[str]) -> dict[str, str]:
    remap = {}
    for pair in pairs:
        source, sep, target = pair.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"--remap expects FROM:=TO, got {pair!r}")
        remap[source] = target
    return remap


def _play(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from mambaseg_ros.bag_play import BagPlayer, PlayOptions

    options = PlayOptions(
        rate=args.rate,
        topics=args.topics,
        remap=_parse_remaps(args.remap),
        wait_for_subscribers=args.wait_subscribers,
        subscriber_timeout_s=args.timeout,
        lockstep_image_topic=args.lockstep[0] if args.lockstep else None,
        lockstep_answer_topic=args.lockstep[1] if args.lockstep else None,
        answer_timeout_s=args.timeout,
    )
    rclpy.init()
    node = rclpy.create_node("mambaseg_bag_player")
    try:
        report = BagPlayer(node, args.bag, options).play()
        print(report.summary())
        return 0 if report.unanswered == 0 else 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _record(args: argparse.Namespace) -> int:
    import time

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from mambaseg_ros.bag_record import BagRecorder

    rclpy.init()
    node = rclpy.create_node("mambaseg_bag_recorder")
    recorder = None
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        recorder = BagRecorder(node, args.out, args.topics, args.storage)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while deadline is None or time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if recorder is not None:
            recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    counts = recorder.counts if recorder is not None else {}
    print(", ".join(f"{topic} {count}" for topic, count in counts.items()) or "nothing recorded")
    return 0


_COMMANDS: dict[str, Any] = {
    "segment": _segment,
    "convert-dsec": _convert,
    "convert-ddd17": _convert,
    "convert-synthetic": _convert,
    "play": _play,
    "record": _record,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, TimeoutError, DatasetError, ConfigError) as exc:
        # BagError, DatasetError and ConfigError name the bad input themselves.
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
