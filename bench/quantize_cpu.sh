#!/usr/bin/env bash
# The accuracy-budget quantization figures (issue: "Quantization that keeps accuracy"):
# fine-tune MiniLM on SNIPS intents (1 epoch) and BANKING77 (4 epochs), each on a seeded 90% of
# its training file, then `export --quantize auto --max-score-drop 0.3` scored on the other 10%,
# then validate and benchmark the kept int8 file against PyTorch eager in one run.
# Results: bench/results/<date>-<machine>-<dataset>-{quantization,validation,bench}.*
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DATA:-../shared/data}
stamp="$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
mkdir -p bench/results/quantization-cpu

run_dataset() {
  local name=$1 train=$2 label=$3 epochs=$4
  local work=models/bench-quantize-$name out=bench/results/quantization-cpu/$stamp-$name
  # REUSE_CHECKPOINTS=1 skips fine-tuning when the checkpoint exists (training is reproducible on CPU).
  if [ "${REUSE_CHECKPOINTS:-0}" != 1 ] || [ ! -f "$work/checkpoint/model.safetensors" ]; then
    nlu-deploy finetune --train "$train" --label-column "$label" --epochs "$epochs" --seed 42 \
      --output "$work/checkpoint" --overwrite
  fi
  nlu-deploy export "$work/checkpoint" --output "$work/onnx" --optimize O2 --quantize auto \
    --max-score-drop 0.3 --overwrite | tee "$out-quantization.md"
  cp "$work/onnx/quantization_report.json" "$out-quantization.json"
  nlu-deploy validate --model "$work/checkpoint" --onnx "$work/onnx" --max-score-drop 0.3 \
    --data "$work/checkpoint/validation_split.jsonl" --json "$out-validation.json" | tee "$out-validation.md"
  nlu-deploy bench "$work/onnx" --model "$work/checkpoint" --batch-sizes 1,32 --seq-lens 16,32 \
    --min-seconds 2 --json "$out-bench.json" --recommend | tee "$out-bench.md"
}

run_dataset snips "$shared/snips/train.jsonl" intent 1
run_dataset banking77 "$shared/banking77/train.csv" category 4
