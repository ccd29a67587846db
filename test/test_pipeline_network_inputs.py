"""Packed frames (pipeline/network_inputs.py): one byte buffer per frame, turned into the same network inputs as the
Segmenter's CPU path; the event capacity policy; the engine running the conversion with the forward."""

from __future__ import annotations

import copy
import itertools
import threading

import numpy as np
import pytest
import torch
from seg_harness import TINY_MODEL

from mambaseg_core.config import load_config
from mambaseg_core.events import EventBatch, EventRingBuffer, RingWindow
from mambaseg_core.models import MambaSeg, load_model_config
from mambaseg_core.pipeline import InferenceEngine, Segmenter, SegmenterConfig
from mambaseg_core.pipeline.network_inputs import MIN_CAPACITY, FramePacker, PackedLayout

NET_H, NET_W = TINY_MODEL["image_size"]
BINS = TINY_MODEL["event_bins"]


def make_model(image_channels: int = 3) -> MambaSeg:
    torch.manual_seed(0)
    return MambaSeg(load_model_config({**TINY_MODEL, "image_channels": image_channels})).eval()


def make_events(n: int, height: int, width: int, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    x, y, t = rng.integers(0, width, n), rng.integers(0, height, n), np.sort(rng.integers(0, 50_000, n))
    return EventBatch.from_arrays(x, y, t, rng.integers(0, 2, n))


def packed_inputs(seg: Segmenter, packer: FramePacker, image: np.ndarray, stamp_us: int, staged: bool = False):
    """The packed path, step by step as the Segmenter takes it on a CUDA device, here on the CPU."""
    fixed = seg.config.window_events if seg.config.window_mode == "count" else None
    used = seg._send_window(seg.buffer, stamp_us, packer.events_sink(image, fixed))
    packer.pack_image(image, staged=staged)
    make_inputs = packer.frame(seg.image_channels, seg.event_bins, seg.network_size, seg.config.image_fit)
    return make_inputs, packer.packed(), used


CASES = {
    # name: (model image channels, image (H, W[, 3]) and dtype, Segmenter settings)
    "rgb count crop": (3, (NET_H + 8, NET_W, 3), np.uint8, {"image_fit": "crop_bottom", "window_events": 900}),
    "rgb to gray duration resize": (
        1, (2 * NET_H, 2 * NET_W, 3), np.uint8, {"window_mode": "duration", "window_duration_us": 20_000},
    ),
    "gray16 to rgb duration": (3, (NET_H, NET_W), np.uint16, {"window_mode": "duration", "window_duration_us": 9_000}),
}  # fmt: skip


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "in place"])
@pytest.mark.parametrize("case", CASES)
def test_packed_frame_gives_the_network_inputs_of_the_cpu_path(case, in_place):
    """Events copied into the packed buffer, or read in the ring buffer's storage (as on a CUDA device)."""
    channels, shape, dtype, settings = CASES[case]
    seg = Segmenter(make_model(channels), load_config(SegmenterConfig, settings), "cpu")
    seg.add_events(make_events(3000, shape[0], shape[1]))
    image = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    expected = seg.prepare(image, 40_000)
    packer = FramePacker("cpu", in_place=in_place)
    make_inputs, packed, used = packed_inputs(seg, packer, image, 40_000)
    assert make_inputs.layout.in_place == in_place and (make_inputs.ring is not None) == in_place
    assert make_inputs.reads_inputs_in_place == in_place  # in place the engine hands the host buffer over as it is
    image_tensor, voxels = make_inputs(packed)
    assert used == expected.events_used > 0
    assert image_tensor.shape == expected.image.shape and voxels.shape == expected.events.shape
    torch.testing.assert_close(image_tensor, expected.image, rtol=0, atol=0)
    if case == "rgb count crop":  # an RGB frame's pixels are channels-last: no copy to NCHW before the stem
        assert image_tensor.is_contiguous(memory_format=torch.channels_last)
    assert image_tensor.is_contiguous() or image_tensor.is_contiguous(memory_format=torch.channels_last)
    voxel_diff = float((voxels - expected.events).abs().max())
    print(f"{case}: max |packed voxel grid - numba| = {voxel_diff:.2e}, |grid| max {float(voxels.abs().max()):.2f}")
    assert voxel_diff < 1e-5  # float32 sums in another order
    assert float(voxels.abs().sum()) > 0


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "in place"])
def test_staging_only_the_rows_a_crop_keeps_gives_the_inputs_of_the_whole_frame(in_place):
    """What the Segmenter stages on a GPU with crop_bottom: the top rows only; the events in the dropped rows, which
    the CPU path bins and then crops away, fall outside the smaller grid."""
    seg = Segmenter(
        make_model(), load_config(SegmenterConfig, {"image_fit": "crop_bottom", "window_events": 900}), "cpu"
    )
    events = make_events(3000, NET_H + 8, NET_W)
    assert (events.y >= NET_H).sum() > 100  # events in the rows the crop drops
    seg.add_events(events)
    image = np.random.default_rng(1).integers(0, 256, (NET_H + 8, NET_W, 3), dtype=np.uint8)
    expected = seg.prepare(image, 40_000)
    make_inputs, packed, used = packed_inputs(seg, FramePacker("cpu", in_place=in_place), image[:NET_H], 40_000)
    image_tensor, voxels = make_inputs(packed)
    assert make_inputs.layout.image_shape == (NET_H, NET_W, 3) and used == expected.events_used == 900
    torch.testing.assert_close(image_tensor, expected.image, rtol=0, atol=0)
    assert float((voxels - expected.events).abs().max()) < 1e-5 and float(voxels.abs().sum()) > 0


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "in place"])
def test_pixels_staged_ahead_of_the_window_give_the_frame_packed_after_it(in_place):
    """stage_image copies a frame's pixels before its window is known (the node does it while the window's last
    events arrive); pack_image(staged=True) then skips the copy, and the frame is the one packed in order. Nothing
    is staged before the first frame of a shape or while a frame read in place is held; a new layout in between
    drops what was staged (pack_image copies what it is given)."""
    settings = {"window_mode": "duration", "window_duration_us": 20_000}
    seg = Segmenter(make_model(), load_config(SegmenterConfig, settings), "cpu")
    seg.add_events(make_events(3000, NET_H, NET_W))
    first, second, third = (make_image_like(seed) for seed in (5, 6, 7))
    packer = FramePacker("cpu", in_place=in_place)
    assert not packer.stage_image(first)  # no layout yet
    packed_inputs(seg, packer, first, 20_000)
    assert packer.stage_image(second) == (not in_place)  # in place, the first frame is held until released
    packer.release_window()
    assert packer.stage_image(second) and not packer.stage_image(second[:-1])  # only the layout's shape
    make_inputs, packed, _ = packed_inputs(seg, packer, second, 40_000, staged=True)
    torch.testing.assert_close(make_inputs(packed)[0], seg.prepare(second, 40_000).image, rtol=0, atol=0)
    packer.release_window()
    burst = make_events(MIN_CAPACITY + 10, NET_H, NET_W, seed=1)
    seg.add_events(EventBatch(burst.x, burst.y, burst.t // 10 + 50_000, burst.p))  # a window over the capacity
    assert packer.stage_image(third)
    make_inputs, packed, used = packed_inputs(seg, packer, second, 60_000, staged=True)
    assert used > MIN_CAPACITY and make_inputs.layout.capacity == 2 * MIN_CAPACITY  # a new layout
    torch.testing.assert_close(make_inputs(packed)[0], seg.prepare(second, 60_000).image, rtol=0, atol=0)


def make_image_like(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (NET_H, NET_W, 3), dtype=np.uint8)


def test_no_events_give_an_all_zero_grid():
    seg = Segmenter(make_model(), load_config(SegmenterConfig, {"missing_events": "zeros"}), "cpu")
    image = np.zeros((NET_H, NET_W, 3), np.uint8)
    make_inputs, packed, used = packed_inputs(seg, FramePacker("cpu"), image, 10)
    _, voxels = make_inputs(packed)
    assert used == 0 and voxels.shape == (1, BINS, NET_H, NET_W) and not voxels.any()


def test_event_capacity_is_fixed_or_grows_in_powers_of_two():
    image = np.zeros((NET_H, NET_W, 3), np.uint8)
    packer = FramePacker("cpu")

    def capacity_after(window: int, fixed: int | None) -> int:
        packer.events_sink(image, fixed)(RingWindow(make_events(window, NET_H, NET_W), 0, window))
        return packer.capacity

    grown = [capacity_after(count, None) for count in (0, 10, 20_000, 100, 70_000)]
    assert grown == [MIN_CAPACITY, MIN_CAPACITY, 32_768, 32_768, 131_072]  # never shrinks: one layout per stream
    assert capacity_after(123, 500) == 500 and packer.packed().numel() == PackedLayout((NET_H, NET_W, 3), 8, 500).nbytes
    with pytest.raises(ValueError, match="501 events exceed the fixed capacity of 500"):
        capacity_after(501, 500)


def test_layout_sections_are_aligned_and_disjoint():
    layout = PackedLayout((5, 7, 3), 16, 1001)
    spans = sorted(
        (offset, offset + int(np.prod(shape)) * dtype.itemsize) for offset, dtype, shape in layout.sections.values()
    )
    assert all(start % 128 == 0 for start, _ in spans)
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
    assert spans[-1][1] == layout.nbytes
    assert layout.tail == layout.sections["window"][0] > layout.sections["p"][0]  # window and image come last
    buffer = torch.zeros(layout.nbytes, dtype=torch.uint8)
    host = layout.tail_views(buffer[layout.tail :].numpy())
    assert set(host) == {"window", "image"}
    host["window"][:] = (17, 1001)
    host["image"][:] = 65_535
    device = layout.device_views(buffer)
    assert device["x"].dtype == torch.int16 and device["window"].dtype == torch.int64
    assert device["window"].tolist() == [17, 1001]
    assert device["image"].dtype == torch.float32 and device["image"].shape == (5, 7, 3)
    assert float(device["image"].min()) == 65_535.0
    in_place = PackedLayout((5, 7, 3), 16, 1001, in_place=True)  # the events stay in the ring buffer
    assert set(in_place.sections) == {"window", "image"} and in_place.tail == 0
    assert in_place.nbytes == layout.nbytes - layout.tail


def test_engine_runs_the_packed_conversion_with_the_forward():
    seg = Segmenter(make_model(), load_config(SegmenterConfig, {"window_events": 700}), "cpu")
    seg.add_events(make_events(2000, NET_H, NET_W))
    image = np.random.default_rng(2).integers(0, 256, (NET_H, NET_W, 3), dtype=np.uint8)
    make_inputs, packed, _ = packed_inputs(seg, FramePacker("cpu"), image, 45_000)
    engine = InferenceEngine(copy.deepcopy(seg.model))
    ids = engine.class_ids_from(make_inputs, packed=packed)
    assert torch.equal(ids, engine.class_ids(*make_inputs(packed)))
    assert make_inputs == copy.deepcopy(make_inputs) and hash(make_inputs) == hash(copy.deepcopy(make_inputs))


def test_buffers_first_staged_under_inference_mode_take_later_frames_outside_it():
    seg = Segmenter(make_model(), load_config(SegmenterConfig, {"window_events": 500}), "cpu")
    seg.add_events(make_events(1000, NET_H, NET_W))
    image = np.zeros((NET_H, NET_W, 3), np.uint8)
    packer = FramePacker("cpu", in_place=True)
    with torch.inference_mode():
        packed_inputs(seg, packer, image, 45_000)
    packer.release_window()
    _, packed, used = packed_inputs(seg, packer, image + 1, 45_000)  # in-place writes into the reused buffers
    assert used == 500 and not packed.is_inference()


def test_pack_image_needs_the_events_of_a_frame_of_its_shape_and_dtype():
    packer = FramePacker("cpu")
    with pytest.raises(RuntimeError, match="no events_sink ran"):
        packer.pack_image(np.zeros((4, 4), np.uint8))
    packer.events_sink(np.zeros((4, 4), np.uint8), 10)(RingWindow(EventBatch.empty(), 0, 0))
    with pytest.raises(RuntimeError, match="no events_sink ran"):
        packer.pack_image(np.zeros((4, 5), np.uint8))
    with pytest.raises(RuntimeError, match="no events_sink ran"):
        packer.pack_image(np.zeros((4, 4), np.uint16))


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "in place"])
def test_a_window_that_wraps_the_ring_is_staged_from_both_slices(in_place):
    """A small ring that has wrapped: the window comes in two storage slices, staged back to back, or read in place
    across the wrap."""
    settings = {"window_events": 900, "buffer_max_events": 1000}
    seg = Segmenter(make_model(), load_config(SegmenterConfig, settings), "cpu")
    stream = make_events(2500, NET_H, NET_W, seed=3)
    for start in range(0, 2500, 300):
        seg.add_events(stream[start : start + 300])
    slices: list[int] = []
    seg._send_window(seg.buffer, 60_000, lambda window: slices.extend(len(piece) for piece in window.slices))
    assert len(slices) == 2 and sum(slices) == 900
    image = np.random.default_rng(4).integers(0, 256, (NET_H, NET_W, 3), dtype=np.uint8)
    expected = seg.prepare(image, 60_000)
    make_inputs, packed, used = packed_inputs(seg, FramePacker("cpu", in_place=in_place), image, 60_000)
    _, voxels = make_inputs(packed)
    assert used == 900 and float((voxels - expected.events).abs().max()) < 1e-5 and voxels.abs().sum() > 0


