#!/usr/bin/env bash
# PyTorch's AOTInductor package (export --pt2 cpu) against onnxruntime and OpenVINO on this CPU:
# the SNIPS intents MiniLM that bench/ship_choice_cpu.sh trains (models/ship-choice-snips; that
# script makes it when it is missing), exported with every variant, validated on its held-out
# split, and benched with PyTorch eager at batch 1 and 32 on real held-out lengths plus the fixed
# 1 x 16 shape. Results: bench/results/pt2-cpu/<date>-<machine>/ (export output, validate.json,
# bench.json and bench.md). Run it on an otherwise idle machine; about 6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint=models/ship-choice-snips/checkpoint
[ -d "$checkpoint" ] || bash bench/ship_choice_cpu.sh snips
out="bench/results/pt2-cpu/$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
mkdir -p "$out"
start=$(date +%s)
nlu-deploy export "$checkpoint" --optimize O2 --quantize dynamic --openvino --pt2 cpu \
  --output models/pt2-snips/onnx --overwrite | tee "$out/export.txt"
echo "export seconds: $(( $(date +%s) - start ))" >> "$out/export.txt"
nlu-deploy validate --model "$checkpoint" --onnx models/pt2-snips/onnx --data "$checkpoint/validation_split.jsonl" \
  --json "$out/validate.json" > "$out/validate.md" || true  # a variant failing the gate is a result
nlu-deploy bench models/pt2-snips/onnx --model "$checkpoint" --batch-sizes 1 --seq-lens 16 --min-seconds 2 \
  --real-lengths "$checkpoint/validation_split.jsonl" --real-batch-sizes 1,32 \
  --validation-report "$out/validate.json" --recommend --json "$out/bench.json" > "$out/bench.md"
cat "$out/bench.md"
