"""Our own CUDA selective scan (csrc/), built on first use with torch.utils.cpp_extension.load.

The build is cached under $MAMBASEG_BUILD_DIR (default ~/.cache/mambaseg/torch_extensions), one folder per
torch/CUDA version and GPU architecture, so only the first call of a fresh machine compiles (about a minute).
Builds into one folder are serialised by an flock, which ends with its process: torch's own lock is a file that a
build killed midway (Ctrl-C on a node's first start) leaves behind, and every later load would wait for it forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import torch

from mambaseg_core.ops.selective_scan.autograd import needs_grad
from mambaseg_core.ops.selective_scan.errors import BackendUnavailableError

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().with_name("csrc")
SOURCES = ("scan_binding.cpp", "scan_fwd.cu", "scan_fwd_infer.cu", "scan_fwd_resident.cu", "scan_bwd.cu")
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_STATE = 16  # largest N the kernels take: the per-state values live in registers


def _build_dir() -> Path:
    root = Path(os.environ.get("MAMBASEG_BUILD_DIR", "~/.cache/mambaseg/torch_extensions")).expanduser()
    major, minor = torch.cuda.get_device_capability()
    tag = f"torch{torch.__version__}_cuda{torch.version.cuda}_sm{major}{minor}".replace("+", "_")
    path = root / f"selective_scan_{tag}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold the build folder's flock; holding it, a torch lock file in the folder is one a killed build left."""
    with open(directory / "mambaseg_build.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel when its process dies, however it dies
        stale = directory / "lock"  # torch.utils.cpp_extension's FileBaton
        if stale.exists():
            log.warning("removing %s, left by a CUDA selective-scan build that was killed midway", stale)
            stale.unlink()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.cache
def load_extension() -> ModuleType:
    """Compile (or load the cached build of) the kernels; BackendUnavailableError saying why if impossible."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError("selective-scan backend 'cuda' needs a CUDA GPU, and torch sees none")
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise BackendUnavailableError(
            "selective-scan backend 'cuda' is built on first use and needs the CUDA toolkit (nvcc); "
            "none found: install it or set CUDA_HOME"
        )
    build_directory = _build_dir()
    try:
        with build_lock(build_directory):
            return cpp_extension.load(
                name="mambaseg_selective_scan",
                sources=[str(CSRC / name) for name in SOURCES],
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3", "--use_fast_math", "-lineinfo"],
                build_directory=str(build_directory),
                verbose=False,
            )
    except Exception as exc:  # the build log is in the message: hand its tail to the user
        raise BackendUnavailableError(f"building the CUDA selective scan failed:\n{str(exc)[-3000:]}") from exc


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in `dtype`, contiguous; no dispatch at all when it already is (this path is per call)."""
    return x if x.dtype == dtype and x.is_contiguous() else x.to(dtype).contiguous()


class _CudaScanFunction(torch.autograd.Function):
    """Autograd over the kernels; inputs already validated, contiguous, and in kernel dtypes."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        extension: ModuleType,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor | None,
        delta_bias: torch.Tensor | None,
        delta_softplus: bool,
    ) -> torch.Tensor:
        y, tile_carries = extension.forward(u, delta, A, B, C, D, delta_bias, delta_softplus)
        ctx.extension, ctx.delta_softplus = extension, delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, tile_carries)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        u, delta, A, B, C, D, delta_bias, tile_carries = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, dbias = ctx.extension.backward(
            u, delta, A, B, C, D, delta_bias, ctx.delta_softplus, _as(dy, torch.float32), tile_carries
        )
        return (
            None,
            du.to(u.dtype),
            ddelta.to(delta.dtype),
            dA,
            dB.to(B.dtype),
            dC.to(C.dtype),
            dD if D is not None else None,
            dbias if delta_bias is not None else None,
            None,
        )


def _register_inference_op(extension: ModuleType) -> Any:
    """The inference kernel as the torch operator `mambaseg::selective_scan_infer`, so that torch.compile and
    torch.export see one opaque op (with its output shape) instead of breaking the graph at every scan."""

    @torch.library.custom_op("mambaseg::selective_scan_infer", mutates_args=(), device_types="cuda")
    def selective_scan_infer(
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor | None,
        delta_bias: torch.Tensor | None,
        delta_softplus: bool,
        y_in_input_dtype: bool,
    ) -> torch.Tensor:
        return extension.forward_infer(u, delta, A, B, C, D, delta_bias, delta_softplus, y_in_input_dtype)

    @selective_scan_infer.register_fake
    def _(u, delta, A, B, C, D, delta_bias, delta_softplus, y_in_input_dtype):
        return u.new_empty(u.shape, dtype=u.dtype if y_in_input_dtype else torch.float32)

    return selective_scan_infer


def _kernel_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    strided_bc: bool,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None
]:
    """The inputs in the kernels' dtypes, contiguous: one input dtype for u, delta, B, C (theirs if they agree
    and the kernel has it, else float32); A, D, delta_bias float32. With `strided_bc` B and C keep their strides
    when their dtype is right: the inference kernel reads slices of one projection in place (and copies what it
    cannot read)."""
    dtypes = {x.dtype for x in (u, delta, B, C)}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    if dtype not in _INPUT_DTYPES:
        dtype = torch.float32
    u, delta = _as(u, dtype), _as(delta, dtype)
    B, C = (x if strided_bc and x.dtype == dtype else _as(x, dtype) for x in (B, C))
    D = _as(D, torch.float32) if D is not None else None
    delta_bias = _as(delta_bias, torch.float32) if delta_bias is not None else None
    return u, delta, _as(A, torch.float32), B, C, D, delta_bias


def _direct_kernel_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None
]:
    """_kernel_inputs for the inference kernels called directly (benchmarks, tests): B and C read in place."""
    if not u.is_cuda:
        raise ValueError(f"the CUDA inference scan needs CUDA tensors, got u on {u.device}")
    return _kernel_inputs(u, delta, A, B, C, D, delta_bias, strided_bc=True)


def make_cuda_scan(extension: ModuleType):
    """The `cuda` backend's scan function over a loaded extension: the training kernels (which keep the per-tile
    states for the backward) when a gradient is needed, the one-pass inference kernel otherwise."""
    scan_infer = _register_inference_op(extension)

    def selective_scan_cuda(
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor | None = None,
        delta_bias: torch.Tensor | None = None,
        delta_softplus: bool = False,
        y_in_input_dtype: bool = False,
    ) -> torch.Tensor:
        """Same semantics and shapes as `selective_scan_reference`; CUDA tensors, N <= MAX_STATE; y in float32, or
        in u's dtype with `y_in_input_dtype` (written so by the inference kernel, cast after the training one)."""
        y_dtype = u.dtype if y_in_input_dtype else torch.float32
        if not u.is_cuda:
            raise ValueError(f"selective-scan backend 'cuda' needs CUDA tensors, got u on {u.device}")
        if A.shape[1] > MAX_STATE:
            raise ValueError(
                f"selective-scan backend 'cuda' supports N <= {MAX_STATE}, got A of shape {tuple(A.shape)}"
            )
        if u.numel() == 0:
            return u.new_zeros(u.shape, dtype=y_dtype)
        inference = not needs_grad(u, delta, A, B, C, D, delta_bias)
        u, delta, A, B, C, D, delta_bias = _kernel_inputs(u, delta, A, B, C, D, delta_bias, strided_bc=inference)
        if inference:
            y = scan_infer(u, delta, A, B, C, D, delta_bias, delta_softplus, u.dtype == y_dtype)
        else:
            y = _CudaScanFunction.apply(extension, u, delta, A, B, C, D, delta_bias, delta_softplus)
        return y if y.dtype == y_dtype else y.to(y_dtype)

    return selective_scan_cuda


