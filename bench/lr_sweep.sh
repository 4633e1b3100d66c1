#!/usr/bin/env bash
# Learning-rate sweep for the time-to-accuracy recipes, seed 1, at the comparison's budget.
# Usage: [BASE_LRS="2e-4 5e-4 1e-3"] [LAMB_LRS="1.5e-2 3e-2 6e-2 1.2e-1"] bench/lr_sweep.sh (an empty list skips that recipe)
#        [extra time_to_accuracy flags, e.g. --model DIR]
# Writes bench/results/lr_sweep-<recipe>-<lr>.json; pass them to --reuse so seed 1 is not rerun.
cd "$(dirname "$0")/.."
BUDGET="--train-limit 4096 --eval-limit 300 --max-len 64 --big-epochs 6 --base-epochs 3"
sweep() { # recipe lr...
  local recipe=$1
  shift
  for lr in "$@"; do
    NO_COLOR=1 deno run -A bench/time_to_accuracy.ts --recipes "$recipe" --lr "$recipe=$lr" \
      $BUDGET "${EXTRA[@]}" --out "bench/results/lr_sweep-$recipe-$lr" 2>&1 | grep -v "^\s*$"
  done
}
EXTRA=("$@")
# shellcheck disable=SC2086 # the lists split into words
sweep baseline ${BASE_LRS-2e-4 5e-4 1e-3}
# shellcheck disable=SC2086
sweep lamb ${LAMB_LRS-1.5e-2 3e-2 6e-2 1.2e-1}
