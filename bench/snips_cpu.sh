#!/usr/bin/env bash
# Reproduce the README's CPU table for SNIPS intents from a fresh clone, after the README's
# install command plus `pip install -e ".[bench]"` (for the Trainer comparison):
#   1. fine-tune MiniLM for one epoch on a seeded 90% of SNIPS train (seed 42);
#   2. export fp32 / O2 / int8, plus the plain Optimum recipe as a peer;
#   3. validate every file on the held-out 10%;
#   4. benchmark all of them against PyTorch eager in one run, with a plot and a recommendation;
#   5. time our training loop against transformers.Trainer on the same recipe.
# Results: bench/results/<date>-<machine>.{json,md,png} and -validation / -training files.
# Needs ../shared/data/snips (not part of the project; see ../shared/data/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
work=${WORK_DIR:-models/bench-snips}
out="bench/results/snips-intents-cpu/$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
mkdir -p bench/results/snips-intents-cpu

nlu-deploy finetune --train "$data" --label-column intent --epochs 1 --seed 42 \
  --output "$work/checkpoint" --overwrite
nlu-deploy export "$work/checkpoint" --output "$work/onnx" --optimize O2 --quantize dynamic --overwrite
python -c "import sys; from nlu_deploy.export.quantize import write_optimum_peer; print(write_optimum_peer(sys.argv[1]))" \
  "$work/onnx" | tee "$out-peer.txt"
nlu-deploy validate --model "$work/checkpoint" --onnx "$work/onnx" \
  --data "$work/checkpoint/validation_split.jsonl" --json "$out-validation.json" | tee "$out-validation.md"
nlu-deploy bench "$work/onnx" --model "$work/checkpoint" --batch-sizes 1,8,32 --seq-lens 16,32,64 \
  --min-seconds 2 --json "$out.json" --plot "$out.png" --recommend | tee "$out.md"
if [ "${SKIP_TRAINING_BENCH:-0}" != 1 ]; then
  nlu-deploy bench-training --train "$data" --label-column intent --epochs 1 --seed 42 \
    --json "$out-training.json" | tee "$out-training.md"
fi