# --------------------------------------------------------------------------------------- inference tuning


class InferConfig(NamedTuple):
    """A compiled launch configuration of the inference kernel (csrc/scan_infer.h)."""

    items: int  # consecutive steps per lane
    warps: int  # warps per (batch, channel) row
    states: int  # states scanned together per pass


def inference_configs(dtype: torch.dtype, state: int) -> list[InferConfig]:
    """Every configuration the inference kernel is compiled in for inputs of `dtype` with N = `state`: the
    default launcher's untuned ones; at N = 1 and 9..16 also its rule's picks and, for float32 and bfloat16,
    tuning variants. Needs a CUDA GPU."""
    return [InferConfig(*c) for c in load_extension().infer_configs(dtype, state)]


def default_inference_config(rows: int, length: int, dtype: torch.dtype, state: int) -> InferConfig:
    """The warp-scan kernel's configuration for `rows` (batch * channels) rows of `length` steps, inputs of `dtype`
    (float32, float16 or bfloat16) and N = `state`: what the `cuda` backend's inference path runs unless
    `uses_resident_kernel` (then the state-resident kernel, `selective_scan_resident`, in its default plan)."""
    return InferConfig(*load_extension().default_infer_config(rows, length, dtype, state))


def selective_scan_infer_config(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    config: InferConfig,
    y_in_input_dtype: bool = False,
) -> torch.Tensor:
    """The inference kernel in one explicit configuration, for benchmarks and tests (not a backend: no
    autograd, no shape checks beyond the kernel binding's). Same semantics as `selective_scan_reference`;
    float32 out, or in the kernel inputs' dtype with `y_in_input_dtype`. ValueError naming the compiled ones if
    `config` is not compiled for these inputs."""
    u, delta, A, B, C, D, delta_bias = _direct_kernel_inputs(u, delta, A, B, C, D, delta_bias)
    compiled = inference_configs(u.dtype, A.shape[1])
    if config not in compiled:
        raise ValueError(
            f"selective_scan cuda: inference configuration {config} is not compiled for {u.dtype} inputs with "
            f"N={A.shape[1]}; compiled (items, warps, states): {', '.join(str(tuple(c)) for c in compiled)}"
        )
    items, warps, states = config
    return load_extension().forward_infer_config(
        u, delta, A, B, C, D, delta_bias, delta_softplus, y_in_input_dtype, items, warps, states
    )


