"""Selective scan: every fast backend against the sequential reference, forward and backward.

CPU tests cover the `torch` backend and the API; `@pytest.mark.cuda` tests cover our CUDA kernel.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scan_launch_rule import DEFAULT_CONFIG_CASES

from mambaseg_core.ops.selective_scan import (
    BackendUnavailableError,
    available_backends,
    selective_scan,
    selective_scan_reference,
)

# module attribute `selective_scan` is the function, so reach the submodule through importlib
torch_scan = importlib.import_module("mambaseg_core.ops.selective_scan.torch_scan")
mamba_ssm_scan = importlib.import_module("mambaseg_core.ops.selective_scan.mamba_ssm_scan")

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: the cuda backend runs our own kernel"
)

# (forward, gradient) tolerances (rtol, atol) relative to tensors normalised by their max |value|.
TOLERANCES = {
    torch.float64: ((1e-10, 1e-10), (1e-9, 1e-9)),
    torch.float32: ((2e-5, 2e-5), (2e-4, 2e-4)),
    torch.float16: ((2e-5, 2e-5), (2e-3, 2e-3)),  # same rounded inputs, fp32 maths; grads returned in fp16
    torch.bfloat16: ((2e-5, 2e-5), (1e-2, 1e-2)),  # grads returned in bf16
}


def make_inputs(
    batch: int,
    channels: int,
    state: int,
    length: int,
    groups: int,
    *,
    with_d: bool = True,
    with_bias: bool = True,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
    decay_scale: float = 1.0,
    softplus: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Random scan inputs shaped like SS2D's: A = -exp(.) < 0; delta around the softplus knee, or (without
    softplus) a small positive step, since a negative dt makes the recurrence grow without bound."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device)

    io_dtype = dtype  # u, delta, B, C in the tested dtype; A, D, bias stay fp32 (fp64 for gradcheck)
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    delta = rand(batch, channels, length, scale=0.5, shift=-1.0)
    return {
        "u": rand(batch, channels, length).to(io_dtype),
        "delta": (delta if softplus else 0.2 * delta.abs()).to(io_dtype),
        "A": (-torch.exp(rand(channels, state, scale=0.5)) * decay_scale).to(param_dtype),
        "B": rand(batch, groups, state, length).to(io_dtype),
        "C": rand(batch, groups, state, length).to(io_dtype),
        "D": rand(channels).to(param_dtype) if with_d else None,
        "delta_bias": rand(channels, scale=0.3).to(param_dtype) if with_bias else None,
    }


def run_with_grads(
    inputs: dict[str, torch.Tensor | None], backend: str, softplus: bool, seed: int = 1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and the gradient of <y, dy> (dy random) with respect to every given input."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items() if v is not None}
    args = {k: leaves.get(k) for k in inputs}
    y = selective_scan(**args, delta_softplus=softplus, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=gen, dtype=y.dtype).to(y.device)
    grads = torch.autograd.grad(y, list(leaves.values()), dy)
    return y.detach(), dict(zip(leaves, grads, strict=True))


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: tuple[float, float]) -> None:
    """Compare after scaling both by max |expected| so tolerances mean 'relative to the tensor's size'."""
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    scale = expected.double().abs().max().clamp_min(1e-30)
    a, e = actual.double() / scale, expected.double() / scale
    print(f"{name}: max |diff| / max |ref| = {(a - e).abs().max().item():.3e}")
    torch.testing.assert_close(a, e, rtol=tol[0], atol=tol[1], msg=lambda m: f"{name}: {m}")


def compare_backends(
    inputs: dict[str, torch.Tensor | None], backend: str, oracle: str, softplus: bool, dtype: torch.dtype
) -> None:
    fwd_tol, grad_tol = TOLERANCES[dtype]
    y, grads = run_with_grads(inputs, backend, softplus)
    y_ref, grads_ref = run_with_grads(inputs, oracle, softplus)
    assert y.dtype == y_ref.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close("y", y, y_ref, fwd_tol)
    for name, grad in grads.items():
        assert grad.dtype == grads_ref[name].dtype, name
        assert_close(f"d{name}", grad, grads_ref[name], grad_tol)


# --------------------------------------------------------------------------------------- torch backend (CPU)

# (batch, channels, N, L, groups, with_d, with_bias, softplus)
CPU_CASES = [
    (2, 8, 16, 37, 2, True, True, True),
    (2, 12, 4, 77, 4, False, False, False),
    (1, 6, 16, 286, 1, True, False, True),
    (1, 4, 1, 4350, 4, True, True, True),  # DDD17 stage-0 token count, encoder-like N = 1
    (1, 3, 2, 1, 1, True, True, False),  # a single step
]