def test_a_window_read_in_place_holds_the_ring_until_released():
    """In place, an append that may write the window's slots (here from another thread, as the node's event
    callback) waits until the
    frame's GPU work is over and the window is released; the stored events stay as the frame saw them."""
    ring = EventRingBuffer(10**9, 100)
    ring.append(make_events(60, NET_H, NET_W))
    packer = FramePacker("cpu", in_place=True)
    image = np.zeros((NET_H, NET_W, 3), np.uint8)
    assert ring.send_last_n(40, 10**9, packer.events_sink(image, 40)) == 40 and packer.window_held
    seen = ring.last_n(40, 10**9).t.copy()
    later = make_events(60, NET_H, NET_W, seed=1)
    later = EventBatch(later.x, later.y, later.t + 60_000, later.p)  # overwrites the window's slots
    appended = threading.Event()
    writer = threading.Thread(target=lambda: (ring.append(later), appended.set()))
    writer.start()
    assert not appended.wait(0.3)  # the append waits for the window
    np.testing.assert_array_equal(ring.last_n(40, 10**9).t, seen)
    packer.release_window()
    assert appended.wait(10) and not packer.window_held
    writer.join()
    assert int(ring.latest_time) == int(later.t[-1])
    ring.send_last_n(40, 10**9, packer.events_sink(image, 40))
    with pytest.raises(RuntimeError, match="not released"):  # a second window before the first is released
        ring.send_last_n(40, 10**9, packer.events_sink(image, 40))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: asynchronous staging from pinned memory")
