#!/usr/bin/env bash
# Reproduce the README's slot-filling figures (SNIPS tokens/tags) from a fresh clone, after the
# README's install command:
#   1. fine-tune MiniLM as a BIO tagger for 3 epochs on a seeded 90% of SNIPS train (seed 42;
#      batch 16, lr 2e-4: chosen on the held-out 10% of train, never on SNIPS test);
#   2. export fp32 / O2 / dynamic int8 (from the O2 graph);
#   3. validate every file on the held-out 10%: entity F1 (exact spans), tag agreement;
#   4. benchmark all of them against PyTorch eager in one run;
#   5. export --quantize auto (budget 0.3 entity F1 points) and keep its report;
#   6. time our training loop against transformers.Trainer on the same recipe (needs the
#      `bench` extra: pip install -e ".[bench]").
# REUSE_CHECKPOINT=1 skips step 1 when $WORK_DIR/checkpoint already holds a finished run.
# Results: bench/results/<date>-<machine>-snips-slots-{validation,bench,quantization,training}.{json,md}.
# Needs ../shared/data/snips (not part of the project; see ../shared/data/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
work=${WORK_DIR:-models/bench-snips-slots}
out="bench/results/snips-slots-cpu/$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu-snips-slots"
mkdir -p bench/results/snips-slots-cpu

if [ "${REUSE_CHECKPOINT:-0}" != 1 ] || [ ! -f "$work/checkpoint/metrics.json" ]; then
  nlu-deploy finetune --task token-classification --train "$data" --epochs 3 --batch-size 16 --lr 2e-4 \
    --seed 42 --output "$work/checkpoint" --overwrite
fi
cp "$work/checkpoint/metrics.json" "$out-finetune-metrics.json"
nlu-deploy export "$work/checkpoint" --output "$work/onnx" --optimize O2 --quantize dynamic --overwrite
nlu-deploy validate --model "$work/checkpoint" --onnx "$work/onnx" \
  --data "$work/checkpoint/validation_split.jsonl" --json "$out-validation.json" | tee "$out-validation.md"
nlu-deploy bench "$work/onnx" --model "$work/checkpoint" --batch-sizes 1,8,32 --seq-lens 16,32,64 \
  --min-seconds 2 --json "$out-bench.json" --recommend | tee "$out-bench.md"
# 5. the accuracy-aware search: the fastest int8 candidate within 0.3 entity F1 points
nlu-deploy export "$work/checkpoint" --output "$work/onnx-auto" --optimize O2 --quantize auto \
  --max-score-drop 0.3 --overwrite
cp "$work/onnx-auto/quantization_report.md" "$out-quantization.md"
cp "$work/onnx-auto/quantization_report.json" "$out-quantization.json"
# 6. optional (SKIP_TRAINING_BENCH=1 skips it; about 25 minutes on 2 cores): our loop against
#    transformers.Trainer on the same tagging recipe, both scored on entity F1
if [ "${SKIP_TRAINING_BENCH:-0}" != 1 ]; then
  nlu-deploy bench-training --task token-classification --train "$data" --epochs 3 --batch-size 16 --lr 2e-4 \
    --seed 42 --json "$out-training.json" | tee "$out-training.md"
fi
