"""Selective-scan backends at the real MambaSeg scan shapes: time, achieved bandwidth, scans per forward.

Shapes (model spec §1, §3, §4), per stage i with C_i = 96 * 2^i channels and HW_i tokens:
  encoder SS2D  u (1, 4*C_i, HW_i),  N = 1,  4 groups; 2 branches x depth_i blocks (2, 2, 8, 2) per forward
  CSIM SS2D     u (1, 8*C_i, HW_i),  N = 16, 4 groups; 2 per stage (image, events)
  TSSM          u (1, 2*HW_i, 2*C_i), N = 16, 2 groups; 2 per stage (image, events)
On a GPU: DDD17 (200x346) and DSEC (440x640) sizes, forward and forward+backward, every available backend, and
the bandwidth each reaches against the compulsory bytes (inputs read once, output written once) and a measured
device-to-device copy. On CPU: the DDD17 forward set with the torch backend only (what inference on the robot's
CPU costs). With --infer-sweep instead: every compiled configuration of the CUDA warp-scan inference kernel
(steps per lane, warps per row, states per pass; fp16 has the rule's picks only) and the state-resident kernel in
several segment lengths, at the N = 16 shapes and the stage-0 encoder shape, fp32, bf16 and fp16 inputs (or
--dtypes) (issues #3, #11).
Usage: python benchmarks/scan.py [--no-write] [--infer-sweep [--dtypes fp16 ...] | --profile-calls]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import table, write_section

from mambaseg_core.ops.selective_scan import available_backends, selective_scan
from mambaseg_core.ops.selective_scan.cuda_scan import (
    default_inference_config,
    inference_configs,
    load_extension,
    resident_plan,
    selective_scan_infer_config,
    selective_scan_resident,
    uses_resident_kernel,
)

CHANNELS = (96, 192, 384, 768)
DEPTHS = (2, 2, 8, 2)
TOKENS = {"DDD17": (4350, 1100, 286, 77), "DSEC": (17600, 4400, 1120, 280)}
CPU_BACKENDS = ("numba", "torch")  # inference on a robot's CPU: the numba loop, and the differentiable fallback
REFERENCE_MAX_STEPS = 1200  # the reference loops over L in Python: skip it beyond this


@dataclass(frozen=True)
class ScanShape:
    dataset: str
    module: str
    stage: int
    channels: int
    state: int
    length: int
    groups: int
    per_forward: int  # calls of this shape in one model forward

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.module}{self.stage} ({self.channels}, N={self.state}, L={self.length})"

    def forward_bytes(self, elem: int = 4) -> int:
        """Compulsory traffic of the forward: read u, delta, B, C once, write y (fp32) once."""
        return (2 * self.channels + 2 * self.groups * self.state) * self.length * elem + 4 * self.channels * self.length

    def backward_bytes(self, elem: int = 4) -> int:
        """Backward: read u, delta, B, C and dy, write du, ddelta, dB, dC (fp32)."""
        rows, groups = self.channels * self.length, self.groups * self.state * self.length
        return (2 * rows + 2 * groups) * elem + 4 * rows + 4 * (2 * rows + 2 * groups)


def model_shapes(dataset: str) -> list[ScanShape]:
    shapes = []
    for i, (c, hw) in enumerate(zip(CHANNELS, TOKENS[dataset], strict=True)):
        shapes.append(ScanShape(dataset, "encoder", i, 4 * c, 1, hw, 4, 2 * DEPTHS[i]))
        shapes.append(ScanShape(dataset, "CSIM", i, 8 * c, 16, hw, 4, 2))
        shapes.append(ScanShape(dataset, "TSSM", i, 2 * hw, 16, 2 * c, 2, 2))
    return shapes


def make_inputs(
    shape: ScanShape, device: str, requires_grad: bool, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)

    def rand(*size: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        x = (torch.randn(*size, generator=gen) * scale + shift).to(device)
        return x.requires_grad_(requires_grad)

    def rand_io(*size: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        """u, delta, B, C in `dtype` (A, D and delta_bias stay float32)."""
        x = (torch.randn(*size, generator=gen) * scale + shift).to(device, dtype)
        return x.requires_grad_(requires_grad)

    r, n, length, g = shape.channels, shape.state, shape.length, shape.groups
    return {
        "u": rand_io(1, r, length),
        "delta": rand_io(1, r, length, scale=0.5, shift=-1.0),
        "A": rand(r, n, scale=0.5).detach().exp().neg().requires_grad_(requires_grad),
        "B": rand_io(1, g, n, length),
        "C": rand_io(1, g, n, length),
        "D": rand(r),
        "delta_bias": rand(r, scale=0.3),
    }


def time_call(fn: Callable[[], object], device: str, budget_s: float = 0.3, max_reps: int = 50) -> float:
    """Median seconds of fn() after a warm-up; device work is synchronised around every repetition."""
    fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - start_all < budget_s):
        if device == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_kernel_times(fn: Callable[[], object], reps: int = 5) -> dict[str, float]:
    """Seconds of GPU time per fn() call of each kernel (torch.profiler): no host launch overhead."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if str(getattr(e, "device_type", "")).endswith("CUDA")]
    return {e.key: e.self_device_time_total / reps / 1e6 for e in kernels}