def test_cuda_packer_stages_frame_after_frame_as_the_cpu_packer_does():
    """Frames staged back to back without waiting for the GPU (a ring that wraps, the packer's CUDA events reused
    every frame): each frame's staged arrays, kept by a device copy queued after its staging, equal the CPU
    packer's."""
    rings = {device: EventRingBuffer(10**9, 5000, pinned=device == "cuda") for device in ("cpu", "cuda")}
    packers = {device: FramePacker(device, in_place=False) for device in ("cpu", "cuda")}
    rng = np.random.default_rng(7)
    staged: dict[str, list[dict[str, torch.Tensor]]] = {"cpu": [], "cuda": []}
    for frame in range(6):
        events = make_events(1800, 48, 64, seed=frame)
        events = EventBatch(events.x, events.y, events.t + frame * 50_000, events.p)
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        for device in ("cpu", "cuda"):
            rings[device].append(events)
            count = rings[device].send_last_n(1500, (frame + 1) * 50_000, packers[device].events_sink(image, 1500))
            layout = packers[device].pack_image(image)
            views = layout.device_views(packers[device].packed())
            staged[device].append(
                {name: (view[:count] if name in ("t", "x", "y", "p") else view).clone() for name, view in views.items()}
            )
    torch.cuda.synchronize()
    for cpu_frame, cuda_frame in zip(staged["cpu"], staged["cuda"], strict=True):
        assert cpu_frame["window"].tolist() == [0, 1500]
        for name, value in cpu_frame.items():
            assert torch.equal(cuda_frame[name].cpu(), value), name
