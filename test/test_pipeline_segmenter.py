"""Segmenter: shapes, ids == argmax of the model on independently built inputs, windows, policies, geometry."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from seg_harness import TINY_MODEL, write_tiny_model_config

from mambaseg_core.config import ConfigError, load_config
from mambaseg_core.data.classes import IGNORE_INDEX
from mambaseg_core.events import EventBatch, voxel_grid
from mambaseg_core.events import voxel as voxel_module
from mambaseg_core.models import MambaSeg, load_model_config
from mambaseg_core.pipeline import EventClock, Segmenter, SegmenterConfig, build_model
from mambaseg_core.pipeline.colorize import colorize, palette_lut
from mambaseg_core.pipeline.network_inputs import FramePacker
from mambaseg_core.pipeline.ros_messages import mask_image

NET_H, NET_W = TINY_MODEL["image_size"]
BINS = TINY_MODEL["event_bins"]
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def tiny_config(image_channels: int = 3) -> dict:
    return {**TINY_MODEL, "image_channels": image_channels}


@pytest.fixture(scope="module")
def model() -> MambaSeg:
    torch.manual_seed(0)
    return MambaSeg(load_model_config(tiny_config())).eval()


def make_events(n: int, t0: int, t1: int, height: int = NET_H, width: int = NET_W, seed: int = 0) -> EventBatch:
    """n events with sorted times in [t0, t1), uniformly over the frame."""
    rng = np.random.default_rng(seed)
    return EventBatch.from_arrays(
        rng.integers(0, width, n), rng.integers(0, height, n), np.sort(rng.integers(t0, t1, n)), rng.integers(0, 2, n)
    )


def make_image(height: int = NET_H, width: int = NET_W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def segmenter(model, **config) -> Segmenter:
    return Segmenter(model, load_config(SegmenterConfig, config), "cpu")


def direct_ids(model: MambaSeg, image: np.ndarray, events: EventBatch) -> np.ndarray:
    """The reference: the model called on a voxel grid and image built here, not by the Segmenter."""
    grid = voxel_grid(events.x, events.y, events.t, events.p, bins=BINS, height=NET_H, width=NET_W)
    image_tensor = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    with torch.inference_mode():
        logits = model(image=image_tensor, events=torch.from_numpy(grid)[None])
    return logits[0].argmax(0).numpy().astype(np.uint8)


def test_segment_outputs_and_ids_match_the_model_called_directly(model):
    seg = segmenter(model, window_mode="count", window_events=700)
    events = make_events(3000, 0, 100_000)
    seg.add_events(events)
    stamp = 60_000
    image = make_image()
    result = seg.segment(image, stamp)
    assert result is not None
    assert result.class_ids.shape == (NET_H, NET_W) and result.class_ids.dtype == np.uint8
    assert result.colored.shape == result.overlay.shape == (NET_H, NET_W, 3)
    assert result.colored.dtype == result.overlay.dtype == np.uint8
    assert set(result.timings_ms) == {"window", "voxel", "preprocess", "forward", "postprocess", "total"}
    expected_window = events[events.t < stamp][-700:]
    assert result.events_used == 700
    expected = direct_ids(model, image, expected_window)
    mismatches = int((result.class_ids != expected).sum())
    print(f"ids differing from the direct model call: {mismatches} of {expected.size}")
    assert mismatches == 0
    assert int(result.class_ids.max()) < 6


@pytest.mark.parametrize("image_channels", [3, 1], ids=["rgb", "gray"])
def test_colored_mask_and_overlay_are_rendered_on_first_access_only(image_channels):
    """The ids come back first: the colours, the overlay and the image under it (for a gray frame, a 3-channel copy)
    are made only when asked for."""
    torch.manual_seed(0)
    seg = segmenter(MambaSeg(load_model_config(tiny_config(image_channels))).eval(), window_events=700)
    seg.add_events(make_events(3000, 0, 100_000))
    image = make_image()[..., 1] if image_channels == 1 else make_image()
    result = seg.segment(image, 60_000)
    assert result is not None
    assert not {"colored", "overlay", "overlay_base"} & set(vars(result))
    assert mask_image(result, "raw_mask") is result.class_ids and "colored" not in vars(result)
    overlaid = mask_image(result, "overlay")
    assert "colored" in vars(result) and mask_image(result, "overlay") is overlaid  # rendered once, then cached
    np.testing.assert_array_equal(result.overlay_base, np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image)
    np.testing.assert_array_equal(result.colored, colorize(result.class_ids, palette_lut(seg.classes.palette)))
    with pytest.raises(KeyError, match="unknown output"):
        mask_image(result, "depth")


@pytest.mark.parametrize("mode", ["count", "duration"])
def test_window_is_strictly_before_the_stamp(model, mode):
    seg = segmenter(model, window_mode=mode, window_events=50, window_duration_us=10_000)
    # One event per 100 µs, including exactly at the window start and at the stamp.
    times = np.arange(0, 50_000, 100)
    batch = EventBatch.from_arrays(times % NET_W, times % NET_H, times, times % 2)
    seg.add_events(batch)
    stamp = 30_000
    window = seg.window(stamp)
    if mode == "count":
        expected = times[times < stamp][-50:]
    else:
        expected = times[(times >= stamp - 10_000) & (times < stamp)]
    print(f"{mode}: {len(window)} events [{window.t.min()}, {window.t.max()}]")
    np.testing.assert_array_equal(window.t, expected)


def test_count_window_with_fewer_events_uses_what_there_is(model):
    seg = segmenter(model, window_mode="count", window_events=1000)
    seg.add_events(make_events(120, 0, 10_000))
    assert len(seg.window(20_000)) == 120


def test_missing_events_skip_returns_none(model):
    seg = segmenter(model, missing_events="skip")
    seg.add_events(make_events(100, 50_000, 60_000))
    assert seg.segment(make_image(), 40_000) is None  # all events are after the frame
    assert seg.stats.skipped_no_events == 1 and seg.stats.frames == 0


def test_missing_events_zeros_runs_image_only(model):
    seg = segmenter(model, missing_events="zeros")
    image = make_image(seed=3)
    result = seg.segment(image, 40_000)
    assert result is not None and result.events_used == 0
    assert seg.stats.image_only == 1
    np.testing.assert_array_equal(result.class_ids, direct_ids(model, image, EventBatch.empty()))


def test_crop_bottom_pads_unlabeled_rows_at_input_resolution(model):
    events = make_events(2000, 0, 50_000, height=NET_H + 8)
    image = make_image(NET_H + 8)
    results = {}
    for resolution in ("input", "network"):
        seg = segmenter(model, image_fit="crop_bottom", output_resolution=resolution)
        seg.add_events(events)
        results[resolution] = seg.segment(image, 50_000)
    full, net = results["input"].class_ids, results["network"].class_ids
    assert full.shape == (NET_H + 8, NET_W) and net.shape == (NET_H, NET_W)
    assert (full[NET_H:] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(full[:NET_H], net)
    # The network saw the top rows only: the same as an uncropped frame holding those rows and their events.
    top_events = events[events.y < NET_H]
    np.testing.assert_array_equal(net, direct_ids(model, image[:NET_H], top_events))
    np.testing.assert_array_equal(results["input"].overlay[NET_H:], image[NET_H:])  # unlabeled: plain image


def test_resize_upsamples_ids_nearest_neighbour(model):
    events = make_events(4000, 0, 50_000, height=2 * NET_H, width=2 * NET_W)
    image = make_image(2 * NET_H, 2 * NET_W)
    results = {}
    for resolution in ("input", "network"):
        seg = segmenter(model, image_fit="resize", output_resolution=resolution)
        seg.add_events(events)
        results[resolution] = seg.segment(image, 50_000)
    full, net = results["input"].class_ids, results["network"].class_ids
    assert full.shape == (2 * NET_H, 2 * NET_W) and net.shape == (NET_H, NET_W)
    np.testing.assert_array_equal(full[::2, ::2], net)
    np.testing.assert_array_equal(full[1::2, 1::2], net)


def test_image_conversion_to_the_model_channels():
    torch.manual_seed(0)
    gray_model = MambaSeg(load_model_config(tiny_config(image_channels=1))).eval()
    seg = segmenter(gray_model, missing_events="zeros")
    rgb = make_image()
    inputs = seg.prepare(rgb, 0)
    luma = (rgb.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    diff = np.abs(inputs.image[0, 0].numpy() - luma).max()
    print(f"max |gray - luma| = {diff}")
    assert inputs.image.shape == (1, 1, NET_H, NET_W) and diff < 1e-6
    gray16 = np.random.default_rng(0).integers(0, 65536, (NET_H, NET_W), dtype=np.uint16)
    np.testing.assert_allclose(seg.prepare(gray16, 0).image[0, 0].numpy(), gray16 / 65535.0, atol=1e-6)


def test_gray_image_is_repeated_for_an_rgb_model(model):
    seg = segmenter(model)
    gray = make_image()[:, :, 0]
    image = seg.prepare(gray, 0).image[0]
    assert image.shape == (3, NET_H, NET_W)
    np.testing.assert_array_equal(image[0].numpy(), image[2].numpy())


def test_bad_images_raise_value_error(model):
    seg = segmenter(model, sensor_size=[NET_H, NET_W])
    with pytest.raises(ValueError, match="uint8 or uint16"):
        seg.segment(np.zeros((NET_H, NET_W, 3), np.float32), 0)
    with pytest.raises(ValueError, match="shape"):
        seg.segment(np.zeros((NET_H, NET_W, 4), np.uint8), 0)
    with pytest.raises(ValueError, match="sensor_size"):
        seg.segment(np.zeros((NET_H + 2, NET_W, 3), np.uint8), 0)
    crop = segmenter(model, image_fit="crop_bottom")
    with pytest.raises(ValueError, match="crop_bottom"):
        crop.segment(np.zeros((NET_H + 4, NET_W - 2, 3), np.uint8), 0)


def test_warmup_runs_a_forward_pass_without_touching_state(model):
    seg = segmenter(model)
    assert seg.warmup() > 0
    assert seg.stats.frames == 0 and seg.latest_event_us is None


def test_warmup_compiles_the_ring_buffer_append(tmp_path):
    # In a fresh process (numba kernels compile once per process): after warmup the first real packet's append
    # finds its kernel compiled, instead of stalling the first frames' events.
    code = f"""