def gpu_busy_time(fn: Callable[[], object]) -> float:
    return sum(gpu_kernel_times(fn).values())


def copy_bandwidth() -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read plus bytes written."""
    src = torch.randn(256 << 20, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    seconds = time_call(lambda: dst.copy_(src), "cuda")
    return 2 * src.numel() * src.element_size() / seconds


def bench_shape(shape: ScanShape, backends: list[str], copy_bw: float) -> tuple[list[list[str]], dict[str, float]]:
    """Table rows for one shape and the forward seconds of each backend."""
    fwd_in = make_inputs(shape, "cuda", requires_grad=False)
    bwd_in = make_inputs(shape, "cuda", requires_grad=True)
    rows, forward_s, outputs = [], {}, {}
    for backend in [*backends, "reference"]:
        if backend == "reference" and shape.length > REFERENCE_MAX_STEPS:
            rows.append([shape.label, backend, "skipped: sequential loop too slow at this L", "", "", "", "", ""])
            continue

        def fwd(b: str = backend) -> torch.Tensor:
            with torch.no_grad():
                return selective_scan(**fwd_in, delta_softplus=True, backend=b)

        def fwd_bwd(b: str = backend) -> None:
            selective_scan(**bwd_in, delta_softplus=True, backend=b).sum().backward()

        outputs[backend] = fwd()
        forward_s[backend] = time_call(fwd, "cuda")
        kernel_s = gpu_busy_time(fwd) if backend != "reference" else float("nan")
        forward_s[backend + " kernels"] = kernel_s
        both = time_call(fwd_bwd, "cuda", max_reps=1 if backend == "reference" else 50)
        bw = shape.forward_bytes() / kernel_s
        bw_both = (shape.forward_bytes() + shape.backward_bytes()) / both
        first = outputs[backends[0]]
        err = ((outputs[backend] - first).abs().max() / first.abs().max()).item()
        rows.append(
            [
                shape.label,
                backend,
                f"{forward_s[backend] * 1e6:.1f}",
                f"{kernel_s * 1e6:.1f}",
                f"{bw / 1e9:.0f} ({bw / copy_bw:.0%})" if backend != "reference" else "",
                f"{both * 1e6:.1f}",
                f"{bw_both / 1e9:.0f} ({bw_both / copy_bw:.0%})",
                f"{err:.1e}",
            ]
        )
    return rows, forward_s


def kernel_breakdown(shape: ScanShape) -> str:
    """GPU time of each kernel of the cuda backend's forward and forward+backward at `shape`."""
    fwd_in = make_inputs(shape, "cuda", requires_grad=False)
    bwd_in = make_inputs(shape, "cuda", requires_grad=True)

    def fwd() -> None:
        with torch.no_grad():
            selective_scan(**fwd_in, delta_softplus=True, backend="cuda")

    def fwd_bwd() -> None:
        selective_scan(**bwd_in, delta_softplus=True, backend="cuda").sum().backward()

    rows = [["forward", name[:90], f"{t * 1e6:.1f}"] for name, t in gpu_kernel_times(fwd).items()]
    rows += [["forward+backward", name[:90], f"{t * 1e6:.1f}"] for name, t in gpu_kernel_times(fwd_bwd).items()]
    return table(["call", "kernel", "µs"], rows)


