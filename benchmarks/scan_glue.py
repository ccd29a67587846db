"""The fused work around the selective scans (ops/fused_cross_scan.py) against the PyTorch chains it replaces.

At the model's shapes (benchmarks/scan.py: encoder SS2D, CSIM SS2D, TSSM per stage; DDD17 and DSEC sizes, batch 1,
bf16 channels-last input as the model hands it over, float32 scan outputs), per call:
  before the scans: depthwise conv3x3 + SiLU + scan orders; fused kernel vs conv, silu and cross/channel scan;
  after them: merge of the directions + LayerNorm2d (bf16 out); fused kernel vs merge then the LayerNorm2d kernel.
GPU time per call from CUDA-graph replays. The floor is the compulsory traffic (input read once, output written
once) at the measured copy bandwidth.
With --sweep: the spatial kernels' tile shapes at every shape, the fastest printed per shape.
Usage: python benchmarks/scan_glue.py [--no-write] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import table, write_section
from scan import copy_bandwidth, model_shapes, time_call

from mambaseg_core.models.layers import LayerNorm2d
from mambaseg_core.ops import cross_scan as scan_order
from mambaseg_core.ops import fused_cross_scan as fused

GRIDS = {"DDD17": ((50, 87), (25, 44), (13, 22), (7, 11)), "DSEC": ((110, 160), (55, 80), (28, 40), (14, 20))}
SCAN_BLOCKS = ((32, 64), (16, 64), (64, 32), (32, 128), (16, 128), (64, 64), (8, 128))  # (channels, positions)
MERGE_BLOCKS = ((32, 32), (16, 32), (8, 32), (16, 16), (32, 16), (64, 16), (8, 64))  # (rows, columns)


def glue_cases(dataset: str):
    """(label, calls per forward, spatial?, D, H, W) for every scan shape of the model."""
    for shape in model_shapes(dataset):
        height, width = GRIDS[dataset][shape.stage]
        spatial = shape.module != "TSSM"
        inner = shape.channels // 4 if spatial else shape.length
        yield (
            f"{dataset} {shape.module}{shape.stage} (D={inner}, {height}x{width})",
            shape.per_forward,
            spatial,
            inner,
            height,
            width,
        )


def us(fn, repeats: int = 20) -> float:
    """GPU µs per call of fn: `repeats` calls captured in one CUDA graph, the replay timed (the host's launch
    cost, which exceeds most of these kernels, is left out as it is in the model's graph)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # compile and warm up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats):
            fn()
    return time_call(graph.replay, "cuda") / repeats * 1e6


def fastest(calls: dict) -> str:
    """'tile µs' of the fastest call; tiles the kernel cannot launch (resources) are left out."""
    timed = {}
    for tile, call in calls.items():
        try:
            timed[tile] = us(call)
        except Exception as exc:
            print(f"tile {tile}: {type(exc).__name__}", flush=True)
    tile, best = min(timed.items(), key=lambda kv: kv[1])
    return f"{tile} {best:.1f}"


def bench_case(spatial: bool, inner: int, height: int, width: int, copy_bw: float, sweep: bool) -> list[object]:
    """[before: fused, chain, floor µs, best tile], [after: ...] for one shape."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, inner, height, width, generator=gen).to("cuda", torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner).to("cuda", torch.bfloat16)
    norm = LayerNorm2d(inner).cuda()
    pixels = height * width
    directions = 4 if spatial else 2
    ys = torch.randn(1, directions, inner, pixels, generator=gen).cuda()
    if not spatial:
        ys = ys.view(1, 2, pixels, inner)
    bf16 = torch.bfloat16
    if spatial:
        pre_fused = lambda: fused.conv_silu_cross_scan(x, conv)  # noqa: E731
        pre_chain = lambda: scan_order.cross_scan(F.silu(conv(x)))  # noqa: E731
        post_fused = lambda: fused.cross_merge_norm(ys, height, width, norm, bf16)  # noqa: E731
        post_chain = lambda: norm(scan_order.cross_merge(ys, height, width)).to(bf16)  # noqa: E731
    else:
        pre_fused = lambda: fused.conv_silu_channel_scan(x, conv)  # noqa: E731
        pre_chain = lambda: scan_order.channel_scan(F.silu(conv(x)))  # noqa: E731
        post_fused = lambda: fused.channel_merge_norm(ys, height, width, "official", norm, bf16)  # noqa: E731
        post_chain = lambda: norm(scan_order.channel_merge(ys, height, width, "official")).to(bf16)  # noqa: E731
    elements = inner * pixels
    pre_floor = (2 + directions * 2) * elements / copy_bw * 1e6
    post_floor = (directions * 4 + 2) * elements / copy_bw * 1e6
    best_pre = best_post = ""
    if sweep and spatial:
        timed = {b: us(lambda b=b: fused.conv_silu_cross_scan(x, conv, block=b)) for b in SCAN_BLOCKS}
        best_pre = "{} {:.1f}".format(*min(timed.items(), key=lambda kv: kv[1]))
        timed = {
            b: us(lambda b=b: fused.cross_merge_norm(ys, height, width, norm, bf16, block=b)) for b in MERGE_BLOCKS
        }
        best_post = "{} {:.1f}".format(*min(timed.items(), key=lambda kv: kv[1]))
    return [us(pre_fused), us(pre_chain), pre_floor, best_pre, us(post_fused), us(post_chain), post_floor, best_post]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--sweep", action="store_true", help="time every tile shape of the spatial kernels")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("scan_glue.py times CUDA kernels: it needs a GPU")
    copy_bw = copy_bandwidth()
    rows, totals = [], [0.0] * 4
    with torch.no_grad():
        for dataset in ("DSEC", "DDD17"):
            for label, calls, spatial, inner, height, width in glue_cases(dataset):
                r = bench_case(spatial, inner, height, width, copy_bw, args.sweep)
                rows.append([label, calls, *r])
                for i, column in enumerate((0, 1, 4, 5)):
                    totals[i] += calls * r[column] / 1e3 if dataset == "DSEC" else 0.0
                print(rows[-1], flush=True)
    headers = ["shape", "calls", "before: fused µs", "chain µs", "floor µs", "best tile µs", "after: fused µs",
               "chain µs", "floor µs", "best tile µs"]  # fmt: skip
    if not args.sweep:
        headers, rows = headers[:5] + headers[6:9], [r[:5] + r[6:9] for r in rows]
    summary = (
        f"DSEC forward, summed over its calls: before the scans {totals[0]:.2f} ms fused vs {totals[1]:.2f} ms chain; "
        f"after them {totals[2]:.2f} ms fused vs {totals[3]:.2f} ms chain."
    )
    text = table(headers, rows) + "\n\n" + summary
    print(text)
    if not args.no_write:
        write_section("Fused scan glue (conv + SiLU + scan orders; merge + LayerNorm2d)", text)


if __name__ == "__main__":
    main()
