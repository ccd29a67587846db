"""`mambaseg-simulate-events video.mp4 --out events.h5`: turn an ordinary video into a DSEC-style event stream.

Frames are read with OpenCV, converted to linear luminance (inverse display gamma), optionally upsampled in time
by linear interpolation in log space, and fed to the ESIM-style simulator (mambaseg_core.synthetic).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from mambaseg_core.data.events_h5 import DsecEventsWriter
from mambaseg_core.synthetic.event_simulator import EventSimulator, EventSimulatorConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mambaseg-simulate-events",
        description="Convert a video into events (ESIM/v2e-style simulator) written as a DSEC-style events.h5.",
    )
    parser.add_argument("video", type=Path, help="input video file (anything OpenCV can read)")
    parser.add_argument("--out", type=Path, required=True, help="output events.h5")
    parser.add_argument(
        "--fps-upsample",
        type=int,
        default=1,
        help="simulator steps per video frame, interpolated linearly in log intensity (default 1; the simulator "
        "already interpolates linearly between steps, so >1 mainly refines noise and refractory timing)",
    )
    parser.add_argument("--fps", type=float, default=None, help="override the video's frame rate (Hz)")
    parser.add_argument("--contrast", type=float, default=0.25, help="mean ON/OFF contrast threshold (log units)")
    parser.add_argument("--contrast-sigma", type=float, default=0.03, help="per-pixel threshold std (log units)")
    parser.add_argument("--refractory-us", type=int, default=100, help="pixel refractory period (µs)")
    parser.add_argument("--shot-noise-hz", type=float, default=0.0, help="shot-noise events per pixel per second")
    parser.add_argument("--leak-hz", type=float, default=0.0, help="leak events per pixel per second")
    parser.add_argument("--log-eps", type=float, default=1e-2, help="L = log(eps + linear luminance in [0, 1])")
    parser.add_argument("--gamma", type=float, default=2.2, help="display gamma to undo (1 = treat pixels as linear)")
    parser.add_argument("--t-offset", type=int, default=0, help="t_offset (µs) stored in the file")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of thresholds and noise")
    return parser


def read_luminance(video: Path, gamma: float, max_frames: int | None) -> tuple[Iterator[np.ndarray], float]:
    """(iterator of (H, W) float32 linear luminance in [0, 1], frame rate in Hz, 0 if unknown)."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames() -> Iterator[np.ndarray]:
        count = 0
        try:
            while max_frames is None or count < max_frames:
                ok, bgr = capture.read()
                if not ok:
                    return
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
                yield (gray.astype(np.float32) / 255.0) ** gamma
                count += 1
        finally:
            capture.release()

    return frames(), fps


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.fps_upsample < 1:
        print("error: --fps-upsample must be >= 1", file=sys.stderr)
        return 2
    try:
        frames, video_fps = read_luminance(args.video, args.gamma, args.max_frames)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    fps = args.fps or video_fps
    if fps <= 0:
        print("error: the video has no frame rate; pass --fps", file=sys.stderr)
        return 2
    config = EventSimulatorConfig(
        contrast_on=args.contrast,
        contrast_off=args.contrast,
        contrast_sigma=args.contrast_sigma,
        refractory_us=args.refractory_us,
        shot_noise_hz=args.shot_noise_hz,
        leak_hz=args.leak_hz,
        log_eps=args.log_eps,
    )
    simulator: EventSimulator | None = None
    previous: np.ndarray | None = None
    num_frames = 0
    with DsecEventsWriter(args.out, t_offset=args.t_offset) as writer:
        for num_frames, luminance in enumerate(frames, start=1):
            log_frame = np.log(args.log_eps + luminance.astype(np.float64))
            if simulator is None:
                height, width = log_frame.shape
                simulator = EventSimulator(height, width, config, seed=args.seed)
                simulator.step(log_frame, args.t_offset, is_log=True)
                previous = log_frame
                continue
            assert previous is not None
            t_prev_s = (num_frames - 2) / fps
            for k in range(1, args.fps_upsample + 1):
                alpha = k / args.fps_upsample
                t_us = args.t_offset + round((t_prev_s + alpha / fps) * 1e6)
                writer.append(simulator.step((1 - alpha) * previous + alpha * log_frame, t_us, is_log=True))
            previous = log_frame
        total = len(writer)
    if simulator is None:
        print(f"error: no frames could be read from {args.video}", file=sys.stderr)
        return 1
    size = f"{simulator.width}x{simulator.height}"
    print(f"{args.out}: {total} events from {num_frames} frames of {size} at {fps:g} Hz (x{args.fps_upsample})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
