"""One selective-scan API over several backends.

`selective_scan(..., backend="auto")` picks the fastest backend that can run on the inputs'
device; an explicitly requested backend that cannot run raises `BackendUnavailableError`
saying why (never a silent fallback).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mambaseg_core.ops.selective_scan.reference import selective_scan_reference

BACKENDS = ("reference", "torch", "cuda", "mamba_ssm")


class BackendUnavailableError(RuntimeError):
    """A requested selective-scan backend cannot run here; the message says why and how to fix it."""


ScanFn = Callable[..., torch.Tensor]


def _load_backend(name: str) -> ScanFn:
    """Return the scan function of `name` or raise BackendUnavailableError."""
    if name == "reference":
        return selective_scan_reference
    raise BackendUnavailableError(f"selective-scan backend {name!r} is not implemented yet")


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on `device`, fastest first."""
    device = torch.device(device)
    names = ("cuda", "mamba_ssm", "torch", "reference") if device.type == "cuda" else ("torch", "reference")
    usable = []
    for name in names:
        try:
            _load_backend(name)
        except BackendUnavailableError:
            continue
        usable.append(name)
    return usable


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
) -> torch.Tensor:
    """Mamba-1 selective scan; see `selective_scan_reference` for the semantics and shapes."""
    _check_inputs(u, delta, A, B, C, D, delta_bias)
    if backend == "auto":
        backend = available_backends(u.device)[0]
    elif backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    fn = _load_backend(backend)
    return fn(u, delta, A, B, C, D, delta_bias, delta_softplus)


__all__ = ["BACKENDS", "BackendUnavailableError", "available_backends", "selective_scan", "selective_scan_reference"]
