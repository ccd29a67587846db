"""Event camera data: codecs (EVT3, mono, EventArray), dataset readers (DSEC, DDD17), a time-indexed ring
buffer and the voxel grid. Every decoder returns an `EventBatch` (x, y uint16; t int64 µs; p uint8)."""

from mambaseg_core.events.batch import EventBatch
from mambaseg_core.events.ddd17 import Ddd17Events, Ddd17Slice
from mambaseg_core.events.dsec import DsecEventReader, EventRangeError, load_rectify_map, rectify
from mambaseg_core.events.event_array import decode_event_array
from mambaseg_core.events.evt3 import Evt3Decoder, Evt3Stats, encode_evt3
from mambaseg_core.events.mono import decode_mono, encode_mono
from mambaseg_core.events.packets import SUPPORTED_ENCODINGS, UnsupportedEncodingError, decode_packet
from mambaseg_core.events.ring_buffer import EventRingBuffer, RingBufferStats, RingWindow
from mambaseg_core.events.voxel import crop_bottom, reads_host_memory_in_place, voxel_grid, voxel_grid_torch

__all__ = [
    "SUPPORTED_ENCODINGS",
    "Ddd17Events",
    "Ddd17Slice",
    "DsecEventReader",
    "EventBatch",
    "EventRangeError",
    "EventRingBuffer",
    "Evt3Decoder",
    "Evt3Stats",
    "RingBufferStats",
    "RingWindow",
    "UnsupportedEncodingError",
    "crop_bottom",
    "decode_event_array",
    "decode_mono",
    "decode_packet",
    "encode_evt3",
    "encode_mono",
    "load_rectify_map",
    "reads_host_memory_in_place",
    "rectify",
    "voxel_grid",
    "voxel_grid_torch",
]