@pytest.mark.parametrize(
    ("batch", "channels", "state", "length", "groups", "with_d", "with_bias", "softplus"), CPU_CASES
)
def test_torch_backend_matches_reference(batch, channels, state, length, groups, with_d, with_bias, softplus):
    inputs = make_inputs(batch, channels, state, length, groups, with_d=with_d, with_bias=with_bias, softplus=softplus)
    compare_backends(inputs, "torch", "reference", softplus, torch.float32)


def test_torch_backend_in_place_path_without_autograd_matches_reference():
    # Without autograd the torch backend reuses its intermediates in place: a separate code path.
    inputs = make_inputs(2, 8, 16, 301, 4)
    with torch.no_grad():
        y = selective_scan(**inputs, delta_softplus=True, backend="torch")
        y_ref = selective_scan(**inputs, delta_softplus=True, backend="reference")
    assert_close("y", y, y_ref, TOLERANCES[torch.float32][0])


def test_torch_backend_carries_state_across_segments(monkeypatch):
    # A tiny segment budget cuts L = 203 into 13 segments of 16 steps, each with its own chunking.
    monkeypatch.setitem(torch_scan._SEGMENT_ELEMENTS, "cpu", 1)
    inputs = make_inputs(2, 4, 3, 203, 2)
    compare_backends(inputs, "torch", "reference", True, torch.float32)
    with torch.no_grad():
        y = selective_scan(**inputs, delta_softplus=True, backend="torch")
    assert_close(
        "y (no grad)", y, selective_scan_reference(**inputs, delta_softplus=True), TOLERANCES[torch.float32][0]
    )


def test_torch_backend_gradcheck_float64():
    inputs = make_inputs(1, 4, 3, 11, 2, dtype=torch.float64)
    names = list(inputs)

    def scan(*tensors: torch.Tensor) -> torch.Tensor:
        return selective_scan(**dict(zip(names, tensors, strict=True)), delta_softplus=True, backend="torch")

    leaves = tuple(inputs[k].clone().requires_grad_(True) for k in names)  # type: ignore[union-attr]
    assert scan(*leaves).dtype == torch.float64
    assert torch.autograd.gradcheck(scan, leaves)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_backend_low_precision_inputs(dtype):
    inputs = make_inputs(2, 8, 16, 77, 4, dtype=dtype)
    compare_backends(inputs, "torch", "reference", True, dtype)


@pytest.mark.parametrize("decay_scale", [1e3, 1e-4])
def test_torch_backend_stable_for_strong_and_weak_decay(decay_scale):
    # |A| * dt up to ~1e3 per step (states vanish within a step) or ~1e-5 (states accumulate over all of L).
    inputs = make_inputs(1, 2, 4, 4350, 2, decay_scale=decay_scale)
    y = selective_scan(**inputs, delta_softplus=True, backend="torch")
    y_ref = selective_scan(**inputs, delta_softplus=True, backend="reference")
    assert_close("y", y, y_ref, TOLERANCES[torch.float32][0])


# --------------------------------------------------------------------------------------- API


def test_cpu_auto_uses_numba_for_inference_and_torch_for_gradients():
    assert available_backends("cpu") == ["numba", "torch", "reference"]
    inputs = make_inputs(1, 4, 2, 33, 2)
    with torch.no_grad():
        assert torch.equal(selective_scan(**inputs), selective_scan(**inputs, backend="numba"))
    leaf = inputs["u"].clone().requires_grad_(True)
    y = selective_scan(**{**inputs, "u": leaf})
    assert y.requires_grad and torch.equal(y.detach(), selective_scan(**inputs, backend="torch"))
    double = {k: v.double() if v is not None else None for k, v in inputs.items()}
    with torch.no_grad():
        assert torch.equal(selective_scan(**double), selective_scan(**double, backend="torch"))