from mambaseg_core.events import ring_buffer
from mambaseg_core.pipeline import Segmenter, SegmenterConfig, build_model
seg = Segmenter(build_model(None, {str(write_tiny_model_config(tmp_path))!r}, random_seed=0), SegmenterConfig(), "cpu")
before = len(ring_buffer._append_run.signatures)
seg.warmup()
print(before, len(ring_buffer._append_run.signatures))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["0", "1"], run.stdout


def test_reset_forgets_events(model):
    seg = segmenter(model)
    seg.add_events(make_events(100, 0, 1000))
    assert seg.latest_event_us is not None
    seg.reset()
    assert len(seg.window(2000)) == 0 and seg.latest_event_us is None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"overlay_alpha": 2.0}, "overlay_alpha"),
        ({"window_events": 0}, "window_events"),
        ({"window_mode": "frames"}, "window_mode"),
        ({"class_set": "cityscapes"}, "class_set"),
        ({"window_events": 10, "buffer_max_events": 5}, "buffer_max_events"),
        ({"palette": [[0, 0, 256]]}, "palette[0]"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(SegmenterConfig, override)
    print(info.value)
    assert info.value.key == key


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_auto_precision_is_fp16_on_a_gpu_and_fp32_on_the_cpu(model, device):
    seg = Segmenter(copy.deepcopy(model), load_config(SegmenterConfig, {"precision": "auto"}), device)
    assert seg.config.precision == "auto"
    assert seg.engine.precision == ("fp16" if device == "cuda" else "fp32")
    explicit = Segmenter(copy.deepcopy(model), load_config(SegmenterConfig, {"precision": "bf16"}), device)
    assert explicit.engine.precision == "bf16"  # an explicit precision is kept on any device


def test_class_set_must_match_the_model(model):
    with pytest.raises(ConfigError, match="class_set"):
        segmenter(model, class_set="dsec11")
    seg = segmenter(model)  # auto: 6 classes -> ddd17
    assert seg.classes.key == "ddd17" and len(seg.classes.names) == 6
    custom = segmenter(model, class_set="auto", palette=[[i, i, i] for i in range(6)])
    np.testing.assert_array_equal(custom.classes.palette[:, 0], np.arange(6))


def test_build_model_random_weights_are_seeded_and_need_permission():
    config = tiny_config()
    first = build_model(None, config, random_seed=7)
    second = build_model("", config, random_seed=7)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no checkpoint"):
        build_model(None, config)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_model("/nonexistent/model.pt", config)


# ---- EventClock ------------------------------------------------------------------------------------------


def _batch(times) -> EventBatch:
    times = np.asarray(times)
    return EventBatch.from_arrays(np.zeros_like(times), np.zeros_like(times), times, np.ones_like(times))


def test_event_clock_header_offset_is_estimated_on_the_first_packet():
    clock = EventClock("header_offset", tolerance_us=100_000)
    aligned, jumped = clock.align(_batch([1000, 1500]), stamp_us=5_000_000)
    assert not jumped and clock.offset_us == 4_999_000
    np.testing.assert_array_equal(aligned.t, [5_000_000, 5_000_500])
    aligned, jumped = clock.align(_batch([2000, 2600]), stamp_us=5_001_100)
    assert not jumped
    np.testing.assert_array_equal(aligned.t, [5_001_000, 5_001_600])


def test_event_clock_detects_bag_loops_and_re_estimates():
    clock = EventClock("header_offset", tolerance_us=100_000)
    clock.align(_batch([1000]), stamp_us=5_000_000)
    clock.align(_batch([900_000]), stamp_us=5_899_000)
    aligned, jumped = clock.align(_batch([1000]), stamp_us=5_000_000)  # the bag started over
    assert jumped and clock.jumps == 1
    np.testing.assert_array_equal(aligned.t, [5_000_000])
    # A sensor clock reset: stamps go on, event times restart -> the aligned time strays from the stamp.
    aligned, jumped = clock.align(_batch([10]), stamp_us=5_500_000)
    assert jumped and aligned.t[0] == 5_500_000


def test_event_clock_as_is_keeps_times_and_flags_steps_back():
    clock = EventClock("as_is", tolerance_us=1000)
    aligned, jumped = clock.align(_batch([10_000, 20_000]), stamp_us=0)
    assert not jumped
    np.testing.assert_array_equal(aligned.t, [10_000, 20_000])
    _, jumped = clock.align(_batch([19_500]), stamp_us=0)  # within tolerance
    assert not jumped
    _, jumped = clock.align(_batch([5_000]), stamp_us=0)
    assert jumped


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the torch voxel grid and device path")
@pytest.mark.parametrize("ring", [100_000, 1000], ids=["ring", "wrapped ring"])
def test_cuda_segmenter_matches_cpu(model, ring):
    """The GPU path (the window read in place in the pinned ring by the voxel kernel, across the wrap once it has
    wrapped) gives the CPU path's network inputs and ids, and hands the window back after each frame."""
    gpu_model = copy.deepcopy(model)
    gpu_model.set_scan_backend("torch")  # no extension build inside a unit test
    config = load_config(SegmenterConfig, {"window_events": 700, "buffer_max_events": ring})
    cpu, gpu = Segmenter(model, config, "cpu"), Segmenter(gpu_model, config, "cuda")
    events = make_events(2500, 0, 100_000)  # the wrapped ring's oldest slot is 500: the window's 700 wrap round
    for seg in (cpu, gpu):
        for start in range(0, 2500, 250):
            seg.add_events(events[start : start + 250])
    image = make_image(seed=5)
    cpu_inputs, gpu_inputs = cpu.prepare(image, 100_000), gpu.prepare(image, 100_000)
    gpu.prepare(make_image(seed=6), 100_000)  # restages at once: must not overwrite what the first still uploads
    assert gpu_inputs.image.is_cuda and gpu_inputs.events.is_cuda  # the network inputs on the Segmenter's device
    assert gpu._packer is not None and gpu._packer.in_place == (voxel_module.triton is not None)
    assert not gpu._packer.window_held
    assert gpu_inputs.events_used == cpu_inputs.events_used == 700
    voxel_diff = (cpu_inputs.events - gpu_inputs.events.cpu()).abs().max().item()
    print(f"max |voxel cpu - cuda| = {voxel_diff}")
    assert voxel_diff < 1e-4  # float32 sums in another order
    torch.testing.assert_close(gpu_inputs.image.cpu(), cpu_inputs.image, rtol=0, atol=1e-6)
    cpu_ids, gpu_ids = cpu.segment(image, 100_000).class_ids, gpu.segment(image, 100_000).class_ids
    assert not gpu._packer.window_held  # appends into the window's slots do not wait
    agreement = float((cpu_ids == gpu_ids).mean())
    print(f"ids agreeing between CPU and CUDA: {agreement:.4f}")
    assert agreement > 0.99  # TF32/cuDNN kernels may flip near-ties of random-weight logits


def test_events_reached_tracks_the_newest_buffered_event(model):
    seg = segmenter(model)
    assert not seg.events_reached(0)
    seg.add_events(make_events(10, 0, 1000))
    newest = int(seg.latest_event_us)
    assert seg.events_reached(newest) and not seg.events_reached(newest + 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CUDA-graph capture of the packed frames")
def test_cuda_graph_segmenter_equals_eager_and_captures_once_per_event_capacity(model):
    settings = {"window_mode": "duration", "window_duration_us": 10_000, "parallel_branches": False}
    segs = {}
    for graphed in (False, True):
        gpu_model = copy.deepcopy(model)
        gpu_model.set_scan_backend("torch")  # no extension build inside a unit test
        segs[graphed] = Segmenter(gpu_model, load_config(SegmenterConfig, {**settings, "cuda_graph": graphed}), "cuda")
        segs[graphed].warmup()
    # The whole forward's graph, and where the frame is read in place those of the image part ahead and the rest.
    warm = 3 if segs[True]._packer is not None and segs[True]._packer.in_place else 1
    assert segs[True].engine.captures == warm
    # Quiet frames (a few hundred events), then a burst over the smallest capacity (16384), then quiet again.
    counts = [300, 500, 20_000, 400, 600]
    captures = []
    for frame, count in enumerate(counts):
        events = make_events(count, frame * 10_000, (frame + 1) * 10_000, seed=frame)
        image = make_image(seed=frame)
        results = {}
        for graphed, seg in segs.items():
            seg.add_events(events)
            results[graphed] = seg.segment(image, (frame + 1) * 10_000)
        assert results[True].events_used == results[False].events_used == count
        np.testing.assert_array_equal(results[True].class_ids, results[False].class_ids)
        captures.append(segs[True].engine.captures)
    print("captures after each frame:", captures)
    assert captures == [warm, warm] + [warm + 1] * 3  # the burst grows the packed layout once, never shrinks back


def test_stage_image_has_nothing_to_do_ahead_on_a_cpu_device(model):
    seg = segmenter(model)
    seg.add_events(make_events(500, 0, 10_000))
    image = make_image(seed=3)
    assert not seg.stage_image(image)  # the CPU path converts the frame in segment()
    np.testing.assert_array_equal(seg.segment(image, 10_000).class_ids, direct_ids(model, image, seg.window(10_000)))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the pinned frame buffer"),
            ],
        ),
    ],
)
def test_pixels_staged_ahead_are_used_for_that_frame_only(model, device):
    """The node stages a frame's pixels while its last events arrive: segment() of that array gives the ids of an
    unstaged frame, the network sees the pixels of the array it is given (never those staged for another), and a
    bad image is left to segment(). On the CPU the GPU path's FramePacker is put in by hand."""
    segs = []
    for _ in range(2):
        gpu_model = copy.deepcopy(model)
        gpu_model.set_scan_backend("torch")  # no extension build inside a unit test
        segs.append(Segmenter(gpu_model, load_config(SegmenterConfig, {"window_events": 700}), device))
        if device == "cpu":
            segs[-1]._packer = FramePacker("cpu", in_place=False)  # in place would need a CUDA stream to release
    staging, plain = segs
    assert not staging.stage_image(make_image(seed=1))  # before the first frame: no buffer laid out yet
    for frame in range(4):
        events, stamp = make_events(900, frame * 10_000, (frame + 1) * 10_000, seed=frame), (frame + 1) * 10_000
        for seg in segs:
            seg.add_events(events)
        image = make_image(seed=frame)
        assert staging.stage_image(image) == (frame > 0)
        np.testing.assert_array_equal(staging.segment(image, stamp).class_ids, plain.segment(image, stamp).class_ids)
    # The network's inputs (with random weights the ids hardly depend on the image): the staged array's pixels, and
    # for an array other than the one staged, its own.
    for staged, given in ((image, image), (make_image(seed=10), make_image(seed=11))):
        assert staging.stage_image(staged)
        seen, expected = staging.prepare(given, 40_000).image, plain.prepare(given, 40_000).image
        torch.testing.assert_close(seen, expected, rtol=0, atol=0)
    bad = make_image().astype(np.int16)
    assert not staging.stage_image(bad)  # segment() says why
    with pytest.raises(ValueError, match="must be uint8 or uint16"):
        staging.segment(bad, 40_000)


