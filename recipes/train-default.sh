#!/usr/bin/env bash
# Train the shipped default checkpoint and its fine-tuned uncompressed baseline, stage by stage.
# Every stage resumes from its last checkpoint, so after a kill just run this again.
#   nohup bash recipes/train-default.sh > runs/train-default.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
GMSA_TRAIN=${GMSA_TRAIN:-.venv/bin/gmsa-train}
$GMSA_TRAIN ae --config recipes/default-ae.yaml --resume
# The decoder learns to read soft tokens too (not the paper's frozen-decoder AE; BENCHMARKS.md says why).
$GMSA_TRAIN ae --config recipes/default-ae-decoder.yaml --from runs/default-ae/final --resume
$GMSA_TRAIN keft --config recipes/default-keft.yaml --from runs/default-ae-decoder/final --resume
# A second KEFT stage on NaturalQuestions only (five documents, one gold among distractors).
$GMSA_TRAIN keft --config recipes/default-keft-nq.yaml --from runs/default-keft/final --resume
# A third KEFT stage that reads the budget planner's prompts: the most relevant documents as text, the rest soft.
$GMSA_TRAIN keft --config recipes/default-keft-mixed.yaml --from runs/default-keft-nq/final --resume
# The fine-tuned uncompressed baseline: the same three KEFT stages with the documents as text.
bash recipes/train-baseline.sh
