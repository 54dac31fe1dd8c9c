#!/usr/bin/env bash
# Distilled students against their teacher (issue "Smaller and faster than quantization alone").
# For SNIPS intents (1-epoch MiniLM teacher), BANKING77 (4-epoch teacher) and SNIPS slots
# (3 epochs, batch 16, lr 2e-4), each on a seeded 90% of its training file:
#   1. fine-tune the 6-layer teacher, export fp32 + dynamic int8, validate on the held-out 10%;
#   2. distil students with K of its layers (`nlu-deploy distill`, defaults: T 2, alpha 0.5,
#      3 epochs, the teacher's batch size and learning rate, the teacher's own split), export,
#      validate against their own PyTorch weights on the same held-out rows;
#      For the K given third to run_dataset, the student is also exported with `--quantize auto --max-score-drop
#      0.3` (accuracy-budgeted int8, see the README), as student-K-auto;
#   3. benchmark the teacher's PyTorch eager, its ONNX files and every student's in ONE run
#      (`bench --also`), draw accuracy against throughput, and tabulate score deltas and
#      speed-ups over the teacher's PyTorch at batch 32, sequence length 32.
# Results: bench/results/<date>-<machine>-distill-<dataset>.{md,json,png}.
# REUSE=1 keeps checkpoints that already exist (training is reproducible on CPU).
# Arguments name the data sets to run (snips, banking77, snips-slots); none runs all three.
# Needs ../shared/data (not part of the project; see ../shared/data/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DATA:-../shared/data}
stamp="$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
mkdir -p bench/results/distillation-cpu

missing() { [ "${REUSE:-0}" != 1 ] || [ ! -f "$1/metrics.json" ]; }

run_dataset() {
  local name=$1 layers=$2 auto_layers=$3; shift 3
  local work=models/bench-distill-$name out=bench/results/distillation-cpu/$stamp-distill-$name
  if missing "$work/teacher"; then
    nlu-deploy finetune "$@" --seed 42 --output "$work/teacher" --overwrite
  fi
  nlu-deploy export "$work/teacher" --output "$work/teacher-onnx" --quantize dynamic --overwrite
  nlu-deploy validate --model "$work/teacher" --onnx "$work/teacher-onnx" \
    --data "$work/teacher/validation_split.jsonl" --json "$out-teacher-validation.json" > /dev/null
  local also=()
  for k in $layers; do
    if missing "$work/student-$k"; then
      nlu-deploy distill "$work/teacher" --layers "$k" --output "$work/student-$k" --overwrite
    fi
    nlu-deploy export "$work/student-$k" --output "$work/student-$k-onnx" --quantize dynamic --overwrite
    nlu-deploy validate --model "$work/student-$k" --onnx "$work/student-$k-onnx" \
      --data "$work/teacher/validation_split.jsonl" --json "$out-student-$k-validation.json" > /dev/null
    also+=(--also "student-$k=$work/student-$k-onnx")
  done
  for k in $auto_layers; do
    nlu-deploy export "$work/student-$k" --output "$work/student-$k-auto-onnx" --quantize auto --max-score-drop 0.3 \
      --overwrite > "$out-student-$k-auto-quantization.md"
    nlu-deploy validate --model "$work/student-$k" --onnx "$work/student-$k-auto-onnx" \
      --data "$work/teacher/validation_split.jsonl" --json "$out-student-$k-auto-validation.json" > /dev/null
    also+=(--also "student-$k-auto=$work/student-$k-auto-onnx")
  done
  nlu-deploy bench "$work/teacher-onnx" --model "$work/teacher" "${also[@]}" --batch-sizes 1,32 --seq-lens 16,32 \
    --min-seconds 2 --json "$out-bench.json" --accuracy-plot "$out.png" > "$out-bench.md"
  python bench/distill_table.py "$work" "$out-bench.json" $layers $(for k in $auto_layers; do echo "$k-auto"; done) \
    | tee "$out.md"
}

wanted() { [ ${#selected[@]} -eq 0 ] || [[ " ${selected[*]} " == *" $1 "* ]]; }
selected=("$@")
data=$shared/snips/train.jsonl
if wanted snips; then
  run_dataset snips "2 3 4" "" --train "$data" --label-column intent --epochs 1
fi
if wanted banking77; then
  run_dataset banking77 "2 3 4" "3" --train "$shared/banking77/train.csv" --label-column category --epochs 4
fi
if wanted snips-slots; then
  run_dataset snips-slots "3" "" --task token-classification --train "$data" --epochs 3 --batch-size 16 --lr 2e-4
fi
