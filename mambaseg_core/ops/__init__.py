"""Tensor operators: the selective scan, the scan-order permutations around it, and the channel LayerNorm."""

from mambaseg_core.ops.selective_scan import available_backends, selective_scan

__all__ = ["available_backends", "selective_scan"]