class ResidentPlan(NamedTuple):
    """How the state-resident inference kernel (csrc/scan_fwd_resident.cu) cuts its work."""

    segment_len: int  # steps per segment (whole 32-step tiles)
    segments: int  # segments per row
    lanes_per_row: int  # lanes sharing a row's states


def uses_resident_kernel(rows: int, length: int, state: int) -> bool:
    """Whether the `cuda` backend's inference path runs the state-resident kernel (rather than the warp-scan kernel's
    `default_inference_config`) for `rows` (batch * channels) rows of `length` steps with N = `state`."""
    return bool(load_extension().uses_resident_kernel(rows, length, state))


def resident_plan(batch: int, channels: int, groups: int, length: int) -> ResidentPlan:
    """The state-resident kernel's default plan for these shapes (N = 16)."""
    return ResidentPlan(*load_extension().resident_plan(batch, channels, groups, length))


def selective_scan_resident(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    segment_len: int = 0,
    lanes_per_row: int = 0,
    y_in_input_dtype: bool = False,
) -> torch.Tensor:
    """The state-resident inference kernel (csrc/scan_fwd_resident.cu; what the `cuda` backend runs without autograd
    where `uses_resident_kernel`) with rows cut into segments of `segment_len` steps (rounded up to whole 32-step
    tiles) and `lanes_per_row` (1, 2 or 4) lanes sharing a row's states (0: the default plan's), for benchmarks and
    tests: no autograd. Same semantics as `selective_scan_reference`; float32 out, or in the kernel inputs' dtype
    with `y_in_input_dtype`. ValueError if N < 9."""
    u, delta, A, B, C, D, delta_bias = _direct_kernel_inputs(u, delta, A, B, C, D, delta_bias)
    return load_extension().forward_infer_resident(
        u, delta, A, B, C, D, delta_bias, delta_softplus, y_in_input_dtype, segment_len, lanes_per_row
    )
