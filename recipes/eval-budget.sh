#!/usr/bin/env bash
# Budgeted compression against every honest alternative at the same budget (issue 38), question by question.
#   OMP_NUM_THREADS=1 nohup bash recipes/eval-budget.sh > runs/eval-budget.log 2>&1 &
#   bash recipes/eval-budget.sh nq300-baseline   # only the steps named (two runs side by side, one thread each)
# The bundled default (the mixed reader) and the fine-tuned uncompressed baseline trained with the same three
# KEFT stages on text (recipes/train-baseline.sh, weights in lab/checkpoints/baseline-keft-mixed). A step whose
# result.json exists is skipped, so after a kill run this again; the baseline's steps wait for its weights.
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${GMSA_EVAL:-.venv/bin/gmsa-eval}
OUT=${OUT:-lab/results/budget-final}
BASELINE=${BASELINE:-lab/checkpoints/baseline-keft-mixed}
NQ=../shared/data/qa/nq_dev.jsonl
MULTIHOP=runs/heldout-multihop-120.jsonl  # python lab/scripts/heldout_multihop.py writes it
PYTHON=${PYTHON:-.venv/bin/python}
[ -f $MULTIHOP ] || $PYTHON lab/scripts/heldout_multihop.py

ONLY=" $* "
step() {  # step NAME ARGS...: one gmsa-eval qa run into $OUT/NAME, unless it has already finished or is not named
    local name=$1; shift
    if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return; fi
    if [ -f "$OUT/$name/result.json" ]; then echo "done already: $OUT/$name"; return; fi
    rm -rf "$OUT/$name"
    $EVAL qa "$@" --out "$OUT/$name"
}

step nq300-default --label "bundled default" --data $NQ --limit 300 --documents 5 \
    --systems budget@0.25 rerank-text@0.25 gmsa@4
step multihop100-default --label "bundled default" --data $MULTIHOP --limit 100 --documents 10 \
    --systems budget@0.25 rerank-text@0.25
step nq100-20docs-default --label "bundled default" --data $NQ --limit 100 --documents 20 \
    --systems budget@0.25 rerank-text@0.25
step nq300-curve-default --label "bundled default" --data $NQ --limit 300 --documents 5 \
    --systems budget@0.1 rerank-text@0.1 budget@0.5 rerank-text@0.5 budget@1.0

if [ ! -f "$BASELINE/gmsa_weights.safetensors" ]; then
    echo "$BASELINE not trained yet (bash recipes/train-baseline.sh): the baseline's steps are left"; exit 0
fi
B=(--checkpoint "$BASELINE" --label "fine-tuned baseline")
step nq300-baseline "${B[@]}" --data $NQ --limit 300 --documents 5 --systems uncompressed rerank-text@0.25
step multihop100-baseline "${B[@]}" --data $MULTIHOP --limit 100 --documents 10 --systems uncompressed rerank-text@0.25
step nq100-20docs-baseline "${B[@]}" --data $NQ --limit 100 --documents 20 --systems uncompressed rerank-text@0.25

for set in nq300 multihop100 nq100-20docs; do
    [ -f "$OUT/$set-baseline/result.json" ] || { echo "$OUT/$set-baseline not finished: no paired tables yet"; exit 0; }
done
for set in nq300 multihop100 nq100-20docs; do
    $EVAL compare "$OUT/$set-baseline/result.json:uncompressed" "$OUT/$set-default/result.json:budget@0.25" \
        "$OUT/$set-default/result.json:rerank-text@0.25" "$OUT/$set-baseline/result.json:rerank-text@0.25" \
        > "$OUT/compare-$set.md"
    cat "$OUT/compare-$set.md"
done
$PYTHON benchmarks/budget_curve.py --reference "$OUT/nq300-baseline/result.json:uncompressed" \
    --results "$OUT/nq300-default/result.json" "$OUT/nq300-curve-default/result.json" --out benchmarks/results/budget-curve
