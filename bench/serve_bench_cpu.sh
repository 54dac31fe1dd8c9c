#!/usr/bin/env bash
# The SNIPS MiniLM int8 model behind a real tritonserver (nvidia-pytriton's, on this machine):
# closed-loop concurrency 1..16 and open-loop rates for the configuration `export --triton`
# writes, the no-batching baseline and the configuration a search chooses under a p99 budget at
# concurrency 16; every answer checked against predict; the same file in process at the batch
# sizes the server executed. Results: bench/results/serving-cpu/<date>-<machine>/.
#   bash bench/serve_bench_cpu.sh                 # trains the model first if models/bench-snips lacks it
#   P99_MS=50 DURATION=10 bash bench/serve_bench_cpu.sh
# Needs the test (or serve) extra and ../shared/data/snips. Run it on an otherwise idle machine:
# the load generator, the server and the in-process comparison share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
work=${WORK_DIR:-models/bench-snips}
out="bench/results/serving-cpu/$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
if [ ! -f "$work/onnx/model_quantized.onnx" ]; then  # the model of bench/snips_cpu.sh
  nlu-deploy finetune --train "$data" --label-column intent --epochs 1 --seed 42 --output "$work/checkpoint" --overwrite
  nlu-deploy export "$work/checkpoint" --output "$work/onnx" --optimize O2 --quantize dynamic --overwrite
fi
mkdir -p bench/results/serving-cpu
# The held-out 10% finetune kept aside (never trained on): real SNIPS lengths, so real buckets.
nlu-deploy serve-bench "$work/onnx" --data "$work/checkpoint/validation_split.jsonl" \
  --concurrency 1,2,4,8,16 --rates "${RATES:-100,200,400}" \
  --warmup "${WARMUP:-2}" --duration "${DURATION:-10}" \
  --p99-ms "${P99_MS:-50}" --at-concurrency 16 \
  --batching off,0,2000,8000 --instances 1,2 \
  --buckets 16,32,64,128 --buckets 8,12,16,24,32,64 --buckets none \
  --write-repository "$work/triton-chosen" --output "$out" --overwrite
