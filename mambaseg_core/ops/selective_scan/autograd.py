"""Whether a scan call must support a backward pass (shared by the backends and the `auto` choice)."""

from __future__ import annotations

import torch


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd is on and any given tensor requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
