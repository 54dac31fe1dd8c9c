#!/usr/bin/env bash
# Out-of-scope rejection on CLINC150 (150 intents plus `oos`), on CPU, from a fresh clone after
# the README's install command:
#   1. MiniLM trained with the oos rows as a class of their own, and again with the oos rows
#      left out of training (calibration only): the evidence for --oos-training's default.
#      Both calibrate their threshold on validation.jsonl (default target: 80% oos recall);
#      metrics.json holds the chosen rule, both scores (msp, energy), the trade-off curves and
#      a 2-fold cross-fitted estimate (each half judged by the rule calibrated on the other).
#   2. export fp32 / O2 / int8 (the budgeted search, 0.5 points) of the class model and validate every file against PyTorch on
#      validation.jsonl (parity of the rule: the figures there are in-sample for the threshold;
#      the cross-fitted ones are the estimate for new data).
# Results: bench/results/<date>-<machine>-clinc-oos-*. Needs ../shared/data/clinc150.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CLINC_DIR:-../shared/data/clinc150}
work=${WORK_DIR:-models/bench-clinc}
# EPOCHS / LR unset: the task recipe (8 epochs by the epochs rule, lr 1e-4); --oos-label also
# implies label smoothing 0.1 (pass FINETUNE_OPTIONS="--label-smoothing 0" for the older runs)
epochs=${EPOCHS:+--epochs $EPOCHS}
lr=${LR:+--lr $LR}
pooling=${POOLING:-default}  # mean: the head on the mean-pooled hidden states (finetune --pooling)
# more finetune options, e.g. "--average-weights --seed 7" (word-split; no quoting inside)
extra=${FINETUNE_OPTIONS:-}
out="bench/results/clinc-oos-cpu/$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu-clinc-oos"
mkdir -p bench/results/clinc-oos-cpu

for mode in ${MODES:-class calibration}; do
  nlu-deploy finetune --train "$data/train.jsonl" --validation "$data/validation.jsonl" --label-column intent \
    --oos-label oos --oos-training "$mode" $epochs $lr --pooling "$pooling" \
    --output "$work/$mode" --overwrite $extra
  cp "$work/$mode/metrics.json" "$out-$mode-metrics.json"
  cp "$work/$mode/out_of_scope.png" "$out-$mode-tradeoff.png"
done
nlu-deploy export "$work/class" --output "$work/class-onnx" --optimize O2 --quantize auto --max-score-drop 0.5 \
  --validation "$data/validation.jsonl" --overwrite | tee "$out-int8-search.md"
nlu-deploy validate --model "$work/class" --onnx "$work/class-onnx" --data "$data/validation.jsonl" \
  --json "$out-validation.json" | tee "$out-validation.md"
# 3. the estimate for new data: each half of validation.jsonl judged by the other half's threshold,
#    over 20 random halvings, for every score the logits give
python bench/experiments/oos_scores_experiment.py "$work/class" "$data/train.jsonl" "$data/validation.jsonl" --no-mahalanobis \
  > "$out-scores-experiment.json"
