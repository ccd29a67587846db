"""Tensor operators: the selective scan and the scan-order permutations around it."""

from mambaseg_core.ops.selective_scan import available_backends, selective_scan

__all__ = ["available_backends", "selective_scan"]
