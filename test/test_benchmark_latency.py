"""benchmarks/latency.py, the parts that need no GPU: the stage breakdown of a profiled CUDA-graph replay, and the
real-time replay's bookkeeping."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from seg_harness import TINY_MODEL

from mambaseg_core.config import load_config
from mambaseg_core.models import MambaSeg, load_model_config
from mambaseg_core.pipeline import Segmenter, SegmenterConfig
from mambaseg_core.pipeline.event_clock import EventStream

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def latency():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("latency_benchmark", BENCHMARKS / "latency.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


# Kernel names as the profiler reported them on an H100 (docs/benchmarks.md, truncated there to 100 characters).
NAMES = {
    "void mambaseg::scan_fwd_infer_kernel<__nv_bfloat16, 16, 4, 4, 2>(mambaseg::ScanParams)": "selective scan",
    "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float, false>(int, float": (
        "layer norm"
    ),
    "void at::native::index_elementwise_kernel<128, 4, at::native::flip_kernel_impl<at::native::OpaqueTyp": (
        "layout: flip / copy / cat / permute"
    ),
    "void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kernel_cuda(at::TensorIt": (
        "layout: flip / copy / cat / permute"
    ),
    "void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_bf16_256x128_64x3_nn_align2>(cutlass_80_te": (
        "matmul / conv"
    ),
    "void cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816fprop_optimized_bf16_128x128_32x5_nhwc_al": (
        "matmul / conv"
    ),
    "conv2d_c1_k1_nhwc": "matmul / conv",
    "void mambaseg::(anonymous namespace)::scan_fwd_resident_kernel<__half, false, 2>(mambaseg::ScanParams, int)": (
        "selective scan"
    ),
    "void mambaseg::carry_kernel<false>(float const*, float*, int, int, int)": "selective scan",
    "_conv_silu_cross_scan_kernel": "fused scan orders / merges",
    "_add_layer_norm_2d_kernel": "layer norm",
    "_gate_hidden_kernel": "attention gates",
    "_joint_spatial_gate_kernel": "attention gates",
    "nvjet_sm90_hsh_64x56_64x14_2x4_h_bz_TNT": "matmul / conv",
    "triton_red_fused_add_flip_native_layer_norm_permute_select_slice_transpose_view_6": "layer norm",
    "triton_poi_fused_convolution_copy_flip_select_silu_slice_transpose_view_1": "layout: flip / copy / cat / permute",
    "triton_poi_fused_clone_exp_neg_permute_selective_scan_infer_split_with_sizes_view_2": (
        "layout: flip / copy / cat / permute"
    ),
    "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, std::array<cha": (
        "element-wise and other"
    ),
    "void at::native::(anonymous namespace)::upsample_bilinear2d_nhwc_out_frame<float, float>(float, floa": (
        "element-wise and other"
    ),
}


@pytest.mark.parametrize(("name", "category"), NAMES.items())
def test_kernel_category(latency, name, category):
    assert latency.kernel_category(name) == category


def test_category_rows_sum_per_stage_largest_first_with_floor_ratios(latency):
    kernels = [
        ("void mambaseg::scan_fwd_infer_kernel<float, 16, 8, 1, 2>(mambaseg::ScanParams)", 10, 3.0, 1.0),
        ("void mambaseg::scan_fwd_infer_kernel<float, 1, 8, 8, 1>(mambaseg::ScanParams)", 24, 1.0, 0.25),
        ("vectorized_layer_norm_kernel<float, float, false>", 126, 2.0, 0.0),
        ("some_elementwise_kernel", 5, 0.5, 0.5),
    ]
    rows = latency.category_rows(kernels, {"selective scan": 0.5, "matmul / conv": 0.1})
    assert rows == [
        ["selective scan", 34, "4.00", "61.5", "1.25", "0.500", "8.0x"],
        ["layer norm", 126, "2.00", "30.8", "0.00", "n/a", "n/a"],
        ["element-wise and other", 5, "0.50", "7.7", "0.50", "n/a", "n/a"],
    ]


def test_timeline_summary_counts_union_and_the_time_each_kernel_ran_alone(latency):
    # stream 1: a [0, 10), b [10, 14) back to back (no overlap); stream 2: c [5, 12); idle 14-20; a again [20, 23).
    spans = [("a", 1, 0.0, 10.0), ("b", 1, 10.0, 14.0), ("c", 2, 5.0, 12.0), ("a", 1, 20.0, 23.0)]
    summary = latency.timeline_summary(spans)
    assert summary["count"] == 4 and summary["streams"] == 2
    assert summary["sum"] == pytest.approx(0.024) and summary["span"] == pytest.approx(0.023)
    assert summary["union"] == pytest.approx(0.017)  # 0-14 and 20-23
    # alone: a 0-5 and 20-23, b 12-14, c never (a until 10, then b from 10)
    assert summary["alone"] == pytest.approx(0.010)
    assert summary["kernels"] == [
        ("a", 2, pytest.approx(0.013), pytest.approx(0.008)),
        ("c", 1, pytest.approx(0.007), pytest.approx(0.0)),
        ("b", 1, pytest.approx(0.004), pytest.approx(0.002)),
    ]


def test_real_time_replay_times_each_frame_from_the_packet_that_completes_its_window(latency):
    """The node's two threads at the sensors' pace with a tiny CPU model: one latency per frame after the warm-up,
    made of the completing packet's decoding, the hand-over and the segmentation; every packet decoded once."""
    torch.manual_seed(0)
    height, width = TINY_MODEL["image_size"]
    seg = Segmenter(
        MambaSeg(load_model_config(TINY_MODEL)).eval(),
        load_config(SegmenterConfig, {"window_events": 2000, "output_resolution": "network"}),
        "cpu",
    )
    stream = latency.synthetic_stream((height, width), 200_000, 8)
    EventStream(sensor_size=(height, width)).decode("evt3", stream[0][0])  # the decoder compiled, as the benchmark does
    events = EventStream(sensor_size=(height, width))
    image = np.zeros((height, width, 3), np.uint8)
    ms = latency.replay_in_real_time(seg, events, stream, image, warmup=2)
    assert set(ms) == {"latency", *latency.REAL_TIME_PARTS}
    assert all(len(values) == 8 - 1 - 2 for values in ms.values())  # the last frame's stamp has no packet after it
    parts = np.sum([ms[key] for key in ("last_decode", "handover", "segment")], axis=0)
    # The completing packet falls due 1 ms after the image: the latency starts with its decoding (or, when the
    # worker is still busy with an earlier frame, at the image's due time, later than the parts' sum allows).
    assert np.all(np.asarray(ms["latency"]) <= parts + 1e-6) and np.all(np.asarray(ms["latency"]) > 0)
    assert min(ms[key][0] for key in ("last_decode", "segment")) > 0
    assert events._evt3.stats.events == sum(50 * 200 for _ in stream)  # every packet decoded: 200 events per ms
