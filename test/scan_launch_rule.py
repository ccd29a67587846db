"""The CUDA inference scan's default launch rule (`default_infer_config`, scan_fwd_infer.cu), case by case.

Checked through the extension on a GPU (test_selective_scan.py) and through the CPU emulator's build of the same source
(test_selective_scan_emulated.py). The tuned variants are compiled for fp32 and bf16 at N = 1 and 9..16 only; elsewhere
the rule falls back to the untuned choice by row length.
"""

from __future__ import annotations

# (rows, N, L) -> the expected (steps per lane, warps per row, states per pass) for fp32, bf16 and fp16 inputs.
DEFAULT_CONFIG_CASES: list[tuple[tuple[int, int, int], dict[str, tuple[int, int, int]]]] = [
    # few long rows: 4 warps a row, 8 steps a lane, 2 states a pass (fp16: untuned, 4 warps of 16 steps)
    ((8, 16, 4400), {"fp32": (8, 4, 2), "bf16": (8, 4, 2), "fp16": (16, 4, 1)}),
    ((8, 16, 17600), {"fp32": (8, 4, 2), "bf16": (8, 4, 2), "fp16": (16, 4, 1)}),
    # N = 1 rows over 1024 steps: 8 warps
    ((8, 1, 17600), {"fp32": (8, 8, 1), "bf16": (8, 8, 1), "fp16": (16, 4, 1)}),
    # N = 4: no tuned variants compiled
    ((8, 4, 4400), {"fp32": (16, 4, 1), "bf16": (16, 4, 1), "fp16": (16, 4, 1)}),
    # few short rows keep the untuned choice
    ((8, 16, 200), {"fp32": (8, 1, 1), "bf16": (8, 1, 1), "fp16": (8, 1, 1)}),
    # many short rows: a warp a row, 4 steps a lane, 2 states a pass in fp32 and 1 otherwise ((4, 1, 1) is untuned,
    # so compiled for fp16 too)
    ((2048, 16, 300), {"fp32": (4, 1, 2), "bf16": (4, 1, 1), "fp16": (4, 1, 1)}),
    # many longer rows: a warp a row, 8 steps a lane, 2 states a pass
    ((4096, 16, 1100), {"fp32": (8, 1, 2), "bf16": (8, 1, 2), "fp16": (16, 4, 1)}),
    ((1536, 16, 4400), {"fp32": (8, 1, 2), "bf16": (8, 1, 2), "fp16": (16, 4, 1)}),
    # N = 1 short rows keep the untuned choice
    ((2048, 1, 300), {"fp32": (16, 1, 1), "bf16": (16, 1, 1), "fp16": (16, 1, 1)}),
]