@pytest.mark.parametrize(
    ("batch", "channels", "state", "length", "groups", "with_d", "with_bias", "softplus"), CPU_CASES
)
def test_numba_backend_matches_reference(batch, channels, state, length, groups, with_d, with_bias, softplus):
    inputs = make_inputs(batch, channels, state, length, groups, with_d=with_d, with_bias=with_bias, softplus=softplus)
    with torch.no_grad():
        y = selective_scan(**inputs, delta_softplus=softplus, backend="numba")
        expected = selective_scan(**inputs, delta_softplus=softplus, backend="reference")
    assert y.dtype == torch.float32 and y.shape == expected.shape
    assert_close("y (numba)", y, expected, (2e-5, 2e-5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_numba_backend_low_precision_inputs(dtype):
    inputs = make_inputs(2, 6, 16, 200, 3, dtype=dtype)
    with torch.no_grad():
        y = selective_scan(**inputs, delta_softplus=True, backend="numba")
        expected = selective_scan(**inputs, delta_softplus=True, backend="reference")
    assert_close(f"y (numba, {dtype})", y, expected, (2e-5, 2e-5))


@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_exactly_the_upcast_result(backend, dtype):
    # Every backend upcasts u, delta, B, C exactly and computes in fp32, so the models never cast scan inputs to
    # fp32 themselves (the official TSSM does; models/ssm.py). The cuda backend: test_cuda_backend_matches_reference.
    inputs = make_inputs(2, 6, 16, 90, 3, dtype=dtype)
    upcast = {k: v.float() if v is not None and v.dtype == dtype else v for k, v in inputs.items()}
    with torch.no_grad():
        y = selective_scan(**inputs, delta_softplus=True, backend=backend)
        y_upcast = selective_scan(**upcast, delta_softplus=True, backend=backend)
    assert y.dtype == torch.float32 and torch.equal(y, y_upcast)


@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_y_in_input_dtype_is_the_float32_y_rounded(backend, dtype):
    # The CPU backends compute y in float32 and round it; the cuda backend's kernels store it rounded
    # (test_cuda_inference_kernels_store_y_in_the_input_dtype).
    inputs = make_inputs(2, 6, 16, 90, 3, dtype=dtype)
    with torch.no_grad():
        y32 = selective_scan(**inputs, delta_softplus=True, backend=backend)
        y = selective_scan(**inputs, delta_softplus=True, backend=backend, y_in_input_dtype=True)
    assert y32.dtype == torch.float32 and y.dtype == dtype and torch.equal(y, y32.to(dtype))


def test_numba_exp_is_accurate_over_the_float32_range_and_keeps_nan_and_overflow():
    from mambaseg_core.ops.selective_scan.numba_scan import _exp  # the scan's exp (a polynomial, no libm call)

    x = np.concatenate([np.linspace(-103.0, 88.7, 20_001), np.linspace(-1.0, 1.0, 2_001)])
    got = np.array([_exp(v) for v in x])
    assert np.max(np.abs(got - np.exp(x)) / np.exp(x)) < 1e-9
    assert np.float32(_exp(-1e6)) == 0.0 and np.float32(_exp(-np.inf)) == 0.0  # underflows as exp does
    with np.errstate(over="ignore"):  # the float32 cast overflows to inf, which is the point
        assert np.isinf(np.float32(_exp(100.0))) and np.isinf(np.float32(_exp(np.inf)))
    assert np.isnan(_exp(np.nan))


def test_numba_backend_is_forward_only_and_cpu_only():
    inputs = make_inputs(1, 2, 4, 9, 1)
    inputs["u"].requires_grad_(True)
    with pytest.raises(BackendUnavailableError, match="forward-only"):
        selective_scan(**inputs, backend="numba")
    with torch.no_grad():
        selective_scan(**inputs, backend="numba")  # the same inputs without autograd are fine


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where no CUDA GPU is present")
def test_explicit_cuda_backend_without_gpu_raises_clear_error():
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU"):
        selective_scan(**make_inputs(1, 2, 1, 5, 1), backend="cuda")
    assert "cuda" not in available_backends("cuda")


@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is not None, reason="mamba_ssm is installed here")
def test_missing_mamba_ssm_raises_install_hint():
    with pytest.raises(BackendUnavailableError, match="pip install mamba-ssm"):
        selective_scan(**make_inputs(1, 2, 1, 5, 1), backend="mamba_ssm")


def test_mamba_ssm_installed_without_its_kernel_is_unavailable_saying_how_to_fix_it(monkeypatch):
    """mamba_ssm >= 2.3 imports without its compiled kernel (selective_scan_cuda = None) and fails only when called:
    the backend must count as unavailable, not be picked by `auto` and fail mid-forward."""
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_cuda = None
    interface.selective_scan_fn = lambda *args, **kwargs: None
    package, ops = types.ModuleType("mamba_ssm"), types.ModuleType("mamba_ssm.ops")
    ops.selective_scan_interface = interface
    for name, module in (("mamba_ssm", package), ("mamba_ssm.ops", ops), (interface.__name__, interface)):
        monkeypatch.setitem(sys.modules, name, module)
    with pytest.raises(BackendUnavailableError, match="MAMBA_KEEP_CUDA_BUILD=TRUE"):
        mamba_ssm_scan.load_mamba_ssm()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("with_d", "with_bias", "softplus"), [(True, True, True), (False, False, False)])
