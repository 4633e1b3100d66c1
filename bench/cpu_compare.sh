#!/usr/bin/env bash
# CPU backends side by side, in one run (issue 14): the loaded BLAS's sgemm
# rate on the model's shapes, the worker-compute grid on wasm and on native
# at 1 and 2 threads, PyTorch CPU at the same threads, and (CLUSTER=1) the
# no-flag `deno task cluster` wall time on the old path (no BLAS: wasm
# workers, one per core, wasm evaluation) and the new (default: native).
#
#   bench/cpu_compare.sh                  # ~5 minutes
#   CLUSTER=1 bench/cpu_compare.sh        # + two full no-flag cluster runs (~10 more minutes)
#
# Settings (environment): THREADS (1,2), MODES (off,pgd1), MB (32), SEQ (128),
# MIN_SECONDS (3), PYTHON (a python3 with torch; default /usr/bin/python3).
# Writes bench/results/cpu_compare-<date>.json and prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1,2}
MODES=${MODES:-off,pgd1}
MB=${MB:-32}
SEQ=${SEQ:-128}
MIN_SECONDS=${MIN_SECONDS:-3}
PYTHON=${PYTHON:-/usr/bin/python3}
date=$(date -u +%F)
out=${OUT:-bench/results/cpu_compare-$date.json}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

loads=()
mark() { loads+=("\"$1\": \"$(cat /proc/loadavg)\""); }

mark start
echo "== sgemm" >&2
deno run -A bench/sgemm.ts --threads "$THREADS" --micro-batch "$MB" --seq-len "$SEQ" --min-seconds 1 \
  --out "$dir/sgemm.json" >/dev/null
mark after_sgemm
echo "== worker grid (wasm, native at $THREADS threads)" >&2
deno run -A bench/worker_compute.ts --backends wasm,native --threads "$THREADS" --modes "$MODES" \
  --micro-batches "$MB" --seq-lens "$SEQ" --min-seconds "$MIN_SECONDS" --speedup none \
  --out "$dir/worker.json" >/dev/null
mark after_worker
echo "== PyTorch CPU" >&2
if "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" bench/torch_cpu.py --threads "$THREADS" --modes "$MODES" --micro-batch "$MB" \
    --seq-len "$SEQ" --min-seconds "$MIN_SECONDS" --out "$dir/torch.json"
else
  echo "no torch for $PYTHON (apt-get install python3-torch): PyTorch rows skipped" >&2
fi
mark after_torch

if [ "${CLUSTER:-0}" = 1 ]; then
  runs=()
  cluster() { # path, env, args...
    local path=$1 envs=$2
    shift 2
    echo "== no-flag cluster, $path path" >&2
    local t0 t1 code=0
    t0=$(date +%s.%N)
    env $envs deno task cluster "$@" >"$dir/cluster-$path.log" 2>&1 || code=$?
    t1=$(date +%s.%N)
    local final
    final=$(grep -E '^\{' "$dir/cluster-$path.log" | tail -n 1)
    [ -n "$final" ] || final=null
    grep -E 'local worker|host compute|final evaluation' "$dir/cluster-$path.log" >&2 || true
    runs+=("{\"path\": \"$path\", \"command\": \"${envs:+$envs }deno task cluster $*\", \"wallSeconds\": $(awk "BEGIN { print $t1 - $t0 }"), \"code\": $code, \"final\": $final}")
    mark "after_cluster_$path"
  }
  cluster wasm "ADAPTMESH_BLAS=none"
  cluster native ""
  (IFS=,; echo "{\"runs\": [${runs[*]}]}") >"$dir/cluster.json"
fi
(IFS=,; echo "{${loads[*]}}") >"$dir/load.json"
deno run -A bench/cpu_compare.ts --dir "$dir" --out "$out"