@pytest.mark.parametrize("image_ahead", [True, False], ids=["ahead", "pixels only"])
@pytest.mark.parametrize(
    "device, graphed",
    [("cpu", False), pytest.param("cuda", False, marks=CUDA), pytest.param("cuda", True, marks=CUDA)],
    ids=["cpu", "cuda eager", "cuda graph"],
)
def test_the_image_part_run_ahead_serves_its_own_frame_only(model, monkeypatch, device, graphed, image_ahead):
    """Read in place (the GPU default; on the CPU a packer put in by hand), stage_image queues the image's stem and
    stage-0 encoder, and segment() of that array runs only the rest of the forward; any other array gets the whole
    forward. The ids are those of a Segmenter that never stages, eager or through the parts' CUDA graphs. With
    image_ahead off, stage_image stages the pixels only and every frame runs the whole forward."""
    segs = []
    for staging_segmenter in (True, False):
        gpu_model = copy.deepcopy(model)
        gpu_model.set_scan_backend("torch")  # no extension build inside a unit test
        settings = {"window_events": 700, "cuda_graph": graphed, "image_ahead": image_ahead or not staging_segmenter}
        config = load_config(SegmenterConfig, settings)
        segs.append(Segmenter(gpu_model, config, device))
        if device == "cpu":
            segs[-1]._packer = FramePacker("cpu", in_place=True)
    staging, plain = segs
    if device == "cuda" and not staging._packer.in_place:
        pytest.skip("the frame is not read in place here (no Triton): nothing runs ahead")
    calls: list[str] = []
    for name in ("class_ids_after", "class_ids_from"):
        original = getattr(staging.engine, name)
        monkeypatch.setattr(staging.engine, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    images = [make_image(seed=seed) for seed in range(5)]
    for frame, image in enumerate(images[:3]):
        events, stamp = make_events(900, frame * 10_000, (frame + 1) * 10_000, seed=frame), (frame + 1) * 10_000
        for seg in segs:
            seg.add_events(events)
        assert staging.stage_image(image) == (frame > 0)
        np.testing.assert_array_equal(staging.segment(image, stamp).class_ids, plain.segment(image, stamp).class_ids)
    rest = "class_ids_after" if image_ahead else "class_ids_from"
    assert calls == ["class_ids_from", rest, rest]
    assert staging.stage_image(images[3])
    other = staging.segment(images[4], 30_000).class_ids
    np.testing.assert_array_equal(other, plain.segment(images[4], 30_000).class_ids)
    assert calls[-1] == "class_ids_from"  # not the array staged: the whole forward
    if graphed:
        assert staging.engine.captures == (3 if image_ahead else 1)  # the whole forward[, the image part, the rest]
