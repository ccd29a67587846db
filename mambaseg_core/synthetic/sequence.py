"""Synthetic sequences: scene + event simulator + frame camera, streamed frame by frame or written as DSEC.

`generate_sequence` renders the scene at `sim_rate_hz` (1 kHz by default) for the event simulator and yields a
`SequenceFrame` at `frame_rate_hz` (20 Hz): the RGB frame (averaged over its exposure, so long night exposures
blur), the 11-class label at the frame instant, the events since the previous frame and a condition tag.
Consumers (the DSEC writer here, a rosbag writer, a demo) only iterate it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from mambaseg_core.data.events_h5 import DsecEventsWriter, identity_rectify_map, write_rectify_map
from mambaseg_core.events.batch import EventBatch

from .camera import FrameCamera, FrameCameraConfig, frame_condition
from .event_simulator import EventSimulator, EventSimulatorConfig
from .lighting import SCENARIOS
from .scene import Scene, SceneConfig, luminance

DSEC_TRAIN_NAMES: tuple[str, ...] = tuple(f"zurich_city_{k:02d}_a" for k in (0, 1, 2, 4, 5, 6, 7, 8))
DSEC_TEST_NAMES = ("zurich_city_13_a", "zurich_city_14_c", "zurich_city_15_a")
"""MambaSeg's DSEC provider keeps a sequence folder only if one of these is a substring of its path (spec §1.1);
synthetic folder names embed them so the unmodified provider reads the synthetic tree too."""

DEFAULT_EVENTS = EventSimulatorConfig(
    contrast_on=0.25, contrast_off=0.25, contrast_sigma=0.03, refractory_us=200, shot_noise_hz=0.05, leak_hz=0.05
)
"""Sensor defaults for synthetic sequences: DSEC-like thresholds with light noise."""

# 11-class id → Cityscapes trainId (the inverse of spec §5.1, unique for the classes this world paints).
DSEC11_TO_DSEC19 = np.full(256, 255, np.uint8)
for _src, _dst in {0: 10, 1: 2, 2: 4, 3: 11, 4: 5, 5: 0, 6: 1, 7: 8, 8: 13, 9: 3, 10: 7}.items():
    DSEC11_TO_DSEC19[_src] = _dst
DSEC11_TO_DSEC19.setflags(write=False)


@dataclass(frozen=True)
class SequenceConfig:
    """A synthetic sequence: its world, sensors and clocks."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    events: EventSimulatorConfig = DEFAULT_EVENTS
    camera: FrameCameraConfig = field(default_factory=FrameCameraConfig)
    frame_rate_hz: float = 20.0  # RGB frames and labels
    sim_rate_hz: float = 1000.0  # internal renders fed to the event simulator; a multiple of frame_rate_hz
    start_time_us: int = 137  # clock value of the first frame; off millisecond boundaries (spec §1.4)

    def __post_init__(self) -> None:
        ratio = self.sim_rate_hz / self.frame_rate_hz
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9 or 1e6 / self.sim_rate_hz != int(1e6 / self.sim_rate_hz):
            raise ValueError(
                f"sim_rate_hz ({self.sim_rate_hz}) must be an integer multiple of frame_rate_hz "
                f"({self.frame_rate_hz}) with an integer period in µs"
            )

    @property
    def num_frames(self) -> int:
        return round(self.scene.duration_s * self.frame_rate_hz)


@dataclass
class SequenceFrame:
    """One frame-rate sample: `t_us` (int, the frame clock), `rgb` uint8 (H, W, 3), `label` uint8 (H, W) 11-class,
    `events` in (previous frame, t_us], `condition` one of camera.CONDITION_TAGS, `exposure_s` the shutter time."""

    t_us: int
    rgb: np.ndarray
    label: np.ndarray
    events: EventBatch
    condition: str
    exposure_s: float


def generate_sequence(config: SequenceConfig) -> Iterator[SequenceFrame]:
    """Yield `config.num_frames` frames; frame k is at `start_time_us + k / frame_rate_hz`.

    The first frame carries no events (the simulator initialises on it). Same config → identical output.
    """
    scene = Scene(config.scene)
    seed = config.scene.seed
    h, w = config.scene.height, config.scene.width
    simulator = EventSimulator(h, w, config.events, seed=seed + 1)
    step_us = round(1e6 / config.sim_rate_hz)
    steps_per_frame = round(config.sim_rate_hz / config.frame_rate_hz)
    frame_dt = 1.0 / config.frame_rate_hz
    camera: FrameCamera | None = None
    pending: list[EventBatch] = []
    exposure_sum = np.zeros((h, w, 3), np.float32)
    exposure_count = 0
    for step in range(config.num_frames * steps_per_frame - steps_per_frame + 1):
        t_s = step * step_us * 1e-6
        t_us = config.start_time_us + step * step_us
        view = scene.render(t_s)
        pending.append(simulator.step(luminance(view.radiance), t_us))
        if camera is None:
            camera = FrameCamera(config.camera, seed=seed + 2)
            camera.exposure = camera.meter(view.radiance)  # start adapted, as after a warm-up
        # The frame integrates the renders inside its shutter window (t - exposure, t].
        steps_to_frame = (-step) % steps_per_frame
        if steps_to_frame * step_us < camera.exposure_time_s * 1e6 or steps_to_frame == 0:
            exposure_sum += view.radiance
            exposure_count += 1
        if steps_to_frame == 0:
            exposure_s = camera.exposure_time_s
            rgb = camera.capture(exposure_sum / exposure_count, frame_dt)
            yield SequenceFrame(
                t_us, rgb, view.label, EventBatch.concatenate(pending), frame_condition(rgb), exposure_s
            )
            pending, exposure_count = [], 0
            exposure_sum[:] = 0.0


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"cannot write {path}")


