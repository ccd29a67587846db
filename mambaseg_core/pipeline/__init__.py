"""Frames + events -> class masks: the Segmenter (one code path for the node, bag tools and benchmarks)."""

from mambaseg_core.pipeline.colorize import UNLABELED_COLOR, colorize, overlay, palette_lut, to_rgb8
from mambaseg_core.pipeline.engine import ENGINE_MODES, PRECISIONS, InferenceEngine, Precision, cast_matmul_weights
from mambaseg_core.pipeline.event_clock import EventClock, EventClockMode
from mambaseg_core.pipeline.segmenter import (
    STAGES,
    ClassInfo,
    NetworkInputs,
    SegmentationResult,
    Segmenter,
    SegmenterConfig,
    SegmenterStats,
    build_model,
    resolve_classes,
)

__all__ = [
    "ENGINE_MODES",
    "PRECISIONS",
    "STAGES",
    "UNLABELED_COLOR",
    "ClassInfo",
    "EventClock",
    "EventClockMode",
    "InferenceEngine",
    "NetworkInputs",
    "Precision",
    "SegmentationResult",
    "Segmenter",
    "SegmenterConfig",
    "SegmenterStats",
    "build_model",
    "cast_matmul_weights",
    "colorize",
    "overlay",
    "palette_lut",
    "resolve_classes",
    "to_rgb8",
]
