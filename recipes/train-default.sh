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
# The baseline reads 5 documents as text (~800 tokens a prompt): without activation checkpointing it
# reached 24 GB and was killed for memory on the 24 GB machine. Same losses, less memory.
$GMSA_TRAIN keft --config recipes/default-keft.yaml compression=none keft_encoder=false 'rate_curriculum=[]' out_dir=runs/baseline-keft \
    gradient_checkpointing=true --resume
# The baseline gets the same second stage, so the two recipes stay the same.
$GMSA_TRAIN keft --config recipes/default-keft-nq.yaml --from runs/baseline-keft/final compression=none keft_encoder=false \
    'rate_curriculum=[]' out_dir=runs/baseline-keft-nq gradient_checkpointing=true --resume
