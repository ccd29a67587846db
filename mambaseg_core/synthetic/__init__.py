"""Synthetic driving world: procedural street scenes, an event-camera simulator and a frame-camera model.

Typical use::

    from mambaseg_core.synthetic import SceneConfig, SequenceConfig, generate_sequence, write_dsec_sequence
    config = SequenceConfig(scene=SceneConfig(height=120, width=160, seed=3, lighting="tunnel"))
    for frame in generate_sequence(config):  # 20 Hz: frame.t_us, .rgb, .label, .events, .condition
        ...
"""

from mambaseg_core.data.events_h5 import DsecEventsWriter, write_rectify_map

from .camera import CONDITION_TAGS, FrameCamera, FrameCameraConfig, frame_condition
from .event_simulator import EventSimulator, EventSimulatorConfig
from .labels import DSEC11_TO_DDD17, to_ddd17
from .lighting import CONDITIONS, SCENARIOS, Lighting, Scenario
from .scene import Scene, SceneConfig, View, luminance
from .sequence import (
    DSEC11_TO_DSEC19,
    SequenceConfig,
    SequenceFrame,
    dataset_plan,
    generate_sequence,
    write_dsec_dataset,
    write_dsec_sequence,
)

__all__ = [
    "CONDITIONS",
    "CONDITION_TAGS",
    "DSEC11_TO_DDD17",
    "DSEC11_TO_DSEC19",
    "SCENARIOS",
    "DsecEventsWriter",
    "EventSimulator",
    "EventSimulatorConfig",
    "FrameCamera",
    "FrameCameraConfig",
    "Lighting",
    "Scenario",
    "Scene",
    "SceneConfig",
    "SequenceConfig",
    "SequenceFrame",
    "View",
    "dataset_plan",
    "frame_condition",
    "generate_sequence",
    "luminance",
    "to_ddd17",
    "write_dsec_dataset",
    "write_dsec_sequence",
    "write_rectify_map",
]