def test_mamba_ssm_adapter_passes_every_argument_through(with_d, with_bias, softplus, dtype):
    """The adapter around mamba_ssm's selective_scan_fn, with a stand-in that has its signature and computes the
    reference: the same result, so every argument reaches its parameter (mamba_ssm itself is not installed here).
    Half-precision inputs reach it widened to float32: mamba_ssm writes y in its inputs' dtype, and on an H200 its
    bf16 outputs were 3e-3 off the float32 reference."""
    calls = []

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        calls.append((z, {x.dtype for x in (u, delta, A, B, C)}, None if D is None else D.dtype))
        return selective_scan_reference(u, delta, A, B, C, D, delta_bias, delta_softplus)

    scan = mamba_ssm_scan.make_mamba_ssm_scan(selective_scan_fn)
    inputs = make_inputs(2, 4, 3, 9, 2, with_d=with_d, with_bias=with_bias, dtype=dtype)
    expected = selective_scan_reference(**inputs, delta_softplus=softplus)
    y = scan(**inputs, delta_softplus=softplus)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    assert calls == [(None, {torch.float32}, torch.float32 if with_d else None)]


def _mamba_ssm_unavailable() -> str | None:
    """Why the real mamba_ssm backend cannot run here, or None when it can."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU: mamba_ssm's kernels run on one"
    try:
        mamba_ssm_scan.load_mamba_ssm()
    except BackendUnavailableError as exc:
        return f"mamba_ssm is not usable here: {exc}"
    return None


@pytest.mark.cuda
@pytest.mark.skipif(_mamba_ssm_unavailable() is not None, reason=str(_mamba_ssm_unavailable()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("state", "length", "groups"), [(1, 77, 1), (16, 286, 4), (16, 1025, 2)])
def test_mamba_ssm_backend_matches_reference(dtype, state, length, groups):
    """The real mamba_ssm package, where it is installed and works: forward and gradients against the reference,
    and `auto` prefers our cuda backend to it."""
    inputs = make_inputs(2, 8, state, length, groups, dtype=dtype, device="cuda", seed=state + length)
    compare_backends(inputs, "mamba_ssm", "reference", True, dtype)
    assert available_backends("cuda").index("mamba_ssm") > available_backends("cuda").index("cuda")


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="unknown selective-scan backend 'fast'"):
        selective_scan(**make_inputs(1, 2, 1, 5, 1), backend="fast")


@pytest.mark.parametrize(
    ("name", "bad_shape", "message"),
    [
        ("u", (2, 5), "u must be"),
        ("delta", (1, 4, 6), "delta must"),
        ("A", (3, 2), "A must be"),
        ("B", (1, 2, 3, 5), "B must be"),
        ("C", (1, 2, 2, 4), "C must be"),
        ("D", (5,), "D must be"),
        ("delta_bias", (4, 1), "delta_bias must be"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_tensor(name, bad_shape, message):
    inputs = make_inputs(1, 4, 2, 5, 2)
    inputs[name] = torch.zeros(bad_shape)
    with pytest.raises(ValueError, match=message):
        selective_scan(**inputs)


def test_groups_must_divide_channels():
    inputs = make_inputs(1, 4, 2, 5, 2)
    inputs["B"], inputs["C"] = torch.zeros(1, 3, 2, 5), torch.zeros(1, 3, 2, 5)
    with pytest.raises(ValueError, match="divisible by groups"):
        selective_scan(**inputs)


# --------------------------------------------------------------------------------------- cuda backend (GPU)

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize(
    ("state", "length", "groups"),
    [(1, 1, 1), (1, 2049, 4), (4, 77, 2), (4, 4350, 1), (8, 600, 4), (16, 286, 4), (16, 1025, 2)],
)
def test_cuda_backend_matches_reference(dtype, state, length, groups):
    inputs = make_inputs(2, 8, state, length, groups, dtype=dtype, device="cuda", seed=state + length)
    compare_backends(inputs, "cuda", "reference", True, dtype)


@pytest.mark.cuda
@needs_cuda
def test_cuda_backend_without_optional_inputs():
    inputs = make_inputs(1, 6, 3, 999, 3, with_d=False, with_bias=False, device="cuda", softplus=False)
    compare_backends(inputs, "cuda", "reference", False, torch.float32)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize(
    ("batch", "channels", "state", "length", "groups"),
    [
        (1, 384, 1, 17600, 4),  # DSEC stage-0 encoder scan
        (2, 8, 16, 20000, 2),  # longest sequences we support
        (1, 4400, 16, 192, 2),  # TSSM-like: many channels, short L
    ],
)
def test_cuda_backend_long_and_wide_against_torch_backend(batch, channels, state, length, groups):
    inputs = make_inputs(batch, channels, state, length, groups, device="cuda")
    y, grads = run_with_grads(inputs, "cuda", True)
    y_ref, grads_ref = run_with_grads(inputs, "torch", True)
    assert_close("y", y, y_ref, (1e-4, 1e-4))
    for name, grad in grads.items():
        assert_close(f"d{name}", grad, grads_ref[name], (1e-3, 1e-3))


@pytest.mark.cuda
@needs_cuda
def test_cuda_forward_is_deterministic_and_auto_picks_it():
    assert available_backends("cuda")[0] == "cuda"
    inputs = make_inputs(1, 64, 16, 5000, 4, device="cuda")
    first = selective_scan(**inputs, delta_softplus=True, backend="cuda")
    assert torch.equal(first, selective_scan(**inputs, delta_softplus=True))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize(
    ("state", "length", "groups"),
    [(1, 1, 1), (1, 4350, 4), (4, 129, 2), (8, 257, 4), (16, 192, 2), (16, 1025, 4), (16, 17601, 1)],
)
def test_cuda_inference_kernel_matches_reference(dtype, state, length, groups):
    # Without autograd the one-pass inference kernel runs; lengths cover 1, 2, many 512-step chunks and odd tails.
    inputs = make_inputs(1, 8, state, length, groups, dtype=dtype, device="cuda", seed=7 * state + length)
    with torch.no_grad():
        y = selective_scan(**inputs, delta_softplus=True, backend="cuda")
        y_ref = selective_scan(**inputs, delta_softplus=True, backend="reference" if length < 5000 else "torch")
        y_train = training_kernel_output(inputs)
    assert y.dtype == torch.float32
    assert_close("y (inference kernel)", y, y_ref, (1e-4, 1e-4))
    assert_close("y (inference vs training kernel)", y, y_train, (2e-5, 2e-5))


def training_kernel_output(inputs: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """The training kernels' forward on the same inputs (a leaf requiring grad routes the call there)."""
    with torch.enable_grad():
        u = inputs["u"].detach().clone().requires_grad_(True)
        return selective_scan(**{**inputs, "u": u}, delta_softplus=True, backend="cuda").detach()


