"""The per-direction selective-scan parameters and projections shared by SS2D and the TSSM."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from mambaseg_core.models.layers import DerivedWeights, ProjectionLayout
from mambaseg_core.ops.selective_scan import selective_scan


class DirectionalSSM(nn.Module):
    """K independent Mamba-1 selective scans over sequences of `features`-dimensional tokens.

    Each direction k has its own projections: [dt~; B; C] = x_proj_weight[k] @ x_k (no bias) and
    dt = dt_proj_weight[k] @ dt~ (+ dt_proj_bias[k] inside the softplus), and per-channel A = -exp(A_log), D.
    Layouts are the official ones: x_proj_weight (K, R+2N, F), dt_proj_weight (K, F, R),
    dt_proj_bias (K, F), A_log (K*F, N), D (K*F).

    In SS2D the features are the D inner channels and the sequence is the H*W pixels; in the TSSM the
    features are the P = H*W pixels and the sequence is the channels.

    With `half_precision_y`, inference (no autograd) on fp16/bf16 inputs returns y in their dtype, as the official
    SS2D gets it from mamba_ssm: half the bytes written by the scan and read by the merge. SS2D's y stays far inside
    fp16's range; the TSSM's does not (|y| up to 3.7e5 in the trained demo model): it keeps float32.
    """

    def __init__(
        self,
        directions: int,
        features: int,
        d_state: int,
        dt_rank: int,
        *,
        backend: str = "auto",
        half_precision_y: bool = False,
    ):
        super().__init__()
        self.directions, self.features, self.d_state, self.dt_rank = directions, features, d_state, dt_rank
        self.half_precision_y = half_precision_y
        # The official TSSM ("vc") casts its scan inputs to fp32 and SS2D v05 does not ("force_fp32=False"). No cast
        # is needed here for either: every selective-scan backend upcasts fp16/bf16 inputs exactly and computes in
        # fp32 (a cast would only add four copies and double the scan's input reads in bf16).
        self.backend = backend
        self.x_proj_weight = nn.Parameter(torch.empty(directions, dt_rank + 2 * d_state, features))
        self.dt_proj_weight = nn.Parameter(torch.empty(directions, features, dt_rank))
        self.dt_proj_bias = nn.Parameter(torch.empty(directions, features))
        self.A_log = nn.Parameter(torch.empty(directions * features, d_state))
        self.D = nn.Parameter(torch.empty(directions * features))
        self._A: DerivedWeights[torch.Tensor] = DerivedWeights()
        self._x_proj = ProjectionLayout("bkfl,kcf->bkcl")
        self._dt_proj = ProjectionLayout("bkrl,kfr->bkfl")
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """Mamba "v0" init: nn.Linear-style x_proj, dt ~ logU[dt_min, dt_max] through an inverse softplus,
        A = -(1..N) for every channel, D = 1."""
        bound = 1.0 / math.sqrt(self.features)
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_proj_weight.uniform_(-(self.dt_rank**-0.5), self.dt_rank**-0.5)
        log_dt = torch.rand_like(self.dt_proj_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = log_dt.exp().clamp(min=dt_floor)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        states = torch.arange(1, self.d_state + 1, dtype=self.A_log.dtype, device=self.A_log.device)
        self.A_log.copy_(states.log().expand_as(self.A_log))
        self.D.fill_(1.0)

    def state_matrix(self) -> torch.Tensor:
        """A = -exp(A_log), float32. Without autograd it is kept until A_log changes (in place or replaced): two
        kernels fewer per scan, and none in a captured CUDA graph."""
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and self.A_log.requires_grad):
            return -self.A_log.float().exp()
        return self._A.get([self.A_log], lambda: -self.A_log.detach().float().exp())

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """xs (B, K, F, L) -> ys (B, K, F, L): float32, or xs's dtype under `half_precision_y` (class docstring)."""
        batch, directions, features, length = xs.shape
        if directions != self.directions or features != self.features:
            raise ValueError(
                f"scan input must be (B, K={self.directions}, F={self.features}, L), got {tuple(xs.shape)}; "
                "for a TSSM F is the token count H*W, fixed by the model's image_size"
            )
        x_dbl = self._x_proj(xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = self._dt_proj(dts, self.dt_proj_weight)
        u = xs.reshape(batch, directions * features, length)
        delta = dts.reshape(batch, directions * features, length)
        ys = selective_scan(
            u,
            delta,
            self.state_matrix(),
            Bs,  # slices of x_dbl: the CUDA inference kernel reads them in place
            Cs,
            self.D.float(),
            self.dt_proj_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=self.backend,
            y_in_input_dtype=self.half_precision_y and not torch.is_grad_enabled(),
        )
        return ys.view(batch, directions, features, length)

    def extra_repr(self) -> str:
        return (
            f"directions={self.directions}, features={self.features}, d_state={self.d_state}, "
            f"dt_rank={self.dt_rank}, backend={self.backend!r}"
        )
