#!/usr/bin/env bash
# The reference pre-training runs on a lent GPU machine (PyTorch there; nothing else needed),
# from the repository root, with the exported corpus carried in $DATA:
#
#   deno run -A bench/reference_pretrain/export_tokens.ts /tmp/refdata   # here, then xz train.u16
#   OUT=dir BUDGET=330 bash bench/reference_pretrain/device.sh
#
# $DATA (default .devcarry/refdata) holds export_tokens.ts's files, train.u16 possibly as
# train.u16.xz. PHASE=1 (default): four recipes from BERT's initialisation, 64-token sequences.
# PHASE=2: BERT's second phase, longer sequences (export with --max-len 128) from $INIT (phase 1's
# LAMB result), two learning rates. The recipes run at once on the one GPU, each for $BUDGET
# seconds of training; results: $OUT/NAME.safetensors (F16), $OUT/reference_pretrain.json.
set -u
cd "$(dirname "$0")/../.." || exit 1
DATA=${DATA:-.devcarry/refdata}
OUT=${OUT:-runs/reference}
BUDGET=${BUDGET:-330}
mkdir -p "$OUT" /tmp/refdata
nvidia-smi -L || true
cp "$DATA"/heldout.u16 "$DATA"/heldout_masked.u16 "$DATA"/heldout_labels.i32 "$DATA"/meta.json /tmp/refdata/ || exit 2
if [ -f "$DATA/train.u16.xz" ]; then xz -dc "$DATA/train.u16.xz" >/tmp/refdata/train.u16 || exit 2; else cp "$DATA/train.u16" /tmp/refdata/ || exit 2; fi
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" || exit 3
PY="python3 -u bench/reference_pretrain/reference_pretrain.py --data /tmp/refdata --out /tmp/refout --budget $BUDGET"
# name, then flags
run() { local name=$1; shift; $PY --name "$name" "$@" 2>&1 & }
if [ "${PHASE:-1}" = 2 ]; then
  INIT=${INIT:-.devcarry/refinit/lamb-b1024-lr1e-2.safetensors}
  [ -f "$INIT" ] || { echo "no $INIT" >&2; exit 2; }
  run lamb-seq128-b512-lr5e-3 --init-from "$INIT" --optimizer lamb --batch 512 --lr 5e-3 --warmup 0.05 --eval-every 500
  run lamb-seq128-b512-lr1e-2 --init-from "$INIT" --optimizer lamb --batch 512 --lr 1e-2 --warmup 0.05 --eval-every 500
else
  run adamw-b32-lr1e-3 --optimizer adamw --batch 32 --lr 1e-3 --warmup 0.025 --eval-every 2000
  run adamw-b32-lr3e-3 --optimizer adamw --batch 32 --lr 3e-3 --warmup 0.025 --eval-every 2000
  run adamw-b256-lr1e-3 --optimizer adamw --batch 256 --lr 1e-3 --warmup 0.025 --eval-every 1000
  run lamb-b1024-lr1e-2 --optimizer lamb --batch 1024 --lr 1e-2 --warmup 0.05 --eval-every 500
fi
wait
python3 - "$OUT" <<'PY'
import glob, json, shutil, sys
out = sys.argv[1]
runs = [json.load(open(f)) for f in sorted(glob.glob("/tmp/refout/*.json"))]
json.dump({"runs": runs}, open(f"{out}/reference_pretrain.json", "w"), indent=1)
for f in glob.glob("/tmp/refout/*.safetensors"):
    shutil.copy(f, out)
for r in runs:
    print(r["name"], r["steps_done"], "steps", round(r["train_seconds"]), "s", r["curve"][-1])
PY
ls -la "$OUT"
