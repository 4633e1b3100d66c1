#!/usr/bin/env bash
# Pre-trained vs fresh start with few labels: the baseline recipe (AdamW, B 32, lr 5e-4 — the
# comparison's chosen lr) on the first N IMDB training examples, E epochs, 300 held-out examples.
# Usage: bench/low_data.sh [N (default 1024)] [epochs (default 6)] [seeds (default 1,2)]
# Writes bench/results/low_data-N-{pretrained,random-init}.json (the fresh start: runs/random-init,
# made by bench/fresh_model.ts --seed 1 when missing).
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
run pretrained
run random-init --model "$RANDOM_INIT"
