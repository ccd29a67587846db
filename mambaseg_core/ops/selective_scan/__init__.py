"""One selective-scan API over several backends.

`selective_scan(..., backend="auto")` picks the fastest backend that can run on the inputs'
device; an explicitly requested backend that cannot run raises `BackendUnavailableError`
saying why (never a silent fallback).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mambaseg_core.ops.selective_scan.autograd import needs_grad
from mambaseg_core.ops.selective_scan.cuda_scan import MAX_STATE as CUDA_MAX_STATE
from mambaseg_core.ops.selective_scan.errors import BackendUnavailableError
from mambaseg_core.ops.selective_scan.numba_scan import selective_scan_numba
from mambaseg_core.ops.selective_scan.reference import selective_scan_reference
from mambaseg_core.ops.selective_scan.torch_scan import selective_scan_torch

BACKENDS = ("reference", "torch", "numba", "cuda", "mamba_ssm")

ScanFn = Callable[..., torch.Tensor]

# name -> scan function, or why it is unavailable: each backend is built/imported once per process.
_LOADED: dict[str, ScanFn | str] = {}


def _import_backend(name: str) -> ScanFn:
    if name == "reference":
        return selective_scan_reference
    if name == "torch":
        return selective_scan_torch
    if name == "numba":
        return selective_scan_numba
    if name == "cuda":
        from mambaseg_core.ops.selective_scan.cuda_scan import load_extension, make_cuda_scan

        return make_cuda_scan(load_extension())
    from mambaseg_core.ops.selective_scan.mamba_ssm_scan import load_mamba_ssm, make_mamba_ssm_scan

    return make_mamba_ssm_scan(load_mamba_ssm())


def _load_backend(name: str) -> ScanFn:
    """Return the scan function of `name` or raise BackendUnavailableError (the outcome is cached)."""
    if name not in _LOADED:
        try:
            _LOADED[name] = _import_backend(name)
        except BackendUnavailableError as exc:
            _LOADED[name] = str(exc)
    loaded = _LOADED[name]
    if isinstance(loaded, str):
        raise BackendUnavailableError(loaded)
    return loaded


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on `device`, fastest first (a first call may compile the CUDA kernels)."""
    device = torch.device(device)
    names = ("cuda", "mamba_ssm", "torch", "reference") if device.type == "cuda" else ("numba", "torch", "reference")
    usable = []
    for name in names:
        try:
            _load_backend(name)
        except BackendUnavailableError:
            continue
        usable.append(name)
    return usable


# device type -> available_backends() of that device, so that "auto" costs a dict lookup per call (and
# torch.compile traces no backend loading).
_USABLE: dict[str, list[str]] = {}


def _auto_backend(u: torch.Tensor, A: torch.Tensor, needs_grad: bool) -> str:
    """The fastest available backend that takes these inputs: the CUDA kernels take fp32/fp16/bf16 only
    (float64, e.g. for gradcheck, goes to the torch backend), ours N <= CUDA_MAX_STATE; the numba CPU scan
    serves inference only (float32 maths), so gradients and float64 go to the torch backend."""
    usable = _USABLE.get(u.device.type)
    if usable is None:
        usable = _USABLE[u.device.type] = available_backends(u.device)
    for name in usable:
        if name in ("cuda", "mamba_ssm", "numba") and u.dtype == torch.float64:
            continue
        if name == "numba" and needs_grad:
            continue
        if name == "cuda" and A.shape[1] > CUDA_MAX_STATE:
            continue
        return name
    raise AssertionError("the torch backend is always available")


def _check_inputs(u, delta, A, B, C, D, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, channels, L), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (channels={channels}, N), got {tuple(A.shape)}")
    state = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if x.dim() != 4 or x.shape[0] != batch or x.shape[2] != state or x.shape[3] != length:
            raise ValueError(f"{name} must be (batch={batch}, groups, N={state}, L={length}), got {tuple(x.shape)}")
    if B.shape[1] != C.shape[1]:
        raise ValueError(f"B and C must have the same number of groups, got {B.shape[1]} and {C.shape[1]}")
    if channels % B.shape[1]:
        raise ValueError(f"channels ({channels}) must be divisible by groups ({B.shape[1]})")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and tuple(x.shape) != (channels,):
            raise ValueError(f"{name} must be (channels={channels},), got {tuple(x.shape)}")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
    *,
    y_in_input_dtype: bool = False,
) -> torch.Tensor:
    """Mamba-1 selective scan; see `selective_scan_reference` for the semantics and shapes. y is float32, or in
    u's dtype with `y_in_input_dtype` (as `mamba_ssm` returns it), which the CUDA inference kernel writes directly:
    half the bytes for half-precision inputs. Every backend computes in float32 either way."""
    _check_inputs(u, delta, A, B, C, D, delta_bias)
    if backend == "auto":
        backend = _auto_backend(u, A, needs_grad(u, delta, A, B, C, D, delta_bias))
    elif backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    fn = _load_backend(backend)
    if backend == "cuda":  # the only backend that can write y in another dtype than float32
        return fn(u, delta, A, B, C, D, delta_bias, delta_softplus, y_in_input_dtype=y_in_input_dtype)
    y = fn(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return y.to(u.dtype) if y_in_input_dtype else y


__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "selective_scan",
    "selective_scan_numba",
    "selective_scan_reference",
    "selective_scan_torch",
]
