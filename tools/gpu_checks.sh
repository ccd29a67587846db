#!/usr/bin/env bash
# What only a CUDA machine can confirm, step by step, each under its own time limit:
#
#   tools/gpu_checks.sh [STEP ...]      steps, in the order given (default: build tests sweep latency)
#     build     compile the CUDA selective-scan extension (cached in $MAMBASEG_BUILD_DIR or torch's default)
#     tests     every `cuda`-marked test (pytest -m cuda -rs); the official fixture comes from
#               $MAMBASEG_SHARED_DIR/reference (default ../shared/reference), its tests skip without it
#     sweep     benchmarks/scan.py --infer-sweep: every compiled inference-kernel configuration
#     scan      benchmarks/scan.py: every scan backend at the model's shapes
#     ncu       Nsight Compute on the inference scan kernel (occupancy, warp stall reasons, pipe use) at the
#               DSEC CSIM0, CSIM2 and TSSM0 shapes, fp32 and bf16 (benchmarks/scan.py --profile-calls)
#     glue      benchmarks/scan_glue.py: the fused Triton kernels around the scans against their PyTorch chains
#     latency   benchmarks/latency.py: model only, end to end, breakdown, accuracy
#     node      benchmarks/node_latency.py through ROS 2 at DSEC size (needs rclpy and event_camera_msgs)
#
# Logs go to $LOGS (default build/gpu_checks/); the benchmarks update docs/benchmarks.md. A failing step is
# reported and the next one still runs; the exit status is the number of failed steps.
# Environment: PYTHON [python3], LIMIT_S [600: seconds per step], NODE_MODES [the engine modes of `node`].
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOGS=${LOGS:-build/gpu_checks}
LIMIT_S=${LIMIT_S:-600}
NODE_MODES=${NODE_MODES:-"fp32 graph|bf16 graph branches|bf16 compiled graph branches"}
mkdir -p "$LOGS"

step() {
    case "$1" in
    build) "$PY" -c "from mambaseg_core.ops.selective_scan.cuda_scan import load_extension; load_extension()" ;;
    tests) "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider test/ ;;
    sweep) "$PY" benchmarks/scan.py --infer-sweep ;;
    scan) "$PY" benchmarks/scan.py ;;
    ncu)
        ncu --clock-control none -k regex:scan_fwd_infer_kernel --section SpeedOfLight --section Occupancy \
            --section LaunchStats --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
            "$PY" benchmarks/scan.py --profile-calls
        ;;
    glue) "$PY" benchmarks/scan_glue.py ;;
    latency) "$PY" benchmarks/latency.py ;;
    node)
        local modes=()
        IFS='|' read -r -a modes <<<"$NODE_MODES"
        "$PY" benchmarks/node_latency.py --device cuda:0 --image-size 480x640 --image-fit crop_bottom --rate 20 \
            --frames 100 --modes "${modes[@]}"
        ;;
    *)
        echo "unknown step '$1' (build tests sweep scan ncu glue latency node)" >&2
        return 2
        ;;
    esac
}

if [ "${1:-}" = "--one" ]; then # one step, as a child process that `timeout` can stop
    step "$2"
    exit
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_checks.sh: no CUDA device')" || exit 1
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build tests sweep latency)
failed=0
for one in "${steps[@]}"; do
    started=$SECONDS
    if timeout "$LIMIT_S" "$0" --one "$one" >"$LOGS/$one.log" 2>&1; then
        echo "ok      $one ($((SECONDS - started)) s)"
    else
        echo "FAILED  $one ($((SECONDS - started)) s): tail of $LOGS/$one.log"
        tail -n 15 "$LOGS/$one.log" | sed 's/^/        /'
        failed=$((failed + 1))
    fi
done
exit "$failed"
