"""The CUDA inference scan's default launch rule (`default_infer_config`, scan_fwd_infer.cu), case by case.

Checked through the extension on a GPU (test_selective_scan.py) and through the CPU emulator's build of the same source
(test_selective_scan_emulated.py). The rule is the same for every dtype; its picks are compiled for every dtype at
N = 1 and 9..16 only, and elsewhere it falls back to the untuned choice by row length.
"""

from __future__ import annotations


def _same(config: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    return {"fp32": config, "bf16": config, "fp16": config}


# (rows, N, L) -> the expected (steps per lane, warps per row, states per pass) for fp32, bf16 and fp16 inputs.
DEFAULT_CONFIG_CASES: list[tuple[tuple[int, int, int], dict[str, tuple[int, int, int]]]] = [
    # few long rows: 4 warps a row, 4 steps a lane, 2 states a pass; under 384 rows 8 warps of 8 steps
    ((768, 16, 4400), _same((4, 4, 2))),
    ((8, 16, 17600), _same((8, 8, 1))),
    ((382, 16, 513), _same((8, 8, 1))),
    ((384, 16, 513), _same((4, 4, 2))),
    # N = 1 rows over 1024 steps: 8 warps
    ((8, 1, 17600), _same((8, 8, 1))),
    # N = 4: nothing tuned compiled, the untuned choice by length
    ((8, 4, 4400), _same((16, 4, 1))),
    # few short rows keep the untuned choice
    ((8, 16, 200), _same((8, 1, 1))),
    ((1534, 16, 512), _same((16, 1, 1))),
    # many rows: a warp a row, 2 states a pass, the steps a lane fitted to the row
    ((6144, 16, 77), _same((4, 1, 2))),
    ((35200, 16, 192), _same((6, 1, 2))),
    ((2048, 16, 193), _same((4, 1, 2))),
    ((2048, 16, 320), _same((4, 1, 2))),
    ((8800, 16, 321), _same((12, 1, 2))),
    ((4096, 16, 1100), _same((12, 1, 2))),
    ((1536, 16, 4400), _same((12, 1, 2))),
    # N = 1 short rows keep the untuned choice
    ((2048, 1, 300), _same((16, 1, 1))),
]
