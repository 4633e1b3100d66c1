#!/usr/bin/env bash
# The no-flag run (`deno task cluster`: built-in model, IMDB, ScaLA, B 256, 40 steps, max-len 128,
# evaluated on all 5,000 held-out reviews) at several LAMB learning rates, everything else default.
# Usage: bench/no_flag_lr.sh [lr ...] (default 2e-3 1e-2 3e-2 6e-2)
# Writes bench/results/no_flag_lr-DATE.json; logs in runs/no_flag_lr-LR.log.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
LRS=("$@")
[ ${#LRS[@]} -gt 0 ] || LRS=(2e-3 1e-2 3e-2 6e-2)
rows=()
for lr in "${LRS[@]}"; do
  start=$(date +%s)
  NO_COLOR=1 deno task cluster --port 0 --lr "$lr" >"runs/no_flag_lr-$lr.log" 2>&1
  acc=$(grep -o 'eval at step [0-9]* (eval): accuracy [0-9.]*' "runs/no_flag_lr-$lr.log" | tail -1 |
    awk '{print $NF}')
  rows+=("{\"lr\": $lr, \"accuracy\": $acc, \"wallSeconds\": $(($(date +%s) - start))}")
  echo "lr $lr: accuracy $acc"
done
out="bench/results/no_flag_lr-$(date -u +%F).json"
printf '{"date": "%s", "machine": "%s", "command": "deno task cluster --port 0 --lr LR", "runs": [%s]}\n' \
  "$(date -u +%FT%TZ)" "$(uname -m), $(nproc) cores" "$(IFS=,; echo "${rows[*]}")" >"$out"
echo "wrote $out"
