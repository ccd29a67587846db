"""CPU inference selective scan: the sequential recurrence compiled with numba, rows spread over the cores.

On a CPU the recurrence itself is cheap (one exp and two multiply-adds per step and state); what makes the torch
backend slow there is the many tensor operations of its chunked formulation. This backend runs the plain loop,
one (batch, channel) row per task, with the N states of a step contiguous in memory (B and C are transposed to
(batch, groups, L, N) once per call). Forward only: it serves inference (`torch.no_grad` / `inference_mode`); a
call that needs gradients raises, and `auto` then picks the differentiable torch backend.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

from mambaseg_core.ops.selective_scan.autograd import needs_grad
from mambaseg_core.ops.selective_scan.errors import BackendUnavailableError

# Fast-math flags without "nnan"/"ninf", so NaN and inf propagate as in the other backends: contraction into
# FMAs and reassociation let LLVM vectorise the loop over the N states (the sum into y is reordered).
_FASTMATH = {"contract", "reassoc", "nsz", "arcp", "afn"}


@numba.njit(inline="always", fastmath=_FASTMATH)
def _exp(x):  # pragma: no cover - compiled
    """exp(x) in float64 to a relative 2e-10, as plain arithmetic: numba has no vector exp here (no SVML), and one
    libm call per (state, step) was most of the scan's time. exp(x / 128) by its degree-13 Taylor polynomial
    (|x / 128| <= 0.82 after clamping, remainder under 1e-12), then squared 7 times. The clamp to [-104, 89]
    keeps float32 results: exp(-104) rounds to 0 and exp(89) to inf, as the exact values do."""
    if x < -104.0:
        x = -104.0
    elif x > 89.0:
        x = 89.0
    y = x * 0.0078125
    # sum y^k / k!, k = 0..13, as 1 + y (1 + y/2 (1 + y/3 (... (1 + y/13)))), with literal divisors (constants).
    p = 1.0 + y * (1 / 13)
    p = 1.0 + y * (1 / 12) * p
    p = 1.0 + y * (1 / 11) * p
    p = 1.0 + y * (1 / 10) * p
    p = 1.0 + y * (1 / 9) * p
    p = 1.0 + y * (1 / 8) * p
    p = 1.0 + y * (1 / 7) * p
    p = 1.0 + y * (1 / 6) * p
    p = 1.0 + y * (1 / 5) * p
    p = 1.0 + y * (1 / 4) * p
    p = 1.0 + y * (1 / 3) * p
    p = 1.0 + y * (1 / 2) * p
    p = 1.0 + y * p
    for _ in range(7):
        p = p * p
    return p


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH)
def _scan_rows(u, dt, A, Bt, Ct, D, y):  # pragma: no cover - compiled
    """u, dt, y (batch, channels, L); A (channels, N); Bt, Ct (batch, groups, L, N); D (channels,). dt is the
    step size (delta + bias, after softplus). All float32; the state stays float32 (as in the CUDA kernels), exp
    is evaluated in float64 and rounded."""
    batch, channels, length = u.shape
    groups, state = Bt.shape[1], A.shape[1]
    per_group = channels // groups
    for row in numba.prange(batch * channels):
        b = row // channels
        c = row - b * channels
        g = c // per_group
        h = np.zeros(state, np.float32)
        a_row = A[c].astype(np.float64)
        for t in range(length):
            step = dt[b, c, t]
            x = u[b, c, t]
            step_input = step * x
            acc = D[c] * x
            for n in range(state):
                h[n] = np.float32(_exp(np.float64(step) * a_row[n])) * h[n] + step_input * Bt[b, g, t, n]
                acc += h[n] * Ct[b, g, t, n]
            y[b, c, t] = acc


def _as_array(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(torch.float32).contiguous().numpy()


def selective_scan_numba(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Same semantics and shapes as `selective_scan_reference`; CPU tensors, no gradients; float32 out."""
    if u.device.type != "cpu":
        raise BackendUnavailableError(f"selective-scan backend 'numba' runs on the CPU, got u on {u.device}")
    if needs_grad(u, delta, A, B, C, D, delta_bias):
        raise BackendUnavailableError(
            "selective-scan backend 'numba' is forward-only (inference); use 'torch' when gradients are needed"
        )
    # The step sizes in one vectorised torch pass: in the kernel, softplus cost two libm calls per step, which
    # dominated the N = 1 scans.
    dt = delta.detach().float()
    if delta_bias is not None:
        dt = dt + delta_bias.detach().float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    y = np.empty(tuple(u.shape), np.float32)
    _scan_rows(
        _as_array(u),
        _as_array(dt),
        _as_array(A),
        np.ascontiguousarray(_as_array(B).transpose(0, 1, 3, 2)),
        np.ascontiguousarray(_as_array(C).transpose(0, 1, 3, 2)),
        _as_array(D) if D is not None else np.zeros(u.shape[1], np.float32),
        y,
    )
    return torch.from_numpy(y)