@pytest.mark.cuda
@needs_cuda
def test_cuda_inference_kernel_without_optional_inputs_and_in_a_cuda_graph():
    inputs = make_inputs(2, 5, 16, 700, 5, with_d=False, with_bias=False, device="cuda", softplus=False)
    with torch.no_grad():
        expected = selective_scan(**inputs, backend="reference")
        selective_scan(**inputs, backend="cuda")  # build + warm up outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = selective_scan(**inputs, backend="cuda")
        captured.zero_()
        graph.replay()
    torch.cuda.synchronize()
    assert_close("y (graph replay)", captured, expected, (1e-4, 1e-4))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_inference_kernel_reads_b_and_c_slices_in_place(dtype, batch):
    # The SSM hands B and C over as slices of one projection (batch, groups, R + 2N, L): the inference kernel reads
    # them where they are (one allocation, y's), and copies what it cannot read (here a B whose steps are strided).
    inputs = make_inputs(batch, 8, 16, 300, 2, dtype=dtype, device="cuda", seed=11 + batch)
    B, C = inputs["B"], inputs["C"]
    rank = 3
    projection = torch.cat([torch.randn_like(B[:, :, :rank]), B, C], dim=2)
    B_slice, C_slice = projection[:, :, rank : rank + 16], projection[:, :, rank + 16 :]
    assert not B_slice.is_contiguous() and not C_slice.is_contiguous()
    B_strided_steps = B.transpose(-1, -2).contiguous().transpose(-1, -2)
    with torch.no_grad():
        expected = selective_scan(**inputs, delta_softplus=True, backend="cuda")
        allocations = torch.cuda.memory_stats()["allocation.all.allocated"]
        in_place = selective_scan(**{**inputs, "B": B_slice, "C": C_slice}, delta_softplus=True, backend="cuda")
        assert torch.cuda.memory_stats()["allocation.all.allocated"] - allocations == 1  # y only: no copy
        copied = selective_scan(**{**inputs, "B": B_strided_steps, "C": C_slice}, delta_softplus=True, backend="cuda")
    assert torch.equal(in_place, expected)
    assert torch.equal(copied, expected)


# --------------------------------------------------------------------------------------- inference configurations (GPU)

