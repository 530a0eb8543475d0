#!/usr/bin/env bash
# The fine-tuned uncompressed baseline: the shipped default's three KEFT stages with the same recipes, documents
# as text (no compressor to train). Every stage resumes from its last checkpoint, so after a kill run this again.
#   nohup bash recipes/train-baseline.sh > runs/train-baseline.log 2>&1 &
# The last step keeps the weights in lab/checkpoints/baseline-keft-mixed (bf16, the default's generation settings):
# the comparisons in BENCHMARKS.md and lab/LOG.md (recipes/eval-budget.sh) read them.
# precision=fp32: this 2-core CPU has no AVX512-BF16, so bf16 autocast is emulated and slower than fp32.
# gradient_checkpointing: five documents as text (~800 tokens a prompt) reached 24 GB without it.
set -euo pipefail
cd "$(dirname "$0")/.."
GMSA_TRAIN=${GMSA_TRAIN:-.venv/bin/gmsa-train}
PYTHON=${PYTHON:-.venv/bin/python}
TEXT=(compression=none keft_encoder=false 'rate_curriculum=[]' gradient_checkpointing=true precision=fp32)
$GMSA_TRAIN keft --config recipes/default-keft.yaml "${TEXT[@]}" out_dir=runs/baseline-keft --resume
$GMSA_TRAIN keft --config recipes/default-keft-nq.yaml --from runs/baseline-keft/final "${TEXT[@]}" \
    out_dir=runs/baseline-keft-nq --resume
$GMSA_TRAIN keft --config recipes/default-keft-mixed.yaml --from runs/baseline-keft-nq/final "${TEXT[@]}" \
    'budgets=[]' random_layouts=0 text_layouts=0 out_dir=runs/baseline-keft-mixed --resume
$PYTHON recipes/keep_baseline.py
