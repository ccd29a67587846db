#!/usr/bin/env bash
# The demo model and its modality ablation on one GPU, in one command that finishes within a wall-clock budget:
#
#   RESULTS=$OUT/demo tools/train_demo_gpu.sh     one GPU + 16 cores: about 8 minutes, data generation included
#   tools/train_demo_gpu.sh --smoke               the same steps on a CPU at toy sizes (2-3 min): checks the plumbing
#
# 1. Writes the seeded synthetic dataset (tools/demo_model.py generate, one process per core) while the CUDA
#    selective scan compiles in the background.
# 2. Trains the fused, image_only and events_only variants of config/train/synthetic_demo_gpu.yaml concurrently
#    (three mambaseg-train processes; on one GPU, or with several the fused one alone on GPU 0 and the ablations on
#    the others), each with runtime.max_minutes = what is left of the budget.
# 3. Evaluates every best-on-val checkpoint on the test split, overall and per lighting condition.
# 4. Writes at most 7 files to $RESULTS: mambaseg_demo.pt (the fused model, model-only), ablation.md,
#    ablation.json (all metrics, per-class IoU, val history, timings), recipe.log, train_<modality>.log.
#
# Environment (defaults in brackets): RESULTS [$RUNS/results], BUDGET_MIN [8: the whole command], TRAIN_SEQUENCES
# [96 of 8 s], JOBS [all cores: generation processes], HEIGHT x WIDTH [96 x 128: sensor and network size; the
# event window scales with the pixel count], DATA [data/synthetic_demo_gpu, or ..._<W>x<H> at another size],
# EXPORT_HALF [empty at 128x96, else 1: export float16 weights and score that file on test too], TRAIN_GPUS [all:
# how many of the GPUs, from GPU 0, the runs may use], STARTUP_S [30] and POST_S [50] (seconds the training budget
# leaves for each trainer's start-up and for the evaluation after it). Extra
# arguments after the
# optional --smoke are passed to every mambaseg-train as --set KEY=VALUE. Re-running reuses a complete dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # an uninstalled checkout works too
export PYTHONUNBUFFERED=1                           # the logs show progress while the runs go on

CONFIG=config/train/synthetic_demo_gpu.yaml
MODALITIES=(fused image_only events_only)
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then
    SMOKE=1
    shift
fi
HEIGHT=${HEIGHT:-96}
WIDTH=${WIDTH:-128}
size_suffix=""
size_overrides=()
if [ "$HEIGHT x $WIDTH" != "96 x 128" ]; then
    # The config describes 128x96; another size replaces the model size, the sensor size and the event window
    # (DSEC's 100k events at 640x480 scaled by pixel count, as the demo node scales it).
    size_suffix="_${WIDTH}x${HEIGHT}"
    num_events=$(python -c "from mambaseg_core.data.dsec import scaled_num_events; print(scaled_num_events($HEIGHT * $WIDTH))")
    size_overrides=("model.overrides.image_size=[$HEIGHT,$WIDTH]" "data.options.sensor_size=[$HEIGHT,$WIDTH]"
        "data.options.num_events=$num_events")
    EXPORT_HALF=${EXPORT_HALF-1} # the TSSM weights grow with the pixel count: 30 MB in fp32 at 256x192
fi
if [ "$SMOKE" = 1 ]; then
    # Toy sizes on the CPU: every step runs, nothing is meant to be accurate.
    DATA=${DATA:-data/synthetic_demo_smoke$size_suffix}
    RUN_NAME=demo_gpu_smoke
    BUDGET_MIN=${BUDGET_MIN:-2.75}
    dataset=(--seconds 1.5 --train 2 --val 1 --test 2)
    STARTUP_S=25 # per training process, before its budget clock starts: imports, dataset index, model
    POST_S=40    # conditions x3, export, table
    export OMP_NUM_THREADS=1
    overrides=(runtime.device=cpu runtime.precision=fp32 model.scan_backend=null data.batch_size=4
        data.eval_batch_size=8 data.num_workers=0 schedule.warmup_iters=2 schedule.epochs=2)
