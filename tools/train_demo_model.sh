#!/usr/bin/env bash
# The embedded demo model in one command: seeded synthetic data -> train -> test metrics -> model-only checkpoint.
# This is the CPU recipe of models/demo/MODEL_CARD.md; tools/train_demo_gpu.sh is the GPU one (with the ablation).
#
#   tools/train_demo_model.sh [extra mambaseg-train --set KEY=VALUE ...]
#   e.g. tools/train_demo_model.sh runtime.max_iters=2000      (cap the run, as the CPU model card run did)
#
# Environment: DATA (default data/synthetic_demo), OUT (default models/demo/mambaseg_demo.pt),
# CONFIG (default config/train/synthetic_demo.yaml). Device: auto (the GPU when there is one, else CPU).
# Re-running reuses an existing dataset and resumes an interrupted run (--resume auto).
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-config/train/synthetic_demo.yaml}
DATA=${DATA:-data/synthetic_demo}
OUT=${OUT:-models/demo/mambaseg_demo.pt}
RUN_DIR=runs/mambaseg_demo
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # an uninstalled checkout works too
train=(mambaseg-train)
evaluate=(mambaseg-eval)
command -v mambaseg-train >/dev/null || train=(python -m mambaseg_core.cli.train)
command -v mambaseg-eval >/dev/null || evaluate=(python -m mambaseg_core.cli.eval)
sets=(--set "data.root=$DATA")
for kv in "$@"; do sets+=(--set "$kv"); done

echo "== synthetic dataset in $DATA (seed 0: 8 train, 1 val, 3 test sequences of 8 s, 128x96; reused if complete)"
python tools/demo_model.py generate --root "$DATA" --seed 0 --height 96 --width 128 --seconds 8 \
    --train 8 --val 1 --test 3

echo "== training ($CONFIG)"
"${train[@]}" --config "$CONFIG" --resume auto "${sets[@]}"

echo "== test split: best-on-val checkpoint"
"${evaluate[@]}" --config "$CONFIG" --checkpoint "$RUN_DIR/model_best.pt" --split test "${sets[@]}"
python tools/demo_model.py conditions --config "$CONFIG" --checkpoint "$RUN_DIR/model_best.pt" --split test \
    "${sets[@]}"

echo "== exporting the model-only checkpoint"
python tools/demo_model.py export --checkpoint "$RUN_DIR/model_best.pt" --out "$OUT"
