"""benchmarks/latency.py's stage breakdown of a profiled CUDA-graph replay: the parts that need no GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

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
        ("void mambaseg::scan_fwd_infer_kernel<float, 16, 8, 1, 2>(mambaseg::ScanParams)", 10, 3.0),
        ("void mambaseg::scan_fwd_infer_kernel<float, 1, 8, 8, 1>(mambaseg::ScanParams)", 24, 1.0),
        ("vectorized_layer_norm_kernel<float, float, false>", 126, 2.0),
        ("some_elementwise_kernel", 5, 0.5),
    ]
    rows = latency.category_rows(kernels, {"selective scan": 0.5, "matmul / conv": 0.1})
    assert rows == [
        ["selective scan", 34, "4.00", "61.5", "0.500", "8.0x"],
        ["layer norm", 126, "2.00", "30.8", "n/a", "n/a"],
        ["element-wise and other", 5, "0.50", "7.7", "n/a", "n/a"],
    ]
