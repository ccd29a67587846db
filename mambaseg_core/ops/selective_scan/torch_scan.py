"""Chunked selective scan in plain, differentiable PyTorch (CPU and GPU, autograd for free).

The recurrence h_t = a_t * h_{t-1} + x_t (a_t = exp(dt_t * A) <= 1) is split into chunks of T steps:
1. inside every chunk, all chunks at once, a T-step loop runs the recurrence from a zero state;
2. a loop over the chunks carries the state from one chunk to the next;
3. each step adds its chunk's incoming state times the decay since the chunk start, exp(cumsum(dt * A)).
Only decays exp(sum of dt*A over s..t, s <= t) are ever formed, so nothing overflows for any L or |A * dt|,
and the Python loop runs about 2*sqrt(L) steps instead of L. The sequence is also cut into segments that
bound the size of every intermediate (batch * channels * N * segment elements); the state is carried
across segments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mambaseg_core.ops.selective_scan.autograd import needs_grad

# Elements of one (batch, channels, N, segment) intermediate (about eight are alive at a time): on CPU small
# enough to stay in cache (measured fastest on 2 cores), on GPU large enough to keep the launch count low.
_SEGMENT_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 26}


def _segment_length(batch: int, channels: int, state: int, length: int, device: torch.device) -> int:
    budget = _SEGMENT_ELEMENTS.get(device.type, 1 << 22)
    return max(16, min(length, budget // max(1, batch * channels * state)))


def _chunk_length(length: int) -> int:
    """Steps per chunk: about sqrt(L), which balances the two Python loops (chunk + L / chunk steps); a divisor of L
    near it where there is one, which saves padding four tensors."""
    root = max(1, math.isqrt(length))
    divisors = [c for c in range(max(1, (3 * root) // 4), (3 * root) // 2 + 1) if length % c == 0]
    return min(divisors, key=lambda c: c + length // c) if divisors else root


def _scan_segment(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor,
    in_place: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One segment of the scan, grouped layout.

    Shapes: u, dt (B, K, Dk, L); A (K, Dk, N); B, C (B, K, N, L); h0 (B, K, Dk, N) the incoming state.
    Returns y (B, K, Dk, L) without the D skip term, and the state after the last step (B, K, Dk, N).
    in_place (only without autograd): reuse the segment's intermediates instead of allocating new ones.
    """
    length = u.shape[-1]
    chunk = _chunk_length(length)
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:
        # Padded steps have dt = 0 (decay 1) and x = 0: they leave the state unchanged.
        u, dt, B, C = (F.pad(x, (0, pad)) for x in (u, dt, B, C))

    def time_major(x: torch.Tensor) -> torch.Tensor:
        """(..., L) -> (T, ..., n_chunks), contiguous: each loop step then reads one contiguous slab, and the
        N-times larger products below inherit this layout."""
        return x.unflatten(-1, (n_chunks, chunk)).movedim(-1, 0).contiguous()

    dt_t = time_major(dt).unsqueeze(-2)  # (T, B, K, Dk, 1, nc)
    dtu_t = time_major(dt * u).unsqueeze(-2)
    B_t = time_major(B).unsqueeze(3)  # (T, B, K, 1, N, nc)
    C_t = C.unflatten(-1, (n_chunks, chunk)).movedim(-1, 0).unsqueeze(3)  # read once, at the end: no copy
    log_decay = dt_t * A[..., None]  # (T, B, K, Dk, N, nc), <= 0 for A <= 0
    decay = torch.exp(log_decay)
    x = dtu_t * B_t

    # 1. Within-chunk recurrence from a zero state, all chunks in parallel: local_states (T, B, K, Dk, N, nc).
    # The loops take their per-step views from one unbind: indexing per step was 40 % of the dispatched ops at short
    # L, where the host's per-op time is the whole cost on a GPU.
    x_steps, decay_steps = x.unbind(0), decay.unbind(0)
    if in_place:
        for step in range(1, chunk):
            x_steps[step].addcmul_(decay_steps[step], x_steps[step - 1])
        local_states = x
    else:
        local = [x_steps[0]]
        for step in range(1, chunk):
            local.append(torch.addcmul(x_steps[step], decay_steps[step], local[-1]))
        local_states = torch.stack(local)

    # 2. Carry the state across chunks; decay_from_start[t] = prod_{s<=t in chunk} a_s.
    if in_place:
        decay_from_start = log_decay.cumsum_(dim=0).exp_()
    else:
        decay_from_start = torch.exp(torch.cumsum(log_decay, dim=0))
    chunk_decay, chunk_end = decay_from_start[-1].unbind(-1), local_states[-1].unbind(-1)  # (B, K, Dk, N) each
    incoming = [h0]
    for k in range(n_chunks):
        incoming.append(torch.addcmul(chunk_end[k], chunk_decay[k], incoming[-1]))
    carried = torch.stack(incoming[:-1], dim=-1)  # state entering each chunk

    # 3. Full states and the read-out y_t = <C_t, h_t>.
    if in_place:
        y = local_states.addcmul_(decay_from_start, carried).mul_(C_t).sum(dim=-2)  # (T, B, K, Dk, nc)
    else:
        y = (torch.addcmul(local_states, decay_from_start, carried) * C_t).sum(dim=-2)
    y = y.movedim(0, -1).flatten(-2)[..., :length]
    return y, incoming[-1]


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Mamba-1 selective scan, chunked; same semantics and shapes as `selective_scan_reference`.

    Shapes: u, delta (B, K*D, L); A (K*D, N); B, C (B, K, N, L); D, delta_bias (K*D,).
    Computes in float32 (float64 if any input is float64, e.g. for gradcheck); returns y (B, K*D, L).
    """
    inputs = [u, delta, A, B, C] + [x for x in (D, delta_bias) if x is not None]
    compute = torch.float64 if any(x.dtype == torch.float64 for x in inputs) else torch.float32
    batch, channels, length = u.shape
    groups, state = B.shape[1], A.shape[1]
    per_group = channels // groups
    u, delta, A, B, C = (_as(x, compute) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + _as(delta_bias, compute)[:, None]
    dt = F.softplus(delta) if delta_softplus else delta

    grouped_u = u.view(batch, groups, per_group, length)
    grouped_dt = dt.reshape(batch, groups, per_group, length)
    grouped_A = A.view(groups, per_group, state)
    h = u.new_zeros(batch, groups, per_group, state)
    in_place = not needs_grad(*inputs)
    segment = _segment_length(batch, channels, state, length, u.device)
    pieces = []
    for start in range(0, length, segment):
        part = slice(start, start + segment)
        y_part, h = _scan_segment(
            grouped_u[..., part], grouped_dt[..., part], grouped_A, B[..., part], C[..., part], h, in_place
        )
        pieces.append(y_part)
    if not pieces:
        y = u.new_zeros(u.shape)
    else:
        y = (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)).reshape(batch, channels, length)
    if D is not None:
        y = torch.addcmul(y, _as(D, compute)[:, None], u)
    return y


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in dtype, without a dispatched no-op cast when it already is (the host's per-op time is the cost at short
    L on a GPU)."""
    return x if x.dtype == dtype else x.to(dtype)
