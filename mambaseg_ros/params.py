"""The node's ROS parameters: one table of declarations (type, default, range, description) and their validation.

`declare_parameters(node)` declares them all with descriptors (ranges enforced by rclpy);
`read_settings(node)` reads and validates them into `NodeSettings` (the Segmenter part is a
`SegmenterConfig`). Every error is a `ParameterError` whose message starts with the parameter's name.
config/mambaseg_node.yaml mirrors this table with a comment per key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.parameter import Parameter

from mambaseg_core.config import ConfigError, load_config
from mambaseg_core.pipeline import SegmenterConfig
from mambaseg_core.pipeline.event_clock import EVENT_CLOCK_SETTINGS

RELIABILITY_CHOICES = ("best_effort", "reliable", "system_default")
EVENT_MSG_TYPES = ("event_packet", "dvs", "prophesee")
EVENT_CLOCKS = EVENT_CLOCK_SETTINGS
_CONFIG_KEY_TO_PARAMETER = {"sensor_size": "sensor_width"}  # SegmenterConfig keys that are not parameter names
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


class ParameterError(ValueError):
    """A parameter value is invalid; `name` is the parameter."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"parameter '{name}': {message}")


@dataclass(frozen=True)
class _Spec:
    name: str
    default: Any  # a value, or a Parameter.Type for arrays that default to "unset"
    description: str
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None


_ARRAY_TYPES = {
    Parameter.Type.STRING_ARRAY: ParameterType.PARAMETER_STRING_ARRAY,
    Parameter.Type.INTEGER_ARRAY: ParameterType.PARAMETER_INTEGER_ARRAY,
}

