#!/usr/bin/env bash
# Reproduce the README's CPU figures for SNIPS intents from a fresh clone (after the README's
# install command): fine-tune MiniLM for one epoch, export fp32 / O2 / int8, validate on the
# seeded 10% held-out split, and benchmark every variant against PyTorch eager in one run.
# Results: bench/results/<date>-<machine>-snips-{validation,bench}.{json,md}.
# Needs ../shared/data/snips (not part of the project; see ../shared/data/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
work=${WORK_DIR:-models/bench-snips}
stamp="$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
out=bench/results/$stamp-snips
mkdir -p bench/results

nlu-deploy finetune --train "$data" --label-column intent --epochs 1 --seed 42 \
  --output "$work/checkpoint" --overwrite
nlu-deploy export "$work/checkpoint" --output "$work/onnx" --optimize O2 --quantize dynamic --overwrite
nlu-deploy validate --model "$work/checkpoint" --onnx "$work/onnx" \
  --data "$work/checkpoint/validation_split.jsonl" --json "$out-validation.json" | tee "$out-validation.md"
nlu-deploy bench "$work/onnx" --model "$work/checkpoint" --batch-sizes 1,32 --seq-lens 16,32,64 \
  --min-seconds 2 --json "$out-bench.json" | tee "$out-bench.md"
