#!/usr/bin/env bash
# Evaluate the shipped default and its baselines on the same questions; writes results/eval/*/ and one table.
# Run after recipes/train-default.sh:   bash recipes/eval-default.sh > runs/eval-default.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${GMSA_EVAL:-.venv/bin/gmsa-eval}
NQ=../shared/data/qa/nq_dev.jsonl
QUESTIONS=${QUESTIONS:-100}
OUT=${OUT:-results/eval}
# Reconstruction of the 200 held-out paragraphs the AE stage never trained on.
$EVAL reconstruction --checkpoint runs/default-ae/final --texts ../shared/data/ae/wiki_paragraphs.jsonl \
    --last 200 --limit "$QUESTIONS" --max-text-tokens 64 --rates 4 8 16 --out "$OUT/reconstruction"
# The base model as it comes (the AE checkpoint leaves the decoder untouched): zero-shot and closed-book.
$EVAL qa --checkpoint runs/default-ae/final --label "base model" --data $NQ --limit "$QUESTIONS" --documents 20 \
    --systems uncompressed closed-book --out "$OUT/qa-base-20docs"
# GMSA after KEFT: 20 documents, and 5 documents (what the fine-tuned baseline was trained and tested with).
$EVAL qa --checkpoint runs/default-keft/final --label "GMSA (AE + KEFT)" --data $NQ --limit "$QUESTIONS" \
    --documents 20 --systems gmsa@4 gmsa@8 gmsa@16 --out "$OUT/qa-gmsa-20docs"
$EVAL qa --checkpoint runs/default-keft/final --label "GMSA (AE + KEFT)" --data $NQ --limit "$QUESTIONS" \
    --documents 5 --systems gmsa@4 gmsa@8 gmsa@16 --out "$OUT/qa-gmsa-5docs"
# The fair baseline: the uncompressed prompt fine-tuned with the same KEFT recipe.
$EVAL qa --checkpoint runs/baseline-keft/final --label "uncompressed + KEFT" --data $NQ --limit "$QUESTIONS" \
    --documents 5 --systems uncompressed closed-book --out "$OUT/qa-baseline-5docs"
$EVAL table "$OUT"/*/result.json > "$OUT/table.md"
cat "$OUT/table.md"
