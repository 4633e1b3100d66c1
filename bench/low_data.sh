#!/usr/bin/env bash
# Pre-trained vs fresh start with few labels: the baseline recipe (AdamW, B 32, lr 5e-4 — the
# comparison's chosen lr) on the first N IMDB training examples, E epochs, 300 held-out examples.
# Usage: [MODEL=DIR NAME=label] bench/low_data.sh [N (default 1024)] [epochs (default 6)] [seeds (default 1,2)]
# Writes bench/results/low_data-N-{NAME (default pretrained),random-init}.json: the pre-trained
# start is MODEL (default: the built-in model); the fresh start is runs/random-init, made by
# bench/fresh_model.ts --seed 1 when missing, and is not rerun when its results exist.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1024}
EPOCHS=${2:-6}
SEEDS=${3:-1,2}
RANDOM_INIT=runs/random-init
[ -f "$RANDOM_INIT/config.json" ] || deno run -A bench/fresh_model.ts --out "$RANDOM_INIT" --seed 1
run() { # name [--model DIR]
  local name=$1
  shift
  NO_COLOR=1 deno run -A bench/time_to_accuracy.ts --recipes baseline --lr baseline=5e-4 \
    --seeds "$SEEDS" --train-limit "$N" --base-epochs "$EPOCHS" --eval-limit 300 --max-len 64 \
    "$@" --out "bench/results/low_data-$N-$name" 2>&1 | grep -v "^\s*$"
}
if [ -n "${MODEL:-}" ]; then run "${NAME:-pretrained}" --model "$MODEL"; else run "${NAME:-pretrained}"; fi
[ -f "bench/results/low_data-$N-random-init.json" ] || run random-init --model "$RANDOM_INIT"
