#!/usr/bin/env bash
# Issue 5's measurements, in the order that makes a cut-short run still useful. Every run writes
# JSON under bench/results/; the last command tabulates all of them (no rerun) and plots them.
#   1. learning-rate sweep, seed 1 (bench/lr_sweep.sh)
#   2. pre-training vs random initialisation: the baseline recipe from a fresh initialisation
#   3. ScaLA K=1 delayed and K=2 from the start, seed 1; then seeds $SEEDS (default "2 3") of the
#      recipes $MORE (default all four)
# Usage: [SEEDS="2"] [MORE=baseline,lamb] [SKIP_SWEEP=1] bench/adaptation.sh [random-init-checkpoint (default runs/random-init, made by
# bench/fresh_model.ts --seed 1 when missing)]
set -euo pipefail
cd "$(dirname "$0")/.."
RANDOM_INIT=${1:-runs/random-init}
DATE=$(date -u +%F)
BUDGET=(--train-limit 4096 --eval-limit 300 --max-len 64 --big-epochs 6 --base-epochs 3)
TTA() { NO_COLOR=1 deno run -A bench/time_to_accuracy.ts "${BUDGET[@]}" "$@" 2>&1 | grep -v "^\s*$"; }

[ -f "$RANDOM_INIT/config.json" ] || deno run -A bench/fresh_model.ts --out "$RANDOM_INIT" --seed 1
[ -n "${SKIP_SWEEP:-}" ] || bench/lr_sweep.sh # SKIP_SWEEP=1: reuse the lr_sweep-*.json already there
best() { # the swept lr of $1 with the best accuracy (ties: the better final accuracy)
  deno eval --quiet '
    const recipe = Deno.args[0];
    let best = { lr: NaN, acc: -1, final: -1 };
    for (const e of Deno.readDirSync("bench/results")) {
      if (!e.name.startsWith(`lr_sweep-${recipe}-`) || !e.name.endsWith(".json")) continue;
      const r = JSON.parse(Deno.readTextFileSync(`bench/results/${e.name}`)).runs[0];
      const better = r.bestAccuracy > best.acc ||
        (r.bestAccuracy === best.acc && r.finalAccuracy > best.final);
      if (better) best = { lr: r.lr, acc: r.bestAccuracy, final: r.finalAccuracy };
    }
    console.log(best.lr);' "$1"
}
B=$(best baseline)
L=$(best lamb)
echo "chosen: baseline lr $B, LAMB lr $L (ScaLA uses LAMB's)"
LR="baseline=$B,lamb=$L,scala=$L,scala-k2=$L"
SWEEP=$(ls bench/results/lr_sweep-*.json | tr '\n' ',' | sed 's/,$//')
MAIN=bench/results/time_to_accuracy-$DATE
RAND=bench/results/time_to_accuracy-$DATE-random-init

# The fresh start does not depend on the default model: results already there are reused.
[ -f "$RAND-s1.json" ] || TTA --model "$RANDOM_INIT" --recipes baseline --seeds 1 --lr "$LR" --out "$RAND-s1"
TTA --recipes scala,scala-k2 --seeds 1 --lr "$LR" --out "$MAIN-s1"
SEEDS=${SEEDS:-2 3} # more seeds: SEEDS="2 3 4"
MORE=${MORE:-baseline,lamb,scala,scala-k2} # the recipes run for those seeds
for seed in $SEEDS; do
  TTA --recipes "$MORE" --seeds "$seed" --lr "$LR" --out "$MAIN-s$seed"
  [ -f "$RAND-s$seed.json" ] ||
    TTA --model "$RANDOM_INIT" --recipes baseline --seeds "$seed" --lr "$LR" --out "$RAND-s$seed"
done
ALL_SEEDS=$(echo 1 $SEEDS | tr ' ' ',')
files() { for s in 1 $SEEDS; do printf ',%s-s%s.json' "$1" "$s"; done; }
TTA --only-reused --recipes baseline,lamb,scala,scala-k2 --seeds "$ALL_SEEDS" --lr "$LR" \
  --reuse "$SWEEP$(files "$MAIN")" --out "$MAIN"
TTA --only-reused --model "$RANDOM_INIT" --recipes baseline --seeds "$ALL_SEEDS" --lr "$LR" \
  --reuse "$(files "$RAND" | cut -c2-)" --out "$RAND"
# The plot as PNG (for viewers without SVG): headless Chromium renders the SVG.
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -n "$CHROME" ]; then
  "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=960,420 \
    --screenshot="$PWD/$MAIN.png" "file://$PWD/$MAIN.svg" 2>/dev/null
else
  echo "no Chromium found: $MAIN.svg not rendered to PNG"
fi