def write_dsec_sequence(
    root: str | Path, seq_name: str, config: SequenceConfig, *, t_offset: int = 0, label_crop_bottom: int = 0
) -> Path:
    """Write one sequence in the DSEC layout MambaSeg reads (spec §1.2) under `root/seq_name`; returns that folder.

    Files: `events/left/events.h5` (times relative to `t_offset`), `events/left/rectify_map.h5` (identity, H×W),
    `images/left/ev_inf/%06d.png` (RGB H×W), `images/timestamps.txt`, `semantic/timestamps.txt`,
    `semantic/{11,19}classes/data/%06d.png` ((H − label_crop_bottom)×W, like DSEC's 480 → 440 hood crop)
    and `semantic/conditions.txt` (one of normal|dark|hdr_bright per frame).
    Timestamps are `t_offset + frame time`. Sensor size is the scene's (H, W), not DSEC's 640×480.
    """
    seq = Path(root) / seq_name
    h = config.scene.height
    if not 0 <= label_crop_bottom < h:
        raise ValueError(f"label_crop_bottom must be in [0, {h}), got {label_crop_bottom}")
    times, conditions = [], []
    with DsecEventsWriter(seq / "events" / "left" / "events.h5", t_offset=t_offset) as writer:
        for k, frame in enumerate(generate_sequence(config)):
            writer.append(EventBatch(frame.events.x, frame.events.y, frame.events.t + t_offset, frame.events.p))
            label = frame.label[: h - label_crop_bottom]
            _write_png(seq / "images" / "left" / "ev_inf" / f"{k:06d}.png", frame.rgb)
            _write_png(seq / "semantic" / "11classes" / "data" / f"{k:06d}.png", label)
            _write_png(seq / "semantic" / "19classes" / "data" / f"{k:06d}.png", DSEC11_TO_DSEC19[label])
            times.append(frame.t_us + t_offset)
            conditions.append(frame.condition)
    write_rectify_map(seq / "events" / "left" / "rectify_map.h5", identity_rectify_map(h, config.scene.width))
    stamps = "".join(f"{t}\n" for t in times)
    (seq / "semantic" / "timestamps.txt").write_text(stamps)
    (seq / "images" / "timestamps.txt").write_text(stamps)
    (seq / "semantic" / "conditions.txt").write_text("".join(f"{c}\n" for c in conditions))
    return seq


SPLITS = ("train", "val", "test")


def dataset_plan(base: SequenceConfig, counts: dict[str, int], seed: int = 0) -> list[tuple[str, str, SequenceConfig]]:
    """The seeded split: (split, folder name, config) for `counts[split]` sequences per split.

    Every sequence has its own scene seed; lighting scenarios cycle per split so that even small splits hold
    dark and high-dynamic-range stretches. Folder names embed a DSEC sequence name (train names for "train",
    test names otherwise) so MambaSeg's substring filter accepts them.
    """
    plan = []
    scenarios = sorted(SCENARIOS)
    for split_index, split in enumerate(SPLITS):
        names = DSEC_TRAIN_NAMES if split == "train" else DSEC_TEST_NAMES
        for k in range(counts.get(split, 0)):
            scene_seed = seed * 10_000 + split_index * 1_000 + k
            scene = replace(base.scene, seed=scene_seed, lighting=scenarios[k % len(scenarios)])
            plan.append((split, f"{names[k % len(names)]}_synthetic_{split}_{k:03d}", replace(base, scene=scene)))
    return plan


def write_dsec_dataset(
    root: str | Path, base: SequenceConfig, counts: dict[str, int], seed: int = 0, **writer_kwargs
) -> list[Path]:
    """Write every sequence of `dataset_plan` under `root/<split>/`; returns the sequence folders."""
    for split in ("train", "test"):  # MambaSeg's provider needs both folders, even if empty
        (Path(root) / split).mkdir(parents=True, exist_ok=True)
    return [
        write_dsec_sequence(Path(root) / split, name, config, **writer_kwargs)
        for split, name, config in dataset_plan(base, counts, seed)
    ]