cuda_scan = importlib.import_module("mambaseg_core.ops.selective_scan.cuda_scan")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("state", "groups"), [(16, 2), (13, 1), (1, 4)])  # 13: a last pass of 1 of 2 or 4 states
@pytest.mark.parametrize("length", [1, 37, 4097, 17601])
def test_cuda_inference_configurations_match_reference(dtype, state, groups, length):
    # Every compiled configuration (items per lane, warps per row, states per pass) on the same inputs.
    inputs = make_inputs(2, 4, state, length, groups, dtype=dtype, device="cuda", seed=3 * state + length)
    configs = cuda_scan.inference_configs(dtype, state)
    assert cuda_scan.default_inference_config(2 * 4, length, dtype, state) in configs
    assert len(configs) > 4, f"{dtype}, N={state}: expected tuning variants beside the 4 defaults, got {configs}"
    with torch.no_grad():
        y_ref = selective_scan(**inputs, delta_softplus=True, backend="reference" if length < 5000 else "torch")
        outputs = {c: cuda_scan.selective_scan_infer_config(**inputs, delta_softplus=True, config=c) for c in configs}
    for config, y in outputs.items():
        assert y.dtype == torch.float32 and y.shape == y_ref.shape
        assert_close(f"y {config}", y, y_ref, (1e-4, 1e-4))
        # States per pass only regroup independent work: y sums the states in the same order.
        one_state = outputs.get(config._replace(states=1))
        if one_state is not None:
            assert_close(f"y {config} vs states=1", y, one_state, (1e-6, 1e-6))


@pytest.mark.cuda
@needs_cuda
def test_cuda_inference_configuration_not_compiled_raises_naming_the_compiled_ones():
    inputs = make_inputs(1, 4, 16, 100, 2, dtype=torch.float16, device="cuda")
    tuned = cuda_scan.InferConfig(items=8, warps=4, states=4)
    assert tuned in cuda_scan.inference_configs(torch.float32, 16)
    assert tuned not in cuda_scan.inference_configs(torch.float16, 16)  # fp16: the rule's picks, no sweep variants
    with torch.no_grad(), pytest.raises(ValueError, match=r"not compiled .* compiled \(items, warps, states\): \(4"):
        cuda_scan.selective_scan_infer_config(**inputs, delta_softplus=True, config=tuned)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype_name", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize(("rows_state_length", "expected"), DEFAULT_CONFIG_CASES)
