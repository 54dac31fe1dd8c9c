#!/usr/bin/env bash
# Reproduce the README's joint intent + slot figures (SNIPS) from a fresh clone, after the
# README's install command:
#   1. fine-tune one joint MiniLM (--task joint) with the default options (3 epochs; the joint
#      defaults batch 16 / lr 4e-4 / slot-loss weight 2 since 2026-11-30, batch 16 / lr 2e-4 /
#      weight 1 before) on a seeded 90% of SNIPS train; the other 10% is held out;
#   2. export fp32 / O2 / dynamic int8 and validate every file on the held-out 10%: intent
#      accuracy, entity F1, exact match;
#   3. train the intent-only model (1 epoch, as in bench/snips_cpu.sh) on exactly the same 90%,
#      scored on the same 10%, and export its int8 file the same way;
#   4. benchmark both int8 files (and the joint PyTorch model) in one bench run.
# Results: bench/results/<date>-<machine>-snips-joint-{validation,intent-validation,bench}.{json,md}.
# REUSE_CHECKPOINT=1 skips training a model whose checkpoint already exists.
# Needs ../shared/data/snips (not part of the project; see ../shared/data/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
work=${WORK_DIR:-models/bench-snips-joint}
out="bench/results/snips-joint-cpu/$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu-snips-joint"
mkdir -p bench/results/snips-joint-cpu "$work"

if [ "${REUSE_CHECKPOINT:-0}" != 1 ] || [ ! -f "$work/joint/metrics.json" ]; then
  nlu-deploy finetune --task joint --train "$data" --seed 42 --output "$work/joint" --overwrite
fi
cp "$work/joint/metrics.json" "$out-finetune-metrics.json"
nlu-deploy export "$work/joint" --output "$work/joint-onnx" --optimize O2 --quantize dynamic --overwrite
nlu-deploy validate --model "$work/joint" --onnx "$work/joint-onnx" \
  --data "$work/joint/validation_split.jsonl" --json "$out-validation.json" | tee "$out-validation.md"

# The intent-only model sees the joint model's training rows and is scored on its held-out rows:
# the split is rebuilt with the same function and seed, and checked against the saved split.
python - "$data" "$work" <<'PY'
import json, sys
from pathlib import Path
from nlu_deploy.data.tables import read_records, write_jsonl
from nlu_deploy.data.tagged import load_tagged_sentences, random_holdout
data, work = Path(sys.argv[1]), Path(sys.argv[2])
records = read_records(data)
sentences = load_tagged_sentences(data, "tokens", "tags", "intent")
assert len(sentences) == len(records), "empty rows were skipped: the split indices would not match"
indexed = sentences.subset(list(range(len(records))), "indexed")
indexed = type(indexed)([[str(i)] for i in range(len(records))], indexed.tags, "indexed", intents=indexed.intents)
train, held = random_holdout(indexed, 0.1, 42)
saved = [json.loads(line)["tokens"] for line in (work / "joint" / "validation_split.jsonl").open()]
assert saved == [records[int(w[0])]["tokens"] for w in held.words], "split differs from the joint model's"
write_jsonl([records[int(w[0])] for w in train.words], work / "train90.jsonl")
write_jsonl([records[int(w[0])] for w in held.words], work / "heldout10.jsonl")
PY
if [ "${REUSE_CHECKPOINT:-0}" != 1 ] || [ ! -f "$work/intent/metrics.json" ]; then
  nlu-deploy finetune --train "$work/train90.jsonl" --validation "$work/heldout10.jsonl" --label-column intent \
    --epochs 1 --seed 42 --output "$work/intent" --overwrite
fi
nlu-deploy export "$work/intent" --output "$work/intent-onnx" --optimize O2 --quantize dynamic --overwrite
nlu-deploy validate --model "$work/intent" --onnx "$work/intent-onnx" --data "$work/heldout10.jsonl" \
  --json "$out-intent-validation.json" | tee "$out-intent-validation.md"

# One bench run over both int8 files, with the joint PyTorch model as the baseline.
rm -rf "$work/both" && mkdir -p "$work/both"
cp "$work/joint-onnx/config.json" "$work/both/"
cp "$work/joint-onnx/model_quantized.onnx" "$work/both/model_joint_int8.onnx"
cp "$work/intent-onnx/model_quantized.onnx" "$work/both/model_intent_int8.onnx"
nlu-deploy bench "$work/both" --model "$work/joint" --batch-sizes 1,32 --seq-lens 16,32 --min-seconds 4 \
  --json "$out-bench.json" | tee "$out-bench.md"
