#!/usr/bin/env bash
# Learning-rate sweep for the time-to-accuracy recipes (smaller budget: 4096 train, 300 eval).
cd "$(dirname "$0")/.."
for lr in 5e-4 2e-3; do
  NO_COLOR=1 deno run -A bench/time_to_accuracy.ts --recipes baseline --lr baseline=$lr --train-limit 4096 --eval-limit 300 --max-len 64 --out bench/results/lr_sweep-baseline-$lr 2>&1 | grep -v "^\s*$"
done
for lr in 1e-2 3e-2; do
  NO_COLOR=1 deno run -A bench/time_to_accuracy.ts --recipes lamb --lr lamb=$lr --train-limit 4096 --eval-limit 300 --max-len 64 --out bench/results/lr_sweep-lamb-$lr 2>&1 | grep -v "^\s*$"
done
