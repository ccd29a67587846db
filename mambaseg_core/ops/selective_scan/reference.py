"""Sequential selective scan: the slow, obvious oracle every fast backend is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Mamba-1 selective scan, one time step at a time, in float32.

    Shapes: u, delta (B, K*D, L); A (K*D, N); B, C (B, K, N, L); D, delta_bias (K*D,).
    Channel c reads group k = c // (channels / K). Returns y (B, K*D, L) float32:
        dt_t = softplus(delta_t + bias) (if delta_softplus)
        h_t  = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t
        y_t  = <C_t, h_t> + D * u_t
    """
    batch, channels, length = u.shape
    groups = B.shape[1]
    u, delta, A, B, C = (x.float() for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # Expand the groups to one row per channel: (B, K*D, N, L).
    B = B.repeat_interleave(channels // groups, dim=1)
    C = C.repeat_interleave(channels // groups, dim=1)
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * u[:, :, t, None] * B[:, :, :, t]
        ys.append((h * C[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    if D is not None:
        y = y + D.float()[None, :, None] * u
    return y
