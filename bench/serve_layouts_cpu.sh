#!/usr/bin/env bash
# Issue 35's serving question on this machine: the single-process pipeline model against the
# three-model ensemble, and intra-op threads against instances, for the SNIPS MiniLM int8 file
# behind a real tritonserver (nvidia-pytriton's) under a closed-loop sweep, with a search for the
# most requests/s within p99 50 ms at concurrency 16. Every answer is checked against predict.
# Results: bench/results/serving-layouts-cpu/<date>-<machine>/ (serve-bench.md/.json/.png/.log).
#   bash bench/serve_layouts_cpu.sh          # uses models/bench-snips (bench/serve_bench_cpu.sh makes it)
# Run it on an otherwise idle machine: the load generator, the server and the model share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK_DIR:-models/bench-snips}
out="bench/results/serving-layouts-cpu/$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
mkdir -p bench/results/serving-layouts-cpu
nlu-deploy serve-bench "$work/onnx" --variant model_quantized.onnx --data "$work/checkpoint/validation_split.jsonl" \
  --concurrency 1,4,16 --warmup "${WARMUP:-2}" --duration "${DURATION:-8}" \
  --p99-ms "${P99_MS:-50}" --at-concurrency 16 --search-repeats "${REPEATS:-1}" \
  --layouts ensemble,pipeline --threads 0,1 --instances 1,2 --batching off,2000 --buckets 16,32,64,128 \
  --write-repository "$work/triton-layouts-chosen" --output "$out" --overwrite