else
    DATA=${DATA:-data/synthetic_demo_gpu$size_suffix}
    RUN_NAME=demo_gpu
    BUDGET_MIN=${BUDGET_MIN:-8}
    dataset=(--seconds 8 --train "${TRAIN_SEQUENCES:-96}" --val 2 --test 6)
    STARTUP_S=${STARTUP_S:-30}
    POST_S=${POST_S:-50}
    export OMP_NUM_THREADS=2 # three trainers share 16 cores with their loader processes
    overrides=()
fi
RUNS=runs/$RUN_NAME
RESULTS=${RESULTS:-$RUNS/results}
JOBS=${JOBS:-$(env -u OMP_NUM_THREADS nproc)} # nproc counts OMP_NUM_THREADS, not cores, when it is set
for kv in "${size_overrides[@]}" "$@"; do overrides+=("$kv"); done
sets=(--set "data.root=$DATA")
for kv in "${overrides[@]}"; do sets+=(--set "$kv"); done

main() {
    echo "== $(date -u +%FT%TZ) train_demo_gpu.sh (smoke=$SMOKE): budget $BUDGET_MIN min, $JOBS cores, results in $RESULTS"
    python - "$SMOKE" <<'EOF'
import shutil, sys
import cv2, h5py, hdf5plugin, numba, PIL, tqdm, yaml, torch  # noqa: F401 (fail here, not after the data is written)
from torch.utils.cpp_extension import CUDA_HOME
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; "
      f"for the CUDA scan build: CUDA_HOME {CUDA_HOME}, ninja {shutil.which('ninja')}")
if sys.argv[1] == "0" and not torch.cuda.is_available():
    sys.exit("train_demo_gpu.sh needs a CUDA GPU (or run it with --smoke)")