def test_cuda_inference_runs_its_declared_default_configuration(dtype_name, rows_state_length, expected):
    # The rule picks the configuration of scan_launch_rule.py, and the backend's inference launch is that
    # configuration (bit-identical y: a different steps-per-lane split would round differently), or where
    # uses_resident_kernel says so the state-resident kernel in its default plan.
    channels, state, length = rows_state_length
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    default = cuda_scan.default_inference_config(channels, length, dtype, state)
    assert default == cuda_scan.InferConfig(*expected[dtype_name]), f"{dtype}, {channels} rows, N={state}, L={length}"
    inputs = make_inputs(1, channels, state, length, 2, dtype=dtype, device="cuda", seed=state + length)
    with torch.no_grad():
        y = selective_scan(**inputs, delta_softplus=True, backend="cuda")
        if cuda_scan.uses_resident_kernel(channels, length, state):
            y_default = cuda_scan.selective_scan_resident(**inputs, delta_softplus=True)
        else:
            y_default = cuda_scan.selective_scan_infer_config(**inputs, delta_softplus=True, config=default)
    assert torch.equal(y, y_default)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize(
    ("rows", "length", "state", "resident", "plan"),
    [
        (768, 17600, 16, True, (160, 110, 2)),  # DSEC stage-0 CSIM: 48 row-warps, segments to about 6144 warps
        (35200, 192, 16, True, (192, 1, 2)),  # DSEC stage-0 TSSM: 2200 row-warps, one segment
        (1536, 4400, 16, True, (96, 46, 2)),  # DSEC stage-1 CSIM: 96 row-warps x 35 segments of 128 steps
        (768, 4350, 16, False, None),  # DDD17 stage-0 CSIM: the warp scan (48 x 34 warps)
        (3072, 1120, 16, False, None),  # DSEC stage-2 CSIM: the warp scan (192 x 9 warps)
        (8800, 384, 16, False, None),
        (35200, 192, 8, False, None),  # N < 9: never
    ],
)
def test_cuda_default_launch_takes_the_resident_kernel_where_the_sweep_says(rows, length, state, resident, plan):
    assert cuda_scan.uses_resident_kernel(rows, length, state) is resident
    if plan is not None:
        assert tuple(cuda_scan.resident_plan(1, rows, 2 if rows > 8192 else 4, length)) == plan
    inputs = make_inputs(1, 64, state, length if length < 5000 else 4096, 2, device="cuda")
    with torch.no_grad():  # the backend's launch is what the rule says (bit-identical to that kernel called directly)
        y = selective_scan(**inputs, delta_softplus=True, backend="cuda")
        rule = cuda_scan.default_inference_config(64, inputs["u"].shape[-1], torch.float32, state)
        assert torch.equal(y, cuda_scan.selective_scan_infer_config(**inputs, delta_softplus=True, config=rule))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize(
    ("batch", "channels", "groups", "length"),
    [
        (1, 768, 4, 4350),  # DDD17 CSIM0: whole warps, long rows
        (2, 70, 2, 301),  # each group's second warp has 3 lanes; L ends inside a tile
        (1, 4400, 2, 192),  # TSSM-like: many rows, 2200 channels a group (68.75 warps)
    ],
)
@pytest.mark.parametrize("segment_len", [0, 32, 1000])
@pytest.mark.parametrize("lanes_per_row", [1, 2, 4])
def test_cuda_resident_kernel_matches_reference(dtype, batch, channels, groups, length, segment_len, lanes_per_row):
    inputs = make_inputs(batch, channels, 16, length, groups, dtype=dtype, device="cuda", seed=channels + length)
    with torch.no_grad():
        y = cuda_scan.selective_scan_resident(
            **inputs, delta_softplus=True, segment_len=segment_len, lanes_per_row=lanes_per_row
        )
        y_ref = selective_scan(**inputs, delta_softplus=True, backend="reference" if length < 1000 else "torch")
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    assert_close(f"y (segments of {segment_len}, {lanes_per_row} lanes a row)", y, y_ref, (1e-4, 1e-4))
    plan = cuda_scan.resident_plan(batch, channels, groups, length)
    assert (
        plan.segment_len % 32 == 0
        and (plan.segments - 1) * plan.segment_len < length <= plan.segments * plan.segment_len
    )
    assert plan.lanes_per_row in (1, 2, 4)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize(("state", "length"), [(1, 301), (1, 4350), (16, 301), (16, 4350)])
def test_cuda_inference_kernels_store_y_in_the_input_dtype(dtype, state, length):
    """With y_in_input_dtype every inference kernel stores y rounded to the inputs' dtype, bit for bit the float32 y
    rounded (odd rows end off the vector stores): the default launch, every compiled warp-scan configuration and the
    state-resident kernel; the training kernels' y is cast after."""
    inputs = make_inputs(1, 70, state, length, 2, dtype=dtype, device="cuda", seed=state + length)
    with torch.no_grad():
        y32 = selective_scan(**inputs, delta_softplus=True, backend="cuda")
        pairs = [(y32, selective_scan(**inputs, delta_softplus=True, backend="cuda", y_in_input_dtype=True))]
        for config in cuda_scan.inference_configs(dtype, state):
            kwargs = dict(**inputs, delta_softplus=True, config=config)
            pairs.append(
                (
                    cuda_scan.selective_scan_infer_config(**kwargs),
                    cuda_scan.selective_scan_infer_config(**kwargs, y_in_input_dtype=True),
                )
            )
        if state >= 9:
            for lanes_per_row in (1, 2, 4):
                kwargs = dict(**inputs, delta_softplus=True, segment_len=96, lanes_per_row=lanes_per_row)
                pairs.append(
                    (
                        cuda_scan.selective_scan_resident(**kwargs),
                        cuda_scan.selective_scan_resident(**kwargs, y_in_input_dtype=True),
                    )
                )
    for wide, narrow in pairs:
        assert wide.dtype == torch.float32 and narrow.dtype == dtype and torch.equal(narrow, wide.to(dtype))
    trained = {k: v.clone().requires_grad_() if k == "u" else v for k, v in inputs.items()}
    y = selective_scan(**trained, delta_softplus=True, backend="cuda", y_in_input_dtype=True)
    assert y.dtype == dtype and y.requires_grad


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("state", [1, 16])
@pytest.mark.parametrize("kernel", ["warp scan", "state-resident"])
def test_cuda_inference_softplus_is_accurate_on_every_branch(dtype, state, kernel):
    """The inference kernels' dt = softplus(delta) (fp16/bf16: a series below x = -3, the hardware log above, x past
    20 as it is; fp32: log1pf), read out directly: with A -> -inf every step forgets the state, and with u = 1,
    B = 1 and C = 1/N, y = dt exactly. Deltas from -14 to 26 (dt from 8e-7 to 26) against float64."""
    if kernel == "state-resident" and state == 1:
        pytest.skip("the state-resident kernel takes N >= 9 only")
    channels, length = 64, 4096
    delta = torch.linspace(-14.0, 26.0, length).repeat(channels, 1)[None].to("cuda", dtype)
    inputs = {
        "u": torch.ones(1, channels, length, device="cuda", dtype=dtype),
        "delta": delta,
        "A": torch.full((channels, state), -1e30, device="cuda"),
        "B": torch.ones(1, 1, state, length, device="cuda", dtype=dtype),
        "C": torch.full((1, 1, state, length), 1.0 / state, device="cuda", dtype=dtype),
    }
    with torch.no_grad():
        if kernel == "state-resident":
            dt = cuda_scan.selective_scan_resident(**inputs, delta_softplus=True)
        else:
            config = cuda_scan.default_inference_config(channels, length, dtype, state)
            dt = cuda_scan.selective_scan_infer_config(**inputs, delta_softplus=True, config=config)
    expected = torch.nn.functional.softplus(delta.double())
    relative = ((dt.double() - expected) / expected).abs().max().item()
    # Both forms share __expf (~1e-6 relative at |x| = 14); the half-precision one adds < 4e-6 (scan_common.cuh).
    assert relative < (2e-6 if dtype == torch.float32 else 1e-5), f"dt relative error {relative:.2e}"


