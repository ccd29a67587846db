"""The CUDA selective-scan kernels, run without a GPU by the host emulator of test/cuda_emulator: the inference kernel
(scan_fwd_infer.cu) and the training path (scan_fwd.cu forward, scan_bwd.cu backward, the carry kernel between).

The real kernel sources are copied, their `<<<...>>>` launches rewritten for emu.h, and compiled with the system C++
compiler against the CUDA host headers; the drivers run the kernels with lanes as fibers in an adversarial order
(warps drift apart, so shared-memory races show up) and check them against a float64 reference: y for every compiled
inference configuration (driver.cpp), y and every gradient for the training kernels (train_driver.cpp).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

import pytest
from scan_launch_rule import DEFAULT_CONFIG_CASES

REPO = Path(__file__).resolve().parents[1]
# Overridable to run the test on a modified copy of the kernel sources (e.g. a planted bug, to see it fail).
CSRC = Path(os.environ.get("MAMBASEG_EMULATED_CSRC", REPO / "mambaseg_core" / "ops" / "selective_scan" / "csrc"))
EMULATOR = Path(__file__).resolve().parent / "cuda_emulator"
# The headers the driver includes, and what cuda_runtime.h / cuda_bf16.h include in turn from other packages.
REQUIRED_HEADERS = ("cuda_runtime.h", "cuda_bf16.h", "cuda_fp16.h", "crt/host_defines.h", "nv/target")

# `kernel<template args><<<launch config>>>(args);`, arguments possibly over several lines.
LAUNCH = re.compile(r"(?P<kernel>\b[A-Za-z_]\w*(?:<[^;<>]*>)?)\s*<<<(?P<config>.*?)>>>\s*\((?P<args>[^;]*)\)\s*;", re.S)

# dtype,N,L,groups,softplus[,skip_and_bias[,channels]] (D and delta_bias given unless 0; 2 channels unless given). A
# chunk is warps * 32 * items steps: 512 to 4096 over the compiled configurations. 37: one chunk with an odd tail.
# 2084..2120: one 2048-step chunk (the default for long rows, 4 warps of 16 items) and a tail, several of the smaller
# chunks. 4133: three 2048-step chunks, so each chunk parity of the double-buffered warp totals is reused, and past one
# 4096-step chunk; at N = 1 (one pass per chunk) that reuse is where a single-buffered version races. L a multiple of 4
# (fp32) or 8 (bf16) aligns every row for the 16-byte loads; odd L leaves all rows but the first on the scalar path. N =
# 4 without D and delta_bias: the kernel's null-pointer path and its N <= 4 instance.
CASES = (
    "fp32,16,37,2,1",
    "fp32,16,4133,1,0",
    "fp32,13,2084,2,1",
    "fp32,1,37,1,0",
    "fp32,1,4133,2,1",
    "bf16,16,2120,2,1",
    "bf16,13,37,1,0",
    "bf16,1,4133,1,0",
    "fp16,16,2085,2,1",
    "fp16,1,4133,1,0",
    "fp32,4,600,2,1,0",
    # The state-resident kernel (N >= 9; lanes are channels): 70 channels in 2 groups leave each group's second warp
    # 3 lanes, 66 in one group 2; L = 130 and 75 end inside a 32-step tile.
    "bf16,16,130,2,1,1,70",
    "fp16,13,75,1,0,0,66",
    "fp32,16,300,2,1,1,64",
)
DEFAULT_CONFIG_COUNT = 4  # DefaultConfigs: compiled for every dtype and N

# Training cases (as CASES) -> tiles per row that choose_tiling gives them (a tile is at most 256
# threads of 4 steps, of 8 at N = 1): single-tile rows of one warp and of 4 or 8 warps, and multi-tile rows (the
# map-only launch, the carry kernel, the rescan; forward and backward) with a short tail tile, a full last tile,
# or an odd tail. groups = 1 makes two channels add into every dB and dC element. 13 leaves 3 padded states. N = 4
# without D and delta_bias: null pointers to both kernels, no dD and ddelta_bias.
TRAIN_CASES = {
    "fp32,16,37,2,1": 1,
    "fp32,16,700,1,0": 1,
    "fp32,16,2085,1,0": 3,
    "fp32,1,37,1,0": 1,
    "fp32,1,4133,2,1": 3,
    "bf16,16,300,1,1": 1,
    "bf16,16,1030,2,1": 2,
    "bf16,1,4096,1,0": 2,
    "fp16,13,1100,2,1": 2,
    "bf16,4,1500,2,0,0": 2,
}
REFERENCE_GRADIENT_CHECKS = 14  # 7 gradients, 2 problems


def describe(case: str) -> str:
    """How the drivers' lines name `case` (dtype,N,L,groups,softplus[,skip_and_bias[,channels]]): harness.h's
    describe()."""
    dtype, state, length, groups, softplus, *rest = case.split(",")
    skip_and_bias = rest[0] if rest else "1"
    channels = f" channels={rest[1]}" if len(rest) > 1 else ""
    return f"{dtype} N={state} L={length} groups={groups} softplus={softplus} skip_and_bias={skip_and_bias}{channels}"


def rewrite_launches(source: str) -> tuple[str, int]:
    """Rewrites every `kernel<<<grid, block, smem, stream>>>(args);` of `source` for emu.h, as
    `emu_launch([&] { kernel(args); }, grid, block, smem, stream);`; returns the new source and the count.
    """
    return LAUNCH.subn(lambda m: f"emu_launch([&] {{ {m['kernel']}({m['args']}); }}, {m['config']});", source)


def copy_rewritten_sources(destination: Path) -> int:
    """Copies the kernel headers and .cu files with every launch rewritten; returns the launch count.

    Raises AssertionError naming the file if a `<<<` is left over or the rewrite count differs from it.
    """
    sources = sorted(CSRC.glob("*.h")) + sorted(CSRC.glob("*.cuh")) + sorted(CSRC.glob("*.cu"))
    total = 0
    for path in sources:
        text = path.read_text()
        expected = text.count("<<<")
        rewritten, count = rewrite_launches(text)
        assert count == expected and "<<<" not in rewritten, (
            f"{path.name}: rewrote {count} of {expected} kernel launches; update LAUNCH in {Path(__file__).name}"
        )
        (destination / path.name).write_text(rewritten)
        total += count
    return total


def cuda_include_dir() -> Path | None:
    """A directory holding every CUDA host header in REQUIRED_HEADERS: a CUDA toolkit, or the pip wheels
    nvidia-cuda-runtime, nvidia-cuda-crt and nvidia-cuda-cccl (CUDA 13 layout, nvidia/cu13/include)."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates = [Path(root) / "include" for root in roots if root]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/local/cuda-*/include"), reverse=True)]
    candidates += [Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13" / "include"]
    for directory in candidates:
        if all((directory / header).is_file() for header in REQUIRED_HEADERS):
            return directory
    return None


def test_every_launch_is_rewritten(tmp_path: Path) -> None:
    """The rewrite finds the launches of the inference kernel, both of the state-resident kernel (compose and apply),
    the carry kernel, and both launches (map-only and full) of the training forward and backward kernels."""
    count = copy_rewritten_sources(tmp_path)
    print("launches rewritten:", count)
    assert count >= 8
    expected = {
        "scan_fwd_infer.cu": ["scan_fwd_infer_kernel<T, kMaxN, kItems, kWarps, kStates>(p); }"],
        "scan_fwd_resident.cu": [f"scan_fwd_resident_kernel<T, {compose}, kSplit>(p" for compose in ("true", "false")],
        "scan_common.cuh": ["carry_kernel<kReverse>(maps, carries, rows,"],
        "scan_fwd.cu": [f"scan_fwd_kernel<T, kMaxN, kItems, {map_only}>(p); }}" for map_only in ("true", "false")],
        "scan_bwd.cu": [f"scan_bwd_kernel<T, kMaxN, kItems, {map_only}>(p); }}" for map_only in ("true", "false")],
    }
    for name, launches in expected.items():
        rewritten = (tmp_path / name).read_text()
        for launch in launches:
            assert f"emu_launch([&] {{ {launch}" in rewritten, f"{name}: no rewritten launch of {launch}"


DRIVERS = ("driver", "train_driver")  # test/cuda_emulator/<name>.cpp


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every driver of DRIVERS compiled against the rewritten kernel sources (side by side), by name."""
    wanted = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++"]
    compiler = next((path for path in map(shutil.which, wanted) if path), None)
    if compiler is None:
        pytest.skip(f"needs a C++ compiler to build the CUDA emulator: none of {' / '.join(wanted)} found")
    include = cuda_include_dir()
    if include is None:
        pytest.skip(
            f"needs the CUDA host headers {', '.join(REQUIRED_HEADERS)}: set CUDA_HOME to a CUDA toolkit, or "
            "pip install nvidia-cuda-runtime nvidia-cuda-crt nvidia-cuda-cccl"
        )
    build = tmp_path_factory.mktemp("cuda_emulator")
    copy_rewritten_sources(build)
    flags = ["-O2", "-std=c++17", "-fno-strict-aliasing", f"-I{build}", f"-I{include}"]
    commands = {name: [compiler, *flags, str(EMULATOR / f"{name}.cpp"), "-o", str(build / name)] for name in DRIVERS}
    compiles = {name: subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for name, cmd in commands.items()}
    errors = {name: process.communicate()[1] for name, process in compiles.items()}  # every compile finishes
    for name, process in compiles.items():
        assert process.returncode == 0, f"compiling {name} failed:\n{' '.join(commands[name])}\n{errors[name]}"
    return {name: build / name for name in DRIVERS}


def run_driver(binary: Path, cases: Iterable[str]) -> list[str]:
    """Runs a driver on `cases`; returns its "ok ..." lines, after asserting it exited 0 with no "FAIL" line."""
    result = subprocess.run([str(binary), *cases], capture_output=True, text=True, timeout=300)
    sys.stdout.write(result.stdout)
    lines = [line for line in result.stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    failed = [line for line in lines if not line.startswith("ok ")]
    exit_status = result.returncode
    assert exit_status == 0 and not failed, f"{binary.name} exit status {exit_status}, failed checks:\n" + "\n".join(
        [*failed, result.stderr]
    )
    return lines


def test_inference_kernel_matches_reference_under_emulation(drivers: dict[str, Path]) -> None:
    """Every compiled configuration of the warp-scan kernel (fp32, bf16 and fp16), N 16 / 13 / 4 / 1, one and several
    chunks, softplus on and off, groups 1 and 2, with and without D and delta_bias: close to the float64 reference,
    and bit-identical across states per pass. The state-resident kernel at N 16 / 13: close to the reference with
    one and several segments per row, and with partly empty warps."""
    lines = run_driver(drivers["driver"], CASES)
    for case in CASES:
        prefix = f"ok {describe(case)} "
        resident = sum(line.startswith(prefix + "resident ") for line in lines)
        warp_scan = sum(line.startswith(prefix + "config=") for line in lines)
        state = case.split(",")[1]
        # The state-resident kernel at N >= 9 in four plans (1, 2 and 4 lanes a row, several segments per row).
        assert resident == (4 if int(state) >= 9 else 0), f"{case}: {resident} state-resident runs"
        if len(case.split(",")) == 7:  # more channels: the state-resident kernel only
            assert warp_scan == 0 and any("segments=1 " not in line for line in lines if line.startswith(prefix))
            continue
        # At N = 1 and N in 9..16 every dtype also compiles the rule's picks (fp32 and bf16 tuning variants too).
        tuned = state in ("16", "13", "1")
        assert warp_scan >= DEFAULT_CONFIG_COUNT + tuned, f"{case}: only {warp_scan} configurations ran"


def test_inference_softplus_reads_out_exactly_under_emulation(drivers: dict[str, Path]) -> None:
    """dt = softplus(delta) read out of the warp-scan kernel and the state-resident kernel (2 and 4 lanes a row), deltas
    from -14 to 26: the half-precision form (a series where e^x <= 0.05, else the log of 1 + e^x; exact exp and log
    here) and fp32's log1pf within 2e-6 relative of float64 on every branch."""
    readouts = [f"{dtype},{state}" for dtype in ("fp32", "bf16", "fp16") for state in (16, 1)]
    lines = run_driver(drivers["driver"], ["--softplus-readout", "--softplus-tolerance=2e-6", *readouts])
    assert len(lines) == 3 * (3 + 1), lines  # per dtype: N = 16 through 3 launches, N = 1 through the warp scan


def test_default_launch_rule_under_emulation(drivers: dict[str, Path]) -> None:
    """default_infer_config, compiled for the host from the same source, picks the configuration scan_launch_rule.py
    names for every shape and dtype (the GPU test checks the same table through the extension)."""
    shapes = [",".join(map(str, shape)) for shape, _ in DEFAULT_CONFIG_CASES]
    result = subprocess.run(
        [str(drivers["driver"]), "--default-config", *shapes], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for shape, (_, expected) in zip(shapes, DEFAULT_CONFIG_CASES):
        want = " ".join(f"{dtype}={','.join(map(str, expected[dtype]))}" for dtype in ("fp32", "bf16", "fp16"))
        assert printed[shape] == want, f"rows,N,L = {shape}"


# (channels, groups, L) of batch 1 at N = 16 -> (uses the state-resident kernel, its default plan: segment steps,
# segments, lanes a row), as csrc/scan_infer.h's rule and plan_resident give them.
RESIDENT_PLAN_CASES = {
    (768, 4, 17600): (True, (160, 110, 2)),  # DSEC stage-0 CSIM: 48 row-warps, segments to about 6144 warps
    (35200, 2, 192): (True, (192, 1, 2)),  # DSEC stage-0 TSSM: 2200 row-warps, one segment each
    (1536, 4, 4400): (True, (96, 46, 2)),  # DSEC stage-1 CSIM: 96 row-warps x 35 segments of 128 steps >= 3072
    (768, 4, 4350): (False, (64, 68, 2)),  # DDD17 stage-0 CSIM: the warp scan (48 x 34 < 3072)
    (3072, 4, 1120): (False, (64, 18, 2)),  # DSEC stage-2 CSIM: the warp scan (192 x 9 < 3072)
    (8800, 2, 384): (False, (32, 12, 2)),  # DSEC stage-1 TSSM: 550 row-warps, one tile a segment
    (70, 2, 301): (False, (32, 10, 2)),  # tiny (6 row-warps): segments down to one tile
}


def test_state_resident_rule_and_plan_under_emulation(drivers: dict[str, Path]) -> None:
    """uses_resident and plan_resident, compiled for the host from the kernel source, give the launches the H100 sweep
    chose (the GPU test checks the same through the extension)."""
    shapes = [",".join(map(str, shape)) for shape in RESIDENT_PLAN_CASES]
    result = subprocess.run(
        [str(drivers["driver"]), "--resident-plan", *shapes], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    printed = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for shape, (resident, plan) in zip(shapes, RESIDENT_PLAN_CASES.values()):
        assert printed[shape] == f"uses_resident={int(resident)} plan={','.join(map(str, plan))}", shape


def test_training_kernels_match_reference_under_emulation(drivers: dict[str, Path]) -> None:
    """The training forward then backward, buffers sized as scan_binding.cpp sizes them: y, du, ddelta, dA, dB, dC,
    dD and ddelta_bias close to float64 reference gradients of sum(y * dy), themselves checked against finite
    differences; single- and multi-tile rows, N 16 / 13 / 4 / 1, fp32, bf16 and fp16, groups 1 and 2, softplus on
    and off, with and without D and delta_bias."""
    lines = run_driver(drivers["train_driver"], TRAIN_CASES)
    assert sum(line.startswith("ok reference gradient ") for line in lines) == REFERENCE_GRADIENT_CHECKS
    for case, tiles in TRAIN_CASES.items():
        prefix = f"ok {describe(case)} tiles={tiles} "
        assert any(line.startswith(prefix) for line in lines), f"{case}: no line starting {prefix!r}"