def bench_gpu(backends: list[str]) -> tuple[str, str]:
    copy_bw = copy_bandwidth()
    rows, totals = [], {b + suffix: 0.0 for b in backends for suffix in ("", " kernels")}
    stage0 = None
    for shape in model_shapes("DDD17") + model_shapes("DSEC"):
        shape_rows, forward_s = bench_shape(shape, backends, copy_bw)
        rows += shape_rows
        if shape.dataset == "DSEC":
            for key in totals:
                totals[key] += shape.per_forward * forward_s[key]
            if shape.module == "encoder" and shape.stage == 0:
                breakdown = kernel_breakdown(shape) if backends[0] == "cuda" else ""
                stage0 = (forward_s[backends[0] + " kernels"], shape.forward_bytes() / copy_bw, breakdown)
        torch.cuda.empty_cache()
    headers = [
        "shape (channels, N, L)",
        "backend",
        "fwd µs (wall)",
        "fwd µs (GPU kernels)",
        "fwd GB/s of kernels (% of copy)",
        "fwd+bwd µs",
        "fwd+bwd GB/s (of copy)",
        f"max rel diff vs {backends[0]}",
    ]
    calls = sum(s.per_forward for s in model_shapes("DSEC"))
    summary = [
        f"Device-to-device copy: {copy_bw / 1e9:.0f} GB/s (read + write). Compulsory bytes: u, delta, B, C read "
        "once and y written once (fp32 inputs); the backward adds dy, du, ddelta, dB, dC.",
        "",
        "Wall time is per call with the host's launch overhead (events around the call); GPU kernel time is what "
        "the profiler measured on the device. The fwd+bwd bandwidth uses wall time.",
        "",
        f"One DSEC-size model forward makes {calls} scans (encoder 2 branches x 14 blocks, 2 CSIM and 2 TSSM per "
        "stage); their summed forward time:",
        "",
        table(["backend", "scans of one DSEC forward, ms"], [[b, f"{t * 1e3:.2f}"] for b, t in totals.items()]),
    ]
    if stage0:
        summary += [
            "",
            f"DSEC stage-0 encoder scan (384, N=1, L=17600), {backends[0]} kernels: {stage0[0] * 1e6:.1f} µs; "
            f"memory floor {stage0[1] * 1e6:.1f} µs at the measured copy bandwidth. Per kernel:",
            "",
            stage0[2],
        ]
    return table(headers, rows), "\n".join(summary)


def bench_cpu() -> tuple[str, str]:
    """DDD17 forward set, numba and torch backends; wall time and process CPU time (the box may be shared)."""
    rows, wall_total, cpu_total = [], dict.fromkeys(CPU_BACKENDS, 0.0), dict.fromkeys(CPU_BACKENDS, 0.0)
    for shape in model_shapes("DDD17"):
        inputs = make_inputs(shape, "cpu", requires_grad=False)
        for backend in CPU_BACKENDS:

            def fwd(i: dict[str, torch.Tensor] = inputs, b: str = backend) -> None:
                with torch.no_grad():
                    selective_scan(**i, delta_softplus=True, backend=b)

            wall = time_call(fwd, "cpu", 1.0, 5)
            cpu_start = time.process_time()
            fwd()
            cpu = time.process_time() - cpu_start
            wall_total[backend] += shape.per_forward * wall
            cpu_total[backend] += shape.per_forward * cpu
            rows.append([shape.label, backend, f"{wall * 1e3:.1f}", f"{cpu * 1e3:.1f}", shape.per_forward])
    calls = sum(s.per_forward for s in model_shapes("DDD17"))
    summary = "\n".join(
        f"All {calls} scans of one DDD17 model forward ({backend} backend, no grad, {torch.get_num_threads()} torch "
        f"threads): {wall_total[backend]:.2f} s wall, {cpu_total[backend]:.2f} s of process CPU time."
        for backend in CPU_BACKENDS
    )
    headers = ["shape (channels, N, L)", "backend", "fwd ms (wall)", "fwd ms (process CPU)", "calls per forward"]
    return table(headers, rows), summary