# Each call hits one input check of the C++ binding; the child prints "ok" if every one raised as expected.
_BINDING_ERRORS = """
import re
import torch
from mambaseg_core.ops.selective_scan.cuda_scan import load_extension

ext = load_extension()
def z(*size, dtype=torch.float32):
    return torch.zeros(*size, device="cuda", dtype=dtype)

def h(*size):
    return z(*size, dtype=torch.float16)

cases = [
    (lambda: ext.default_infer_config(1, 0, torch.float32, 16), ValueError, "rows and L must be >= 1, got 1 and 0"),
    (lambda: ext.forward_infer(z(1, 4), z(1, 4), z(1, 1), z(1, 1, 1, 4), z(1, 1, 1, 4), None, None, False, False),
     RuntimeError, r"u must be \\(batch, channels, L\\), got \\[1, 4\\]"),
    (lambda: ext.forward_infer(h(1, 4, 8), z(1, 4, 8), z(4, 2), h(1, 1, 2, 8), h(1, 1, 2, 8), None, None, False,
                               False),
     RuntimeError, "delta must be Half, got Float"),
    (lambda: ext.forward_infer_config(h(1, 4, 8), h(1, 4, 8), z(4, 16), h(1, 2, 16, 8), h(1, 2, 16, 8), None, None,
                                      True, False, 8, 4, 4),
     ValueError, r"\\(items=8, warps=4, states=4\\) is not compiled for Half inputs with N=16"),
    (lambda: ext.forward_infer_resident(z(1, 4, 8), z(1, 4, 8), z(4, 4), z(1, 2, 4, 8), z(1, 2, 4, 8), None, None,
                                        True, False, 0, 0),
     ValueError, "the state-resident kernel needs N >= 9, got N=4"),
    (lambda: ext.forward_infer_resident(z(1, 4, 8), z(1, 4, 8), z(4, 16), z(1, 2, 16, 8), z(1, 2, 16, 8), None, None,
                                        True, False, -1, 0),
     ValueError, "segment_len must be in"),
    (lambda: ext.forward_infer_resident(z(1, 4, 8), z(1, 4, 8), z(4, 16), z(1, 2, 16, 8), z(1, 2, 16, 8), None, None,
                                        True, False, 0, 3),
     ValueError, r"lanes_per_row must be 1, 2 or 4 \\(0: the default\\), got 3"),
]
for call, error, pattern in cases:
    try:
        call()
    except error as exc:
        assert re.search(pattern, str(exc)), str(exc)
    else:
        raise AssertionError(f"no {error.__name__} matching {pattern!r}")
print("ok", len(cases))
"""


@pytest.mark.cuda
@needs_cuda
def test_cuda_binding_input_errors_raise_instead_of_crashing():
    # In a child process: an error that crashes (a TORCH_CHECK with arguments segfaulted on the H100 host) takes
    # the process down with it.
    run = subprocess.run(
        [sys.executable, "-c", _BINDING_ERRORS],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert run.returncode == 0 and run.stdout.split() == ["ok", "7"], (run.returncode, run.stdout, run.stderr[-3000:])
