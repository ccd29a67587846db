"""The `mamba_ssm` backend: state-spaces/mamba's CUDA selective scan, when that package is installed."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mambaseg_core.ops.selective_scan.errors import BackendUnavailableError


def load_mamba_ssm() -> Callable[..., torch.Tensor]:
    """mamba_ssm's `selective_scan_fn`, or BackendUnavailableError saying how to get it."""
    try:
        from mamba_ssm.ops import selective_scan_interface
    except ImportError as exc:  # not installed, or (before 2.3) installed without its compiled kernels
        raise BackendUnavailableError(
            f"selective-scan backend 'mamba_ssm' is not importable ({exc}); install it with "
            "`pip install mamba-ssm` (the [cuda] extra of this package)"
        ) from exc
    # Since 2.3 the package imports without its compiled kernel (a build without it, or one whose binary does not
    # match this torch) and fails only when called.
    if getattr(selective_scan_interface, "selective_scan_cuda", None) is None:
        raise BackendUnavailableError(
            "selective-scan backend 'mamba_ssm' is installed without a loadable selective_scan_cuda kernel (not built, "
            "or built for another torch/CUDA); reinstall with `MAMBA_KEEP_CUDA_BUILD=TRUE pip install mamba-ssm "
            "--no-build-isolation`"
        )
    if not torch.cuda.is_available():
        raise BackendUnavailableError("selective-scan backend 'mamba_ssm' needs a CUDA GPU, and torch sees none")
    return selective_scan_interface.selective_scan_fn


def make_mamba_ssm_scan(selective_scan_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The `mamba_ssm` backend's scan function: same layout as ours, B/C (batch, groups, N, L)."""

    def selective_scan_mamba_ssm(
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor | None = None,
        delta_bias: torch.Tensor | None = None,
        delta_softplus: bool = False,
    ) -> torch.Tensor:
        """Same semantics and shapes as `selective_scan_reference`; returns float32.

        mamba_ssm writes y in the inputs' dtype: half-precision u, delta, B and C are widened to float32 first (the
        values its kernel computes with either way), so that y is not rounded to half precision as ours is not;
        their gradients come back in their own dtype through the casts."""
        u, delta, A, B, C, D, delta_bias = (
            x.float() if x is not None else None for x in (u, delta, A, B, C, D, delta_bias)
        )
        return selective_scan_fn(u, delta, A, B, C, D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus)

    return selective_scan_mamba_ssm