def sweep_shapes() -> list[ScanShape]:
    """Every scan shape of both datasets: the encoders' (N = 1), the CSIM's and the TSSM's (N = 16)."""
    return model_shapes("DDD17") + model_shapes("DSEC")


def graph_time_us(fn: Callable[[], object], repeats: int = 15, calls: int = 10) -> float:
    """Median GPU µs per call: `calls` back-to-back calls captured in a CUDA graph and replayed between CUDA
    events (so no host launch overhead in the number), after a warm-up on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


RESIDENT_SEGMENTS = (32, 64, 128, 192, 256, 384, 512)  # steps per segment tried beside the default plan (and one
RESIDENT_ONE_SEGMENT_MAX = 4096  # segment a row, up to this L), with 1, 2 and 4 lanes a row
SWEEP_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bench_infer_configs(dtype_names: list[str]) -> tuple[str, str]:
    """Every compiled warp-scan configuration, and the state-resident kernel (N = 16) in its default plan and in
    RESIDENT_SEGMENTS, at every sweep shape and dtype: the table, and a summary of the default's (what the `cuda`
    backend runs: the state-resident kernel where `uses_resident_kernel`, else the warp scan's default
    configuration) and the fastest variant's time per shape."""
    rows, best = [], []
    for shape in sweep_shapes():
        for dtype_name in dtype_names:
            dtype = SWEEP_DTYPES[dtype_name]
            inputs = make_inputs(shape, "cuda", requires_grad=False, dtype=dtype)
            variants: dict[str, Callable[[], torch.Tensor]] = {}
            for config in inference_configs(dtype, shape.state):
                variants[f"warp scan {tuple(config)}"] = lambda c=config, i=inputs: selective_scan_infer_config(
                    **i, delta_softplus=True, config=c
                )
            config = default_inference_config(shape.channels, shape.length, dtype, shape.state)
            default = f"warp scan {tuple(config)}"
            if shape.state >= 9:
                plan = resident_plan(1, shape.channels, shape.groups, shape.length)
                plan_label = f"resident {plan.segment_len} x {plan.segments}, {plan.lanes_per_row} lanes"
                variants[plan_label] = lambda i=inputs: selective_scan_resident(**i, delta_softplus=True)
                if uses_resident_kernel(shape.channels, shape.length, shape.state):
                    default = plan_label
                lengths = [n for n in RESIDENT_SEGMENTS if n < shape.length]
                lengths += [shape.length] if shape.length <= RESIDENT_ONE_SEGMENT_MAX else []
                for lanes in (1, 2, 4):
                    for segment_len in lengths:
                        tiles = -(-segment_len // 32)
                        label = f"resident {32 * tiles} x {-(-shape.length // (32 * tiles))}, {lanes} lanes"
                        variants.setdefault(
                            label,
                            lambda n=segment_len, k=lanes, i=inputs: selective_scan_resident(
                                **i, delta_softplus=True, segment_len=n, lanes_per_row=k
                            ),
                        )

            def tiled(i: dict[str, torch.Tensor] = inputs) -> torch.Tensor:
                # The training forward: rows split into tiles over many blocks (maps, carries, rescan launches).
                keys = ("u", "delta", "A", "B", "C", "D", "delta_bias")
                return load_extension().forward(*(i[k] for k in keys), True)[0]

            with torch.no_grad():
                expected = variants[default]()
                scale = expected.abs().max()
                timed = []
                for label, scan in variants.items():
                    err = ((scan() - expected).abs().max() / scale).item()
                    timed.append((label, graph_time_us(scan), err))
                tiled_err = ((tiled() - expected).abs().max() / scale).item()
                tiled_us = graph_time_us(tiled)
            default_us = next(us for label, us, _ in timed if label == default)
            for label, us, err in timed:
                label_cell = label + (" default" if label == default else "")
                rows.append([shape.label, dtype_name, label_cell, f"{us:.1f}", f"{default_us / us:.2f}", f"{err:.1e}"])
            tiled_cells = [f"{tiled_us:.1f}", f"{default_us / tiled_us:.2f}", f"{tiled_err:.1e}"]
            rows.append([shape.label, dtype_name, "training forward (tiled)", *tiled_cells])
            warp_label, warp_us, _ = min((t for t in timed if t[0].startswith("warp")), key=lambda t: t[1])
            fastest, fastest_us, _ = min(timed, key=lambda t: t[1])
            best.append(
                [
                    shape.label,
                    dtype_name,
                    f"{default}: {default_us:.1f}",
                    f"{fastest}: {fastest_us:.1f}",
                    f"{warp_label}: {warp_us:.1f}",
                    f"{tiled_us:.1f}",
                ]
            )
    headers = ["shape (channels, N, L)", "dtype", "kernel", "µs", "x vs default", "rel diff"]
    summary = "\n".join(
        [
            "GPU time per call of the inference kernels: 10 calls captured in a CUDA graph, median of 15 replays; "
            "batch 1, softplus, D and delta_bias given. `warp scan (items, warps, states)`: the warp-scan kernel "
            "(`selective_scan_infer_config`; steps per lane, warps per row, states per pass). `resident S x K`: the "
            "state-resident kernel (`selective_scan_resident`), rows cut into K segments of S steps (its compose, "
            "carry and apply launches together). x vs default > 1 is faster than what the `cuda` backend runs; "
            "rel diff = max |y - y_default| / max |y_default|. `training forward (tiled)`: the forward the backward "
            "needs (a map launch, a carry launch, a rescan launch).",
            "",
            table(
                [
                    "shape (channels, N, L)",
                    "dtype",
                    "default: µs",
                    "fastest: µs",
                    "fastest warp scan: µs",
                    "training forward µs",
                ],
                best,
            ),
        ]
    )
    return table(headers, rows), summary


def profile_calls() -> None:
    """One default inference call per representative N = 16 shape and dtype, untimed: the workload for a
    hardware-counter profile (tools/gpu_checks.sh ncu), one kernel launch per (shape, dtype)."""
    wanted = {("DSEC", "CSIM", 0), ("DSEC", "CSIM", 2), ("DSEC", "TSSM", 0)}
    for shape in model_shapes("DSEC"):
        if (shape.dataset, shape.module, shape.stage) not in wanted:
            continue
        for dtype in (torch.float32, torch.bfloat16):
            inputs = make_inputs(shape, "cuda", requires_grad=False, dtype=dtype)
            with torch.no_grad():
                selective_scan(**inputs, delta_softplus=True, backend="cuda")
            torch.cuda.synchronize()
            config = default_inference_config(shape.channels, shape.length, dtype, shape.state)
            print(f"launched {shape.label} {dtype}: {tuple(config)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--backends", nargs="+", help="GPU backends to time (default: every available one)")
    parser.add_argument(
        "--infer-sweep", action="store_true", help="time every compiled configuration of the CUDA inference kernels"
    )
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(SWEEP_DTYPES), default=list(SWEEP_DTYPES), help="--infer-sweep dtypes"
    )
    parser.add_argument(
        "--profile-calls", action="store_true", help="one untimed inference call per profiled shape (for ncu)"
    )
    args = parser.parse_args()
    if args.profile_calls:
        if not torch.cuda.is_available():
            raise SystemExit("--profile-calls launches the CUDA kernel and needs a GPU")
        profile_calls()
        return
    if args.infer_sweep:
        if not torch.cuda.is_available():
            print("no CUDA: the inference-configuration sweep times the CUDA kernel and needs a GPU; nothing to do")
            return
        body, summary = bench_infer_configs(args.dtypes)
        name = "Selective scan inference configurations"
    elif torch.cuda.is_available():
        backends = [b for b in available_backends("cuda") if b != "reference" and b in (args.backends or [b])]
        body, summary = bench_gpu(backends)
        name = "Selective scan"
    else:
        body, summary = bench_cpu()
        name = "Selective scan (CPU)"
    text = f"{summary}\n\n{body}\n"
    print(text)
    if not args.no_write:
        write_section(name, text)


if __name__ == "__main__":
    main()