EOF

    mkdir -p "$RUNS"
    build_pid=""
    if [ "$SMOKE" = 0 ]; then
        python -c "from mambaseg_core.ops.selective_scan.cuda_scan import load_extension; load_extension()" \
            >"$RUNS/cuda_build.log" 2>&1 &
        build_pid=$!
    fi

    echo "== [${SECONDS}s] synthetic data in $DATA (${dataset[*]}, ${WIDTH}x$HEIGHT, dataset_plan seed 1)"
    # niced, so that the CUDA build (a few nvcc processes) is not slowed down by the JOBS generator processes
    nice -n 5 python tools/demo_model.py generate --root "$DATA" --seed 1 --height "$HEIGHT" --width "$WIDTH" "${dataset[@]}" \
        --jobs "$JOBS" | sed '/^wrote /d'
    local generated=$SECONDS

    if [ -n "$build_pid" ]; then
        if wait "$build_pid"; then
            echo "== [${SECONDS}s] CUDA selective scan built"
        else
            echo "!! the CUDA selective scan did not build; training uses scan backend auto instead:"
            tail -n 20 "$RUNS/cuda_build.log"
            sets+=(--set model.scan_backend=auto)
        fi
    fi

    local train_min
    train_min=$(awk "BEGIN { printf \"%.2f\", ($BUDGET_MIN * 60 - $SECONDS - $STARTUP_S - $POST_S) / 60 }")
    if ! awk "BEGIN { exit !($train_min >= 0.5) }"; then
        echo "!! only $train_min min left for training: not enough (data generation took ${generated}s)" >&2
        return 1
    fi
    echo "== [${SECONDS}s] training ${MODALITIES[*]} concurrently, $train_min min each ($CONFIG)"
    local pids=() modality failed=0 monitor=""
    if [ "$SMOKE" = 0 ] && command -v nvidia-smi >/dev/null; then # GPU load every 20 s, for tuning the recipe
        nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 20 >"$RUNS/gpu_load.log" 2>&1 &
        monitor=$!
    fi
    # With several GPUs the fused model gets GPU 0 to itself and the ablations share the others (one each from 3).
    local gpus=0 gpu_env
    [ "$SMOKE" = 1 ] || gpus=$(python -c "import torch; print(min(torch.cuda.device_count(), ${TRAIN_GPUS:-99}))")
    for i in "${!MODALITIES[@]}"; do
        modality=${MODALITIES[$i]}
        gpu_env=()
        if [ "$gpus" -gt 1 ]; then
            gpu_env=("CUDA_VISIBLE_DEVICES=$((i == 0 ? 0 : 1 + (i - 1) % (gpus - 1)))")
            echo "   $modality: ${gpu_env[0]}"
        fi
        rm -rf "${RUNS:?}/$modality"
        env "${gpu_env[@]}" python -m mambaseg_core.cli.train --config "$CONFIG" "${sets[@]}" \
            --set "model.overrides.modality=$modality" --set "runtime.run_name=$RUN_NAME/$modality" \
            --set "runtime.max_minutes=$train_min" >"$RUNS/train_$modality.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!MODALITIES[@]}"; do
        if ! wait "${pids[$i]}"; then
            echo "!! training ${MODALITIES[$i]} failed:"
            tail -n 30 "$RUNS/train_${MODALITIES[$i]}.log"
            failed=1
        fi
    done
    local trained=$SECONDS
    if [ -n "$monitor" ]; then
        kill "$monitor" 2>/dev/null || true
        echo "-- GPU utilization, memory every 20 s: $(tr '\n' ';' <"$RUNS/gpu_load.log")"
    fi
    for modality in "${MODALITIES[@]}"; do
        echo "-- $modality:" && grep -E '^(time budget|\[best|\[last)' "$RUNS/train_$modality.log" | tail -n 3 || true
    done

    echo "== [${SECONDS}s] test split per lighting condition (best-on-val checkpoints)"
    pids=()
    local evaluated=()
    for modality in "${MODALITIES[@]}"; do
        [ -f "$RUNS/$modality/model_best.pt" ] || continue
        python tools/demo_model.py conditions --config "$CONFIG" --checkpoint "$RUNS/$modality/model_best.pt" \
            --split test "${sets[@]}" >"$RUNS/conditions_$modality.log" 2>&1 &
        pids+=($!)
        evaluated+=("$modality")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { echo "!! conditions ${evaluated[$i]} failed:"; failed=1; }
        tail -n 6 "$RUNS/conditions_${evaluated[$i]}.log"
    done

    mkdir -p "$RESULTS"
    if [ -f "$RUNS/fused/model_best.pt" ]; then
        python tools/demo_model.py export --checkpoint "$RUNS/fused/model_best.pt" --out "$RESULTS/mambaseg_demo.pt" \
            ${EXPORT_HALF:+--half} || failed=1
        if [ -n "${EXPORT_HALF:-}" ]; then # the shipped file is what gets scored: the fp16 weights, all test frames
            python tools/demo_model.py conditions --config "$CONFIG" --checkpoint "$RESULTS/mambaseg_demo.pt" \
                --split test "${sets[@]}" --output "$RESULTS" | tail -n 4 || failed=1
        fi
    fi
    local timings="$RUNS/timings.json"
    echo "{\"generate\": $generated, \"train\": $((trained - generated)), \"evaluate\": $((SECONDS - trained)),"\
        "\"total\": $SECONDS}" >"$timings"
    python tools/demo_model.py ablation --runs "$RUNS" --out "$RESULTS" --timings "$timings" || failed=1
    for modality in "${MODALITIES[@]}"; do # tails: the results folder holds small files only
        if [ -f "$RUNS/train_$modality.log" ]; then
            tail -c 2000000 "$RUNS/train_$modality.log" >"$RESULTS/train_$modality.log"
        fi
    done
    echo "== [${SECONDS}s] done (budget $BUDGET_MIN min); results: $(ls "$RESULTS" | tr '\n' ' ')"
    return "$failed"
}

mkdir -p "$RESULTS"
main 2>&1 | tee "$RESULTS/recipe.log"