PARAMETERS: tuple[_Spec, ...] = (
    # model
    _Spec("checkpoint", "", "Model weights (.pt): our checkpoints or the official MambaSeg ones; empty = none"),
    _Spec("model_config", "", "Model config YAML for random weights (used only without a checkpoint)"),
    _Spec("allow_random_weights", False, "Start without a checkpoint using random weights (tests, plumbing demos)"),
    _Spec("random_seed", 0, "Seed of the random weights", int_range=(0, 2**31 - 1)),
    _Spec("device", "cuda:0", "Inference device 'cuda:N' or 'cpu'; falls back to CPU with a warning if no GPU"),
    _Spec("scan_backend", "", "Selective-scan backend override (auto|reference|torch|cuda|mamba_ssm); empty = model's"),
    _Spec(
        "precision",
        "auto",
        "Matrix products in fp32 (the accuracy reference), bf16 or fp16; auto = fp16 on a GPU, fp32 on the CPU",
        choices=("auto", "fp32", "bf16", "fp16"),
    ),
    _Spec("cuda_graph", True, "Replay one captured CUDA graph per frame (CUDA devices; ignored on CPU)"),
    _Spec("compile", False, "torch.compile the forward (fuses small kernels; 1-2 min of compilation at start-up)"),
    _Spec("parallel_branches", True, "Image and event branches on parallel CUDA streams (ignored on CPU)"),
    _Spec(
        "image_ahead",
        True,
        "Run the image's stem and stage-0 encoder while waiting for a frame's last events "
        "(GPU; false: two CUDA graphs and ~0.8 GiB less on DSEC)",
    ),
    # event window
    _Spec(
        "window_mode",
        "count",
        "Events per frame: 'count' (last N, DSEC) or 'duration' (last Δt, DDD17)",
        choices=("count", "duration"),
    ),
    _Spec("window_events", 100_000, "N events before the frame (window_mode=count)", int_range=(1, 50_000_000)),
    _Spec("window_duration_us", 50_000, "Δt µs before the frame (window_mode=duration)", int_range=(1, 10_000_000)),
    _Spec(
        "sensor_width",
        0,
        "Event sensor width; 0 = the image width (events must be pixel-aligned with images)",
        int_range=(0, 65535),
    ),
    _Spec("sensor_height", 0, "Event sensor height; 0 = the image height", int_range=(0, 65535)),
    _Spec("buffer_duration_us", 2_000_000, "Event history kept, µs", int_range=(1, 60_000_000)),
    _Spec(
        "buffer_max_events", 4_000_000, "Cap on buffered events (bounds memory in floods)", int_range=(1, 200_000_000)
    ),
    _Spec(
        "missing_events",
        "skip",
        "No events in the window: 'skip' the frame or 'zeros' (image-only)",
        choices=("skip", "zeros"),
    ),
    _Spec(
        "max_event_latency_ms",
        50.0,
        "Wait at most this long for events up to the frame stamp",
        float_range=(0.0, 10_000.0),
    ),
    _Spec(
        "event_msg_type",
        "event_packet",
        "Events message: event_packet (event_camera_msgs) | dvs | prophesee",
        choices=EVENT_MSG_TYPES,
    ),
    _Spec(
        "event_clock",
        "auto",
        "Event time -> image clock: header_offset (estimate stamp - sensor time), as_is, auto (evt3: "
        "header_offset, else as_is)",
        choices=EVENT_CLOCKS,
    ),
    _Spec(
        "time_jump_tolerance_ms",
        500.0,
        "Clock steps back beyond this reset the event buffer (bag loops)",
        float_range=(1.0, 60_000.0),
    ),
    # network input / output
    _Spec(
        "image_fit",
        "resize",
        "Image -> network size: 'resize' or 'crop_bottom' (DSEC/DDD17 drop the hood rows)",
        choices=("resize", "crop_bottom"),
    ),
    _Spec(
        "output_resolution",
        "input",
        "Masks at the 'input' image size (nearest) or the 'network' size",
        choices=("input", "network"),
    ),
    _Spec("overlay_alpha", 0.5, "Class colour weight in the overlay", float_range=(0.0, 1.0)),
    _Spec(
        "class_set",
        "auto",
        "dsec11 | dsec19 | ddd17 | auto (by the model's class count)",
        choices=("auto", "dsec11", "dsec19", "ddd17"),
    ),
    _Spec("class_names", Parameter.Type.STRING_ARRAY, "Class names overriding the class set (one per class)"),
    _Spec("palette", Parameter.Type.INTEGER_ARRAY, "Colours 0xRRGGBB overriding the class set (one per class)"),
    # ROS I/O
    _Spec("image_reliability", "best_effort", "Image subscription QoS reliability", choices=RELIABILITY_CHOICES),
    _Spec("events_reliability", "best_effort", "Events subscription QoS reliability", choices=RELIABILITY_CHOICES),
    _Spec("image_queue_size", 2, "Image subscription depth", int_range=(1, 100)),
    _Spec(
        "events_queue_size",
        1000,
        "Events subscription depth (metavision_driver sends ~1 packet/ms)",
        int_range=(1, 100_000),
    ),
    _Spec("publish_raw_mask", True, "Publish ~/raw_mask (mono8 class ids, 255 = unlabeled)"),
    _Spec("publish_colored_mask", True, "Publish ~/colored_mask (rgb8)"),
    _Spec("publish_overlay", True, "Publish ~/overlay (rgb8)"),
    _Spec("diagnostics_period_s", 1.0, "Period of /diagnostics", float_range=(0.05, 60.0)),
)


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameters; `segmenter` holds everything the Segmenter needs."""

    checkpoint: str
    model_config: str
    allow_random_weights: bool
    random_seed: int
    device: str
    scan_backend: str
    max_event_latency_ms: float
    event_msg_type: str
    event_clock: str
    time_jump_tolerance_ms: float
    image_reliability: str
    events_reliability: str
    image_queue_size: int
    events_queue_size: int
    publish_raw_mask: bool
    publish_colored_mask: bool
    publish_overlay: bool
    diagnostics_period_s: float
    segmenter: SegmenterConfig


def _descriptor(spec: _Spec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=True)
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.int_range is not None:
        descriptor.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=0)]
    if spec.float_range is not None:
        low, high = spec.float_range
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    if isinstance(spec.default, Parameter.Type):
        descriptor.type = _ARRAY_TYPES[spec.default]
    return descriptor


def declare_parameters(node: Any) -> None:
    """Declare every parameter on `node`; values from --ros-args/params files are checked against the ranges."""
    for spec in PARAMETERS:
        try:
            node.declare_parameter(spec.name, spec.default, _descriptor(spec))
        except ParameterException as exc:
            raise ParameterError(spec.name, str(exc)) from None


def _palette(values: list[int] | None) -> list[tuple[int, int, int]] | None:
    if values is None:
        return None
    for i, value in enumerate(values):
        if not 0 <= value <= 0xFFFFFF:
            raise ParameterError("palette", f"entry {i} must be a 0xRRGGBB colour, got {value}")
    return [((v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF) for v in values]


def _value(node: Any, name: str) -> Any:
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:  # an array parameter left unset (or `[]` in a params file)
        return None


def read_settings(node: Any) -> NodeSettings:
    """Read and validate all parameters (declared by `declare_parameters`)."""
    values = {spec.name: _value(node, spec.name) for spec in PARAMETERS}
    for spec in PARAMETERS:
        if spec.choices and values[spec.name] not in spec.choices:
            raise ParameterError(spec.name, f"must be one of {list(spec.choices)}, got {values[spec.name]!r}")
    if not _DEVICE.match(values["device"]):
        raise ParameterError("device", f"must be 'cpu' or 'cuda:N', got {values['device']!r}")
    if not values["checkpoint"] and not values["allow_random_weights"]:
        raise ParameterError(
            "checkpoint", "is empty: give model weights, or set allow_random_weights:=true for a plumbing test"
        )
    if not values["checkpoint"] and not values["model_config"]:
        raise ParameterError("model_config", "is needed for random weights (no checkpoint given)")
    sensor = (values["sensor_height"], values["sensor_width"])
    if (0 in sensor) and sensor != (0, 0):
        raise ParameterError("sensor_width", "sensor_width and sensor_height must both be 0 (image size) or both set")
    try:
        segmenter = load_config(
            SegmenterConfig,
            {
                "window_mode": values["window_mode"],
                "window_events": values["window_events"],
                "window_duration_us": values["window_duration_us"],
                "sensor_size": None if sensor == (0, 0) else sensor,
                "buffer_duration_us": values["buffer_duration_us"],
                "buffer_max_events": values["buffer_max_events"],
                "missing_events": values["missing_events"],
                "image_fit": values["image_fit"],
                "output_resolution": values["output_resolution"],
                "overlay_alpha": values["overlay_alpha"],
                "class_set": values["class_set"],
                "class_names": list(values["class_names"]) if values["class_names"] is not None else None,
                "palette": _palette(list(values["palette"]) if values["palette"] is not None else None),
                "precision": values["precision"],
                "cuda_graph": values["cuda_graph"],
                "compile": values["compile"],
                "parallel_branches": values["parallel_branches"],
                "image_ahead": values["image_ahead"],
            },
        )
    except ConfigError as exc:
        key = exc.key.split(".")[0].split("[")[0]
        raise ParameterError(_CONFIG_KEY_TO_PARAMETER.get(key, key), str(exc).split(": ", 1)[-1]) from None
    own = {name: values[name] for name in NodeSettings.__dataclass_fields__ if name != "segmenter"}
    return NodeSettings(segmenter=segmenter, **own)
