"""Real-time inference latency of the official MambaSeg architectures on one GPU (issue #11).

Sections of the report:
1. Model only: network inputs already on the GPU -> class ids on the host, per precision (fp32 = the accuracy
   reference, bf16, fp16) x execution (eager, CUDA graph), batch 1 and 8, DDD17 (200x346) and DSEC (440x640) sizes,
   random weights (timing does not depend on them). p50/p99 over `--frames` calls, throughput = batch / p50.
2. End to end, batch 1, through the same `Segmenter` as the ROS node: raw EVT3 packet bytes (1 ms packets of a
   synthetic stream, DSEC 2 M ev/s with a 100k-event window, DDD17 1 M ev/s with a 50 ms window) + image bytes
   -> class-id mask on the host. Per frame: decode the frame's packets, add them to the ring buffer, window,
   voxel grid on the GPU, crop, forward, ids to the host. `render` adds the palette + overlay (CPU) on top.
3. Per-module GPU time of the eager forward (CUDA events around each module; nested modules overlap), and the
   kernel count and GPU busy time from the profiler, against the wall time: what dominates, and the host's share.
4. The kernels of one CUDA-graph replay (profiler timeline): summed kernel time, GPU busy time over all streams,
   the span and the idle gaps inside it, the kernels by summed time.
5. Accuracy of each optimised mode against fp32 eager: logits relative L2 error and argmax agreement on DSEC-size
   random inputs (random weights), on the official reference fixture (its weights and inputs, found through
   $MAMBASEG_SHARED_DIR or the ../shared beside the checkout), and on synthetic frames with the trained demo model.
Usage: python benchmarks/latency.py [--datasets DSEC DDD17] [--batches 1 8] [--frames 100] [--no-write]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import table, write_section

from mambaseg_core.config import load_config
from mambaseg_core.data.dsec import scaled_num_events
from mambaseg_core.events import EventBatch
from mambaseg_core.events.evt3 import encode_evt3
from mambaseg_core.models import MambaSeg, load_model, load_model_config, load_official_checkpoint
from mambaseg_core.pipeline import ENGINE_MODES, STAGES, InferenceEngine, Segmenter, SegmenterConfig
from mambaseg_core.pipeline.event_clock import EventStream

ROOT = Path(__file__).resolve().parents[1]
# The official implementation's reference fixture (../shared/reference/README.md): a small gray model, 64x96 inputs.
SHARED_DIR = Path(os.environ.get("MAMBASEG_SHARED_DIR", ROOT.parent / "shared"))
REFERENCE_FIXTURE = SHARED_DIR / "reference" / "official_small_gray.pt"
# dataset -> (model config, sensor (H, W), Segmenter settings, events per second)
DATASETS = {
    "DSEC": (
        "mambaseg_dsec.yaml",
        (480, 640),
        {"window_mode": "count", "window_events": 100_000, "image_fit": "crop_bottom"},
        2_000_000,
    ),
    "DDD17": (
        "mambaseg_ddd17.yaml",
        (260, 346),
        {"window_mode": "duration", "window_duration_us": 50_000, "image_fit": "crop_bottom"},
        1_000_000,
    ),
}
FRAME_US = 50_000  # 20 Hz camera
SECTIONS = ("model", "e2e", "realtime", "breakdown", "graph", "accuracy")


def make_engine(model: MambaSeg, mode: str) -> InferenceEngine:
    return InferenceEngine(copy.deepcopy(model), **ENGINE_MODES[mode]._asdict())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def build_model(dataset: str) -> MambaSeg:
    torch.manual_seed(0)
    config = load_model_config(ROOT / "config" / "model" / DATASETS[dataset][0])
    return MambaSeg(config).cuda().eval()


def time_calls(fn: Callable[[], object], frames: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each call; fn must return only once its result is on the host."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def random_inputs(model: MambaSeg, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    config = model.config
    gen = torch.Generator().manual_seed(seed)
    height, width = config.image_size
    image = torch.rand(batch, config.image_channels, height, width, generator=gen)
    events = torch.randn(batch, config.event_bins, height, width, generator=gen) * (torch.rand(1, generator=gen) > 0.5)
    return image.cuda(), events.cuda()


# ---- 1. model only ---------------------------------------------------------------------------------------------


def bench_model_only(datasets: list[str], batches: list[int], modes: list[str], frames: int) -> str:
    rows = []
    for dataset in datasets:
        base = build_model(dataset)
        for batch in batches:
            image, events = random_inputs(base, batch)
            for mode in modes:
                engine = make_engine(base, mode)
                start = time.perf_counter()
                engine.class_ids(image, events).cpu()
                first_ms = (time.perf_counter() - start) * 1e3
                times = time_calls(lambda e=engine, i=image, v=events: e.class_ids(i, v).cpu(), frames)
                p50 = statistics.median(times)
                rows.append(
                    [
                        dataset,
                        batch,
                        mode,
                        f"{p50:.2f}",
                        f"{percentile(times, 99):.2f}",
                        f"{batch * 1e3 / p50:.1f}",
                        f"{first_ms:.0f}",
                    ]
                )
                print(rows[-1], flush=True)
                del engine
                torch.cuda.empty_cache()
        del base
        torch.cuda.empty_cache()
    headers = ["size", "batch", "mode", "p50 ms", "p99 ms", "frames/s", "first call ms (compile, capture)"]
    return table(headers, rows)


# ---- 2. end to end ---------------------------------------------------------------------------------------------


def synthetic_stream(sensor: tuple[int, int], rate: int, frames: int, seed: int = 0) -> list[list[bytes]]:
    """EVT3 1 ms packets per frame interval: events cluster on moving vertical edges, like a driving scene."""
    rng = np.random.default_rng(seed)
    height, width = sensor
    per_ms = rate // 1000
    stream = []
    for frame in range(frames):
        packets = []
        for ms in range(FRAME_US // 1000):
            t0 = frame * FRAME_US + ms * 1000
            t = np.sort(rng.integers(t0, t0 + 1000, per_ms))
            edges = rng.integers(0, width, 32)
            x = np.clip(edges[rng.integers(0, 32, per_ms)] + rng.normal(0, 3, per_ms).astype(int), 0, width - 1)
            y = rng.integers(0, height, per_ms)
            batch = EventBatch.from_arrays(x, y, t, rng.integers(0, 2, per_ms))
            packets.append(encode_evt3(batch))
        stream.append(packets)
    return stream


def stream_and_frame(dataset: str, frames: int) -> tuple[MambaSeg, tuple[int, int], list[list[bytes]], np.ndarray]:
    """(model, sensor (H, W), `frames` frames of EVT3 packets at the dataset's event rate, one camera frame: RGB,
    or gray for a gray model as DDD17's DAVIS frames are)."""
    _, sensor, _, rate = DATASETS[dataset]
    base = build_model(dataset)
    frame = np.random.default_rng(1).integers(0, 256, (*sensor, 3), dtype=np.uint8)
    if base.config.image_channels == 1:
        frame = np.ascontiguousarray(frame[..., 1])
    return base, sensor, synthetic_stream(sensor, rate, frames), frame


def add_packet(seg: Segmenter, events: EventStream, packet: bytes) -> None:
    """One EVT3 packet as mambaseg_node takes it: decoded by the topic's EventStream, moved into the image clock (the
    packet stamped with its first event's time, as metavision_driver stamps it with its first buffer's arrival), and
    appended."""
    batch = events.decode("evt3", packet)
    if len(batch):
        seg.add_events(events.align(batch, int(batch.t[0]), "evt3")[0])


def warm_segmenter(base: MambaSeg, dataset: str, mode: str, frame_shape: tuple[int, ...]) -> tuple[Segmenter, float]:
    """A Segmenter with the dataset's window settings, warmed up at the frames' shape; (it, warm-up ms)."""
    settings = DATASETS[dataset][2]
    config = load_config(SegmenterConfig, {**settings, "output_resolution": "network", **ENGINE_MODES[mode]._asdict()})
    seg = Segmenter(copy.deepcopy(base), config, "cuda")
    warmup_ms = seg.warmup(frame_shape)  # the frames' shape: no recapture at the first frame
    gc.collect()  # as mambaseg_node does after start-up: no full GC pass over the model's objects mid-stream
    gc.freeze()
    return seg, warmup_ms


def bench_end_to_end(datasets: list[str], modes: list[str], frames: int) -> str:
    rows = []
    for dataset in datasets:
        base, sensor, stream, frame = stream_and_frame(dataset, frames + 4)
        image_bytes = frame.tobytes()
        for mode in modes:
            seg, warmup_ms = warm_segmenter(base, dataset, mode, frame.shape)
            events = EventStream(sensor_size=sensor)
            stats: dict[str, list[float]] = defaultdict(list)
            for k, packets in enumerate(stream):
                start = time.perf_counter()
                for packet in packets:
                    add_packet(seg, events, packet)
                decode_ms = (time.perf_counter() - start) * 1e3
                image = np.frombuffer(image_bytes, np.uint8).reshape(frame.shape)
                result = seg.segment(image, (k + 1) * FRAME_US)
                assert result is not None
                if k < 4:  # warm-up frames: the ring buffer and allocator settle
                    continue
                timings = result.timings_ms
                stats["decode"].append(decode_ms)
                for key in STAGES:
                    stats[key].append(timings[key])
                stats["image_to_ids"].append(timings["total"] - timings["postprocess"])
                stats["to_ids"].append(decode_ms + timings["total"] - timings["postprocess"])
                start = time.perf_counter()
                assert result.overlay is not None  # rendered on first access, with the colored mask
                stats["render"].append(decode_ms + timings["total"] + (time.perf_counter() - start) * 1e3)
            row = [dataset, mode, f"{warmup_ms:.0f}"]
            row += [f"{statistics.median(stats[k]):.2f}" for k in ("decode", "window", "voxel", "preprocess")]
            row += [f"{statistics.median(stats['forward']):.2f}"]
            row += [f"{statistics.median(stats['image_to_ids']):.2f}", f"{percentile(stats['image_to_ids'], 99):.2f}"]
            row += [f"{statistics.median(stats['to_ids']):.2f}", f"{percentile(stats['to_ids'], 99):.2f}"]
            row += [f"{statistics.median(stats['render']):.2f}"]
            rows.append(row)
            print(row, flush=True)
            gc.unfreeze()  # so that the next mode's collection can free this Segmenter's cycles
            del seg
            torch.cuda.empty_cache()
        del base
        torch.cuda.empty_cache()
    headers = [
        "size",
        "mode",
        "warm-up ms",
        "decode p50",
        "window p50",
        "voxel p50 (queue)",
        "preprocess p50 (queue)",
        "forward p50 (to host)",
        "image -> ids p50",
        "image -> ids p99",
        "bytes -> ids p50",
        "bytes -> ids p99",
        "+ render p50",
    ]
    return table(headers, rows)


def bench_real_time(datasets: list[str], modes: list[str], frames: int) -> str:
    rows = []
    for dataset in datasets:
        base, sensor, stream, image = stream_and_frame(dataset, frames + 5)
        # The decoder's numba kernels compile on their first call (1-3 s): in the feeder, the stream would fall behind
        # and its catch-up would contend with the first frames.
        EventStream(sensor_size=sensor).decode("evt3", stream[0][0])
        for mode in modes:
            seg, _ = warm_segmenter(base, dataset, mode, image.shape)
            for staged, image_ahead in REAL_TIME_STAGING:
                seg.reset()
                seg.config.image_ahead = image_ahead  # read by each stage_image; warmup captured every graph
                ms = replay_in_real_time(seg, EventStream(sensor_size=sensor), stream, image, stage_image=staged)
                row = [dataset, mode, "pixels + image stage 0" if image_ahead else "pixels" if staged else "no"]
                row += [f"{statistics.median(ms[key]):.2f}" for key in REAL_TIME_PARTS]
                row += [f"{statistics.median(ms['latency']):.2f}", f"{percentile(ms['latency'], 99):.2f}"]
                row += [f"{max(ms['latency']):.2f}"]
                rows.append(row)
                print(row, flush=True)
            gc.unfreeze()
            del seg
            torch.cuda.empty_cache()
        del base
        torch.cuda.empty_cache()
    headers = ["size", "mode", "staged while waiting for the window (the node: pixels + image stage 0)"]
    headers += [f"{label} p50" for label in REAL_TIME_PARTS.values()]
    headers += ["bytes -> ids p50", "bytes -> ids p99", "max"]
    return table(headers, rows)


# What the worker does while it waits for the window: (stage_image called, with image_ahead).
REAL_TIME_STAGING = ((False, False), (True, False), (True, True))

# The parts of a real-time frame (replay_in_real_time's keys): what the latency holds, then the sensor-bound wait.
REAL_TIME_PARTS = {
    "last_decode": "decoding + append of the packet that completes the window",
    "handover": "to the worker's wake-up",
    "segment": "segment (image -> ids)",
    "wait": "image due -> window complete (sensor-bound, not in the latency)",
}


def replay_in_real_time(
    seg: Segmenter,
    events: EventStream,
    stream: list[list[bytes]],
    image: np.ndarray,
    stage_image: bool = True,
    warmup: int = 4,
) -> dict[str, list[float]]:
    """mambaseg_node's two threads at the sensors' pace (wall clock): a feeder thread decodes each 1 ms EVT3 packet
    when its last event is due, appends it to the Segmenter and notifies (the node's executor); this thread (the
    node's worker) takes each frame when its image is due, starts it on its image (`stage_image`, as the node does),
    waits on that condition until the events reach the frame stamp, and segments. Latency = from the later of the
    image's due time and the start of the decoding of the packet that completes the window, to class ids on the
    host: that packet's decoding, the hand-over between the threads and their contention (GIL, CPU) are inside it;
    the window's other packets were decoded as they arrived, as in the node.

    Returns ms per frame (after `warmup`) for "latency" and each REAL_TIME_PARTS key."""
    packets = [packet for frame in stream for packet in frame]
    per_frame = len(stream[0])
    arrived = threading.Condition()
    started = [0.0] * len(packets)  # perf_counter when each packet's decoding began, and ended
    ended = [0.0] * len(packets)
    origin = time.perf_counter() + 0.1  # wall time of stream time 0

    def feed() -> None:
        for j, packet in enumerate(packets):
            wait_until(origin + (j + 1) * 1e-3)  # a packet is sent once its last millisecond is over
            started[j] = time.perf_counter()
            add_packet(seg, events, packet)
            ended[j] = time.perf_counter()
            with arrived:
                arrived.notify_all()

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    feeder.start()
    ms: dict[str, list[float]] = defaultdict(list)
    for k in range(len(stream) - 1):  # the last frame's stamp has no packet after it
        stamp = (k + 1) * FRAME_US
        image_due = origin + stamp * 1e-6
        wait_until(image_due)
        taken = time.perf_counter()
        if stage_image:
            seg.stage_image(image)
        with arrived:
            arrived.wait_for(lambda s=stamp: seg.events_reached(s), timeout=1.0)
        woke = time.perf_counter()
        result = seg.segment(image, stamp)
        done = time.perf_counter()
        assert result is not None
        j = (k + 1) * per_frame  # the packet with the first events at or after the stamp
        begin = max(image_due, started[j])
        if k >= warmup:
            parts = {"last_decode": ended[j] - started[j], "handover": woke - ended[j], "segment": done - woke}
            parts.update(wait=begin - taken, latency=done - begin)
            for key, seconds in parts.items():
                ms[key].append(seconds * 1e3)
    feeder.join()
    return ms


def wait_until(deadline: float) -> None:
    """Sleep until perf_counter() reaches `deadline` (overshoots by ~0.1 ms; no spinning: it would hold the GIL)."""
    if (left := deadline - time.perf_counter()) > 0:
        time.sleep(left)


# ---- 3. where the time goes ------------------------------------------------------------------------------------


def module_label(name: str, module: torch.nn.Module) -> str | None:
    kind = type(module).__name__
    if kind in ("PatchEmbed", "Mlp", "Downsample", "CTIM", "CSIM", "SegFormerHead", "DirectionalSSM"):
        where = "DDIM " if name.startswith("fusion") else ""
        return where + kind
    if kind == "SS2D" and not name.startswith("fusion"):
        return "encoder SS2D"
    if kind == "DDIM":
        return "DDIM (whole)"
    if kind == "LayerNorm2d":
        return "LayerNorm2d (all)"
    return None


def profile_forward(engine: InferenceEngine, image: torch.Tensor, events: torch.Tensor) -> dict[str, object]:
    """One profiled forward: GPU ms per module label (kernels launched inside the module, nested modules
    overlap), the kernels by GPU time, their count and the GPU busy time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    open_ranges: list[record_function] = []
    handles = []
    for name, module in engine.model.named_modules():
        label = module_label(name, module)
        if label is None:
            continue

        def enter(_m, _i, label=label):
            scope = record_function(f"module::{label}")
            scope.__enter__()
            open_ranges.append(scope)

        def leave(_m, _i, _o):
            open_ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        engine.class_ids(image, events).cpu()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine.class_ids(image, events).cpu()
            torch.cuda.synchronize()
    finally:
        for handle in handles:
            handle.remove()
    averages = prof.key_averages()
    on_gpu = [str(getattr(e, "device_type", "")).endswith("CUDA") for e in averages]
    # The CPU-side module ranges sum the kernels launched inside them (the GPU-side ones span idle gaps too).
    modules = {
        e.key[len("module::") :]: e.device_time_total / 1e3
        for e, gpu in zip(averages, on_gpu, strict=True)
        if e.key.startswith("module::") and not gpu
    }
    kernels = [e for e, gpu in zip(averages, on_gpu, strict=True) if gpu and not e.key.startswith("module::")]
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return {
        "modules": modules,
        "kernels": [(e.key, e.count, e.self_device_time_total / 1e3) for e in kernels],
        "count": sum(e.count for e in kernels),
        "busy": sum(e.self_device_time_total for e in kernels) / 1e3,
    }


def bench_breakdown(dataset: str, modes: list[str], frames: int, top: int = 20) -> str:
    base = build_model(dataset)
    image, events = random_inputs(base, 1)
    labels: list[str] = []
    profiles: dict[str, dict] = {}
    summary_rows = []
    # Profiled without the CUDA graph: the kernels are the same, and the module ranges stay visible (eager).
    for mode in modes:
        engine = InferenceEngine(copy.deepcopy(base), **ENGINE_MODES[mode]._replace(cuda_graph=False)._asdict())
        profiles[mode] = profiled = profile_forward(engine, image, events)
        labels += [label for label in profiled["modules"] if label not in labels]
        wall = statistics.median(time_calls(lambda e=engine: e.class_ids(image, events).cpu(), frames // 2))
        busy = profiled["busy"]
        summary_rows.append([mode, profiled["count"], f"{busy:.2f}", f"{wall:.2f}", f"{wall - busy:.2f}"])
        del engine
        torch.cuda.empty_cache()
    eager = [m for m in profiles if not ENGINE_MODES[m].compile]
    module_rows = [[label, *(f"{profiles[m]['modules'].get(label, 0):.2f}" for m in eager)] for label in labels]
    parts = [
        f"{dataset} size, batch 1, random weights, each mode without its CUDA graph.",
        table(["mode", "kernels per forward", "GPU busy ms", "wall ms", "host-bound ms"], summary_rows),
        "GPU time of the kernels launched inside each module (profiler, eager modes; nested modules are included "
        "in their parents):",
        table(["module", *(f"{m} GPU ms" for m in eager)], module_rows),
    ]
    for mode, profiled in profiles.items():
        busy = profiled["busy"]
        rows = [
            [name[:100].replace("|", "/"), count, f"{ms:.3f}", f"{100 * ms / busy:.1f}"]
            for name, count, ms in profiled["kernels"][:top]
        ]
        parts += [f"Top {top} kernels, {mode}:", table(["kernel", "calls", "GPU ms", "% of busy"], rows)]
    return "\n\n".join(parts)


def graph_timeline(engine: InferenceEngine, image: torch.Tensor, events: torch.Tensor) -> dict[str, object]:
    """The kernels of one profiled call of a warmed-up engine (one CUDA-graph replay), summed by
    `timeline_summary`."""
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    engine.class_ids(image, events).cpu()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.class_ids(image, events).cpu()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        trace_events = json.loads(Path(trace.name).read_text())["traceEvents"]
    spans = [
        (e["name"], e["args"].get("stream"), float(e["ts"]), float(e["ts"]) + float(e["dur"]))
        for e in trace_events
        if e.get("cat") == "kernel"
    ]
    if not spans:
        raise RuntimeError("the profiler saw no kernels in the replay")
    return timeline_summary(spans)


def timeline_summary(spans: list[tuple[str, object, float, float]]) -> dict[str, object]:
    """Kernel spans (name, stream, start µs, end µs) -> their count, summed time, the time at least one runs (union
    over streams), the time exactly one runs (`alone`: nothing beside it, so its whole duration is on the critical
    path), the span from the first start to the last end (ms), the streams used, and per kernel name (count, summed
    ms, alone ms), largest summed time first. A kernel ending when another starts does not overlap it."""
    boundaries = sorted(
        [(start, 1, i) for i, (_, _, start, _) in enumerate(spans)]
        + [(end, 0, i) for i, (_, _, _, end) in enumerate(spans)]
    )  # at equal times the ends (0) come first
    active: set[int] = set()
    union, alone, last = 0.0, defaultdict(float), boundaries[0][0]
    for moment, is_start, index in boundaries:
        if active:
            union += moment - last
            if len(active) == 1:
                alone[spans[next(iter(active))][0]] += moment - last
        last = moment
        if is_start:
            active.add(index)
        else:
            active.discard(index)
    by_name: dict[str, list[float]] = defaultdict(list)
    for name, _, start, end in spans:
        by_name[name].append(end - start)
    return {
        "count": len(spans),
        "sum": sum(end - start for _, _, start, end in spans) / 1e3,
        "union": union / 1e3,
        "alone": sum(alone.values()) / 1e3,
        "span": (max(end for *_, end in spans) - min(start for _, _, start, _ in spans)) / 1e3,
        "streams": len({stream for _, stream, _, _ in spans}),
        "kernels": sorted(((n, len(d), sum(d) / 1e3, alone[n] / 1e3) for n, d in by_name.items()), key=lambda k: -k[2]),
    }


# Kernel name fragments per category, first match wins. Inductor's fused kernels ("triton_...") are element-wise
# or reduction code around what their names list, so they never count as matrix products or scans.
KERNEL_CATEGORIES = (
    ("selective scan", ("scan_fwd_infer", "scan_fwd_kernel", "scan_fwd_resident", "carry_kernel"), False),
    (
        "fused scan orders / merges",
        ("cross_scan_kernel", "channel_scan_kernel", "merge_kernel", "merge_official", "merge_intended"),
        False,
    ),
    ("matmul / conv", ("gemm", "cutlass", "cublas", "xmma", "fprop", "cudnn", "conv2d_", "depthwise", "nvjet"), False),
    ("layer norm", ("layer_norm",), True),
    (
        "attention gates",
        ("gate_hidden", "pool_partials", "pixel_stats", "spatial_attention", "joint_spatial_gate", "swapped_scale"),
        False,
    ),
    (
        "layout: flip / copy / cat / permute",
        ("flip", "copy", "catarray", "cat_", "clone", "permute", "transpose", "index_elementwise"),
        True,
    ),
)


def kernel_category(name: str) -> str:
    """The stage a GPU kernel belongs to, from its name (see KERNEL_CATEGORIES); "element-wise and other" else."""
    lowered = name.lower()
    fused = lowered.startswith("triton_")
    for category, fragments, in_fused in KERNEL_CATEGORIES:
        if (in_fused or not fused) and any(fragment in lowered for fragment in fragments):
            return category
    return "element-wise and other"


def stage_floors_ms(dataset: str) -> dict[str, float]:
    """Lower bounds on this card, batch 1: the matrix products and convolutions (true MACs, mambaseg-info's count)
    at the measured bf16 matmul rate, and the scans' compulsory traffic (bf16 inputs, fp32 y) at the measured
    copy bandwidth."""
    from scan import copy_bandwidth, model_shapes

    from mambaseg_core.cli.info import count_model

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    flops_per_s = 2 * 8192**3 / min(time_calls(lambda: (a @ a, torch.cuda.synchronize()), 5)) * 1e3
    macs = count_model(load_model_config(ROOT / "config" / "model" / DATASETS[dataset][0])).linear_macs
    scan_bytes = sum(shape.forward_bytes(elem=2) * shape.per_forward for shape in model_shapes(dataset))
    return {"matmul / conv": 2 * macs / flops_per_s * 1e3, "selective scan": scan_bytes / copy_bandwidth() * 1e3}


def category_rows(kernels: list[tuple[str, int, float, float]], floors: dict[str, float]) -> list[list[object]]:
    """Per category of kernel_category: kernels, summed GPU ms, share of the summed time, the ms they ran alone,
    floor and the ratio."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for name, count, ms, alone_ms in kernels:
        total = totals[kernel_category(name)]
        total[0] += count
        total[1] += ms
        total[2] += alone_ms
    total_ms = sum(ms for _, _, ms, _ in kernels)
    rows: list[list[object]] = []
    for category, (count, ms, alone_ms) in sorted(totals.items(), key=lambda item: -item[1][1]):
        floor = floors.get(category)
        rows.append(
            [
                category,
                int(count),
                f"{ms:.2f}",
                f"{100 * ms / total_ms:.1f}",
                f"{alone_ms:.2f}",
                f"{floor:.3f}" if floor else "n/a",
                f"{ms / floor:.1f}x" if floor else "n/a",
            ]
        )
    return rows


def bench_graph(dataset: str, modes: list[str], top: int = 15) -> str:
    base = build_model(dataset)
    image, events = random_inputs(base, 1)
    floors = stage_floors_ms(dataset)
    rows, parts = [], []
    for mode in modes:
        engine = make_engine(base, mode)
        timeline = graph_timeline(engine, image, events)
        span, union = timeline["span"], timeline["union"]
        rows.append(
            [
                mode,
                timeline["count"],
                timeline["streams"],
                f"{timeline['sum']:.2f}",
                f"{union:.2f}",
                f"{span:.2f}",
                f"{span - union:.2f}",
                f"{timeline['alone']:.2f}",
                f"{timeline['sum'] / union:.2f}",
            ]
        )
        print(rows[-1], flush=True)
        kernel_rows = [
            [name[:100].replace("|", "/"), count, f"{ms:.3f}", f"{100 * ms / timeline['sum']:.1f}", f"{alone:.3f}"]
            for name, count, ms, alone in timeline["kernels"][:top]
        ]
        parts += [
            f"By stage, {mode} (summed kernel time; floors: matrix products at the measured bf16 matmul rate, scans "
            "at their compulsory traffic over the measured copy bandwidth):",
            table(
                ["stage", "kernels", "GPU ms (sum)", "% of kernel time", "alone ms", "floor ms", "x floor"],
                category_rows(timeline["kernels"], floors),
            ),
            f"Top {top} kernels, {mode}:",
            table(["kernel", "calls", "GPU ms", "% of kernel time", "alone ms"], kernel_rows),
        ]
        del engine
        torch.cuda.empty_cache()
    headers = [
        "mode",
        "kernels",
        "streams",
        "kernel time ms (sum)",
        "GPU busy ms (union)",
        "span ms",
        "idle in span ms",
        "one kernel alone ms",
        "mean kernels in flight",
    ]
    intro = (
        f"{dataset} size, batch 1, random weights: the kernels of one warmed-up call (one CUDA-graph replay) as the "
        "profiler saw them. `idle in span`: time between the first kernel's start and the last one's end with no "
        "kernel running (dependency and launch gaps between graph nodes). `alone`: time a kernel ran with no other "
        "beside it: all of it is on the critical path, so it is where a faster kernel shortens the replay one for one."
    )
    return "\n\n".join([intro, table(headers, rows), *parts])


# ---- 4. accuracy -----------------------------------------------------------------------------------------------


def agreement(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error of the logits, share of pixels with the same argmax)."""
    error = float((other.double() - reference.double()).norm() / reference.double().norm())
    return error, float((other.argmax(1) == reference.argmax(1)).float().mean())


def demo_inputs(model: MambaSeg, frames: int = 12) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Network inputs of synthetic frames (a seeded street scene with a tunnel), built by the Segmenter."""
    from mambaseg_core.synthetic import SceneConfig, SequenceConfig, generate_sequence

    height, width = model.config.image_size
    scene = SceneConfig(height=height, width=width, seed=31, duration_s=(frames + 1) / 20.0)
    window = scaled_num_events(height * width)  # as the model was trained
    seg = Segmenter(model, load_config(SegmenterConfig, {"window_events": window}), "cuda")
    inputs = []
    for frame in list(generate_sequence(replace(SequenceConfig(), scene=scene)))[1:]:
        seg.add_events(frame.events)
        prepared = seg.prepare(frame.rgb, frame.t_us + 1)
        inputs.append((prepared.image, prepared.events))
    return inputs


def official_fixture_case() -> tuple[str, MambaSeg, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The official fixture's model (through the official-checkpoint converter) and its two inputs."""
    data = torch.load(REFERENCE_FIXTURE, weights_only=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "best_model.pth"
        torch.save({"epoch": 1, "state_dict": data["state_dict"]}, path)
        model = load_official_checkpoint(path, image_size=tuple(data["image"].shape[-2:])).cuda().eval()
    inputs = [(data[f"image{k}"].float().cuda(), data[f"events{k}"].float().cuda()) for k in ("", "2")]
    return "official reference fixture (64x96 gray), its 2 inputs (3 frames)", model, inputs


def tensor_as_given(tensor: torch.Tensor) -> torch.Tensor:
    """The image or voxel grid given (InferenceEngine.image_stage0_from, class_ids_after)."""
    return tensor


def bench_accuracy(datasets: list[str], modes: list[str]) -> str:
    rows = []
    cases: list[tuple[str, MambaSeg, list[tuple[torch.Tensor, torch.Tensor]]]] = []
    for dataset in datasets:
        model = build_model(dataset)
        cases.append(
            (f"{dataset} random weights, 4 random inputs", model, [random_inputs(model, 1, s) for s in range(4)])
        )
    if REFERENCE_FIXTURE.exists():
        cases.append(official_fixture_case())
    demo = ROOT / "models" / "demo" / "mambaseg_demo.pt"
    if demo.exists():
        model = load_model(str(demo), device="cuda").eval()
        cases.append(("demo model, 12 synthetic frames", model, demo_inputs(model)))
    for label, model, inputs in cases:
        reference = InferenceEngine(copy.deepcopy(model))
        expected = [reference.logits(i, e) for i, e in inputs]
        for mode in modes:
            if mode == "fp32 eager":
                continue
            graph = ENGINE_MODES[mode].cuda_graph
            engine = make_engine(model, mode)
            errors, agree = [], []
            split_agree, split_same = [], []  # the node's path: the image part ahead, then the rest (graphs only)
            for (image, events), ref in zip(inputs, expected, strict=True):
                if graph:
                    ids = engine.class_ids(image, events).cpu()
                    errors.append(float("nan"))
                    agree.append(float((ids == ref.argmax(1).cpu()).float().mean()))
                    stage0 = engine.image_stage0_from(tensor_as_given, tensor=image)
                    split = engine.class_ids_after(stage0, tensor_as_given, tensor=events).cpu()
                    split_agree.append(float((split == ref.argmax(1).cpu()).float().mean()))
                    split_same.append(float((split == ids).float().mean()))
                else:
                    error, same = agreement(ref, engine.logits(image, events))
                    errors.append(error)
                    agree.append(same)
            worst = "n/a (ids only)" if graph else f"{max(errors):.2e}"
            rows.append([label, mode, worst, f"{100 * min(agree):.3f}"])
            if graph:
                ahead = f"{mode}, image part ahead ({100 * min(split_same):.3f} % the whole graph's ids)"
                rows.append([label, ahead, "n/a (ids only)", f"{100 * min(split_agree):.3f}"])
            print(rows[-1], flush=True)
            del engine
        del reference, model
        torch.cuda.empty_cache()
    return table(["inputs", "mode vs fp32 eager", "logits rel L2 (worst)", "argmax agreement % (worst)"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["DSEC", "DDD17"], choices=list(DATASETS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--frames", type=int, default=100, help="timed calls per row")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["fp32 eager", "fp32 graph", "bf16 graph branches", "fp16 graph branches"],
        choices=list(ENGINE_MODES),
        help="modes of the model/breakdown/accuracy",
    )
    parser.add_argument(
        "--e2e-modes",
        nargs="+",
        default=["fp32 graph", "fp16 graph branches"],
        choices=list(ENGINE_MODES),
        help="modes of the end-to-end section (a compiled mode costs 1-2 minutes of compilation per row)",
    )
    parser.add_argument(
        "--graph-modes",
        nargs="+",
        default=["fp16 graph branches"],
        choices=[name for name, mode in ENGINE_MODES.items() if mode.cuda_graph],
        help="modes of the graph-replay profile section",
    )
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/latency.py measures GPU inference: no CUDA device found")
    parts = [
        "Official MambaSeg architectures (DSEC: RGB 440x640, 11 classes; DDD17: gray 200x346, 6 classes), our CUDA "
        "selective scan, `InferenceEngine` modes: precision (fp32 = accuracy reference; bf16, fp16 matrix products) x "
        "eager / one CUDA graph per frame / torch.compile + CUDA graph. All times are wall-clock milliseconds on "
        "the host; the GPU is synchronised once per frame, when the class ids reach the host. Targets (issue #11, "
        "DSEC batch 1 end to end): p50 <= 5 ms, p99 <= 7 ms; DDD17 p50 <= 3 ms."
    ]
    sections: dict[str, tuple[str, Callable[[], str]]] = {
        "model": (
            "### Model only (inputs on the GPU -> class ids on the host)",
            lambda: bench_model_only(args.datasets, args.batches, args.modes, args.frames),
        ),
        "e2e": (
            "### End to end, batch 1 (EVT3 packet bytes + image bytes -> class ids on the host, through Segmenter)\n\n"
            "Per frame: decode 50 one-millisecond EVT3 packets, ring buffer, window, GPU voxel grid, crop to the "
            "network size, forward, ids to the host; `+ render` adds the palette and overlay on the CPU. "
            "`voxel` and `preprocess` are the host's time to queue that GPU work; `forward` waits for all of it.",
            lambda: bench_end_to_end(args.datasets, args.e2e_modes, args.frames),
        ),
        "realtime": (
            "### End to end in real time (the node's threads at the sensors' pace; packet bytes + image -> ids)\n\n"
            + " ".join((replay_in_real_time.__doc__ or "").split("\n\n")[0].split()),
            lambda: bench_real_time(args.datasets, args.e2e_modes, args.frames),
        ),
        "breakdown": (
            "### Where the time goes (eager forward, CUDA events per module)",
            lambda: bench_breakdown(args.datasets[0], args.modes, args.frames),
        ),
        "graph": (
            "### Where the time goes in the captured graph (one replay, profiler timeline)",
            lambda: bench_graph(args.datasets[0], args.graph_modes),
        ),
        "accuracy": (
            "### Accuracy of the optimised modes against fp32 eager",
            lambda: bench_accuracy(args.datasets, args.modes),
        ),
    }
    for name in args.sections:
        heading, run = sections[name]
        try:
            body = run()
        except Exception as exc:  # report what failed and keep the other sections
            body = f"FAILED: {type(exc).__name__}: {exc}"
            print(body, file=sys.stderr, flush=True)
        parts += [heading, body]
        print(f"{heading}\n\n{body}\n", flush=True)  # as each section ends: a run stopped later keeps it
    text = "\n\n".join(parts) + "\n"
    if not args.no_write:
        write_section("Real-time inference latency", text)


if __name__ == "__main__":
    main()
