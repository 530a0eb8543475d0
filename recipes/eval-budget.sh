#!/usr/bin/env bash
# Budgeted compression against every honest alternative at the same budget (issue 38), on nq_dev.
#   bash recipes/eval-budget.sh            (after recipes/default-keft-mixed.yaml has trained runs/default-keft-mixed)
# Paired against the fine-tuned uncompressed baseline's committed answers (benchmarks/results/eval-default/qa300-baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${GMSA_EVAL:-.venv/bin/gmsa-eval}
OUT=${OUT:-lab/results/budget}
DATA=../shared/data/qa/nq_dev.jsonl
MIXED=${MIXED:-runs/default-keft-mixed/final}
$EVAL qa --checkpoint "$MIXED" --label "mixed reader" --data $DATA --limit 300 --documents 5 \
    --systems budget@0.25 rerank-text@0.25 --out "$OUT/qa300-mixed"
$EVAL qa --label "shipped default" --data $DATA --limit 300 --documents 5 --systems budget@0.25 --out "$OUT/qa300-default"
$EVAL compare benchmarks/results/eval-default/qa300-baseline/result.json "$OUT/qa300-mixed/result.json:budget@0.25" \
    "$OUT/qa300-mixed/result.json:rerank-text@0.25" "$OUT/qa300-default/result.json:budget@0.25"
