#!/usr/bin/env bash
# Both runtimes on this CPU, one bench run per data set: onnxruntime fp32 / O2 / dynamic int8 and
# OpenVINO f32 / bf16 (where the CPU has AMX or AVX-512 BF16) / NNCF int8, against PyTorch eager
# fp32 and (on bf16 CPUs) PyTorch under CPU bf16 autocast; every variant validated on the held-out
# split, and the recommendation across runtimes. Results: bench/results/runtimes-cpu/.
#   bash bench/openvino_cpu.sh                        # SNIPS intents, SNIPS slots, BANKING77
#   bash bench/openvino_cpu.sh snips-intents          # one data set
#   AUTO=1 bash bench/openvino_cpu.sh snips-intents   # also --quantize auto with the OpenVINO candidates
# Needs pip install -e ".[openvino]" (the test extra has it) and ../shared/data. The checkpoints are
# trained for a runtime comparison (1 epoch; 2 for BANKING77's 77 intents), not for the best scores.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DATA:-../shared/data}
out_dir=bench/results/runtimes-cpu
stamp="$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
mkdir -p "$out_dir"

run_dataset() {  # name, then finetune's arguments
  local name=$1 work=models/bench-runtimes-$1
  shift
  local out="$out_dir/$stamp-$name"
  if [ ! -f "$work/checkpoint/metrics.json" ]; then
    nlu-deploy finetune "$@" --seed 42 --output "$work/checkpoint" --overwrite
  fi
  nlu-deploy export "$work/checkpoint" --output "$work/onnx" --optimize O2 --quantize dynamic --openvino --overwrite \
    | tee "$out-export.txt"
  # a variant over budget makes validate exit 1: a finding, not the end of the run
  nlu-deploy validate --model "$work/checkpoint" --onnx "$work/onnx" \
    --data "$work/checkpoint/validation_split.jsonl" --json "$out-validation.json" | tee "$out-validation.md" \
    || echo "a variant failed validate; bench --recommend leaves it out"
  nlu-deploy bench "$work/onnx" --model "$work/checkpoint" --batch-sizes 1,8,32 --seq-lens 16,32 \
    --min-seconds 1 --json "$out-bench.json" --recommend --validation-report "$out-validation.json" | tee "$out-bench.md"
  if [ "${AUTO:-0}" = 1 ]; then
    nlu-deploy export "$work/checkpoint" --output "$work/onnx-auto" --optimize O2 --quantize auto --openvino \
      --max-score-drop 0.3 --overwrite
    cp "$work/onnx-auto/quantization_report.md" "$out-quantization.md"
  fi
}

args=("$@")
want() { [ ${#args[@]} -eq 0 ] || [[ " ${args[*]} " == *" $1 "* ]]; }
if want snips-intents; then
  run_dataset snips-intents --train "$shared/snips/train.jsonl" --label-column intent --epochs 1
fi
if want snips-slots; then
  run_dataset snips-slots --task token-classification --train "$shared/snips/train.jsonl" --epochs 1 \
    --batch-size 16 --lr 2e-4
fi
if want banking77; then
  run_dataset banking77 --train "$shared/banking77/train.csv" --label-column category --epochs 2
fi
