#!/usr/bin/env bash
# Does the default `run` ship the fastest variant of this machine? For each data set: `run` with its
# default recipe (measured), then an independent `bench` of the same ONNX directory on real-length
# held-out batches (1 and 32 texts, each batch padded to its longest), and a table saying whether
# the shipped variant is within 10% of the fastest variant that passed the gate in that timing.
# Results: bench/results/ship-choice-cpu/<date>-<machine>-<data set>/ (the run's report, the
# independent bench, ship_check.md).
#   bash bench/ship_choice_cpu.sh                   # SNIPS intents and BANKING77
#   bash bench/ship_choice_cpu.sh snips             # one data set
# The checkpoints get 1 epoch (SNIPS) and 2 (BANKING77's 77 intents): the question is the choice
# of variant, not the best score. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DATA:-../shared/data}
stamp="$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu"
mkdir -p bench/results/ship-choice-cpu

check() {  # name, then run's data arguments
  local name=$1 work=models/ship-choice-$1 out="bench/results/ship-choice-cpu/$stamp-$1"
  shift
  mkdir -p "$out"
  start=$(date +%s)
  nlu-deploy run "$@" --seed 42 --output "$work" --overwrite > "$out/run.txt"
  echo "run seconds: $(( $(date +%s) - start ))" >> "$out/run.txt"
  cp "$work/report.md" "$work/report.json" "$work/onnx/recommendation.json" "$out/"
  for i in 1 2 3; do  # three independent timings, judged on medians: one bench run on this VM can be 20% off
    nlu-deploy bench "$work/onnx" --model "$work/checkpoint" --batch-sizes 1 --seq-lens 16 --min-seconds 2 \
      --real-lengths "$work/checkpoint/validation_split.jsonl" --real-batch-sizes 1,32 \
      --json "$out/independent-bench-$i.json" > "$out/independent-bench-$i.md"
  done
  python bench/ship_check.py "$out" | tee "$out/ship_check.md"
}

sets=${*:-snips banking77}
for name in $sets; do
  case $name in
    snips) check snips --train "$shared/snips/train.jsonl" --label-column intent --epochs 1 ;;
    banking77) check banking77 --train "$shared/banking77/train.csv" --label-column category --epochs 2 ;;
    *) echo "unknown data set $name (snips, banking77)" >&2; exit 2 ;;
  esac
done
