#!/usr/bin/env bash
# The adversary's step size α for the ScaLA recipes (docs/method.md: "tune on the built-in task"), seed 1,
# at the time-to-accuracy comparison's budget and LAMB learning rate. δ = α·G/‖G‖ per ascent step, so
# with K ascent steps ‖δ‖ ≤ K·α; ε (default 1) only matters when K·α > ε.
# Usage: bench/adv_sweep.sh [LAMB lr (default 3e-2)] [recipe:α pairs (default "scala:0.03 scala-k2:0.03")]
# Writes bench/results/adv_sweep-<recipe>-alpha-<α>.json (α 0.1 is the comparison's own run).
set -euo pipefail
cd "$(dirname "$0")/.."
LR=${1:-3e-2}
RUNS=${2:-scala:0.03 scala-k2:0.03}
for run in $RUNS; do
  recipe=${run%%:*}
  a=${run#*:}
  NO_COLOR=1 deno run -A bench/time_to_accuracy.ts --recipes "$recipe" --lr "$recipe=$LR" \
    --adv-lr "$a" --train-limit 4096 --eval-limit 300 --max-len 64 --big-epochs 6 \
    --base-epochs 3 --out "bench/results/adv_sweep-$recipe-alpha-$a" 2>&1 | grep -v "^\s*$"
done
