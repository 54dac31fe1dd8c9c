#!/usr/bin/env bash
# The GPU check: what only a GPU can show, in one script that fits in 8 minutes on one H200.
#   1. `nlu-deploy doctor`: torch / onnxruntime CUDA builds, libraries, which providers start, TF32;
#   2. MiniLM on SNIPS intents, 2 epochs: torch.compile + bf16 against eager fp32, steady-state
#      samples/s (epoch 2) and compile time (epoch 1's excess over the steady rate) apart;
#   3. export fp32 (plain graph, what TensorRT parses), O2 and fp16; validate every file;
#   4. bench on CUDA with IOBinding against PyTorch eager fp32 / fp16 / bf16 and compiled bf16,
#      then on TensorRT (fp16 engines, cached), engine build time reported apart from latency.
# Results go to $OUT (the device tool's output folder), default bench/results/gpu-check-<date>.
#
# On the lent GPU machine our pinned stack travels as wheels (see ../shared/DEVICE.md), e.g.:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   SNIPS_TRAIN=shared/data/snips/train.jsonl bash bench/gpu_check.sh
# MODEL=DIR fine-tunes that encoder instead of the packaged MiniLM. GPU_CHECK_TRAIN_ONLY=1 stops
# after step 2 (bench/gpu_lease.sh: the device's onnxruntime is a CPU build).
# GPU_CHECK_CPU=1 runs the same steps on CPU with 600 SNIPS rows: it checks the script itself,
# not the GPU (steps that need CUDA are skipped and say so).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-check-$(date +%Y-%m-%d)}
work=${WORK_DIR:-/tmp/nlu-gpu-check}
data=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
mkdir -p "$OUT" "$work"
exec > >(tee "$OUT/gpu_check.log") 2>&1
started=$(date +%s)
step() { echo "== $(( $(date +%s) - started )) s: $*"; }

device=cuda
if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
  device=cpu
  python -c "import random, sys; rows = open(sys.argv[1]).readlines(); random.Random(0).shuffle(rows); \
sys.stdout.writelines(rows[:600])" "$data" > "$work/train-sample.jsonl"
  data="$work/train-sample.jsonl"
fi

step "doctor"
if [ "${GPU_CHECK_TRAIN_ONLY:-0}" = 1 ]; then
  nlu-deploy doctor || echo "doctor: exit $?"  # its output is in gpu_check.log
else
  nlu-deploy doctor --json "$OUT/doctor.json" | tee "$OUT/doctor.md" || echo "doctor: exit $? (see doctor.md)"
fi

step "training: compiled + bf16 vs eager fp32 ($device)"
train() {  # name, extra options
  local name=$1; shift
  nlu-deploy finetune --train "$data" --label-column intent --epochs 2 --seed 42 --device "$device" \
    --output "$work/$name" --overwrite ${MODEL:+--model "$MODEL"} "$@"
  cp "$work/$name/metrics.json" "$OUT/training-$name.json"
}
if [ "$device" = cuda ]; then
  train compiled-bf16 --compile --precision bf16
else
  train compiled-bf16 --compile --precision fp32  # CPU: bf16 autocast is not the point here
fi
train eager-fp32 --no-compile --precision fp32
python - "$OUT" <<'PY' | tee "$OUT/training.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| run | device | precision | compiled | epoch 1 s | steady samples/s (epoch 2) | compile s (est.) | accuracy |",
        "|---|---|---|---|---|---|---|---|"]
for name in ("compiled-bf16", "eager-fp32"):
    m = json.loads((out / f"training-{name}.json").read_text())
    first, second = m["epochs"][0], m["epochs"][1]
    steady = second["samples_per_second"]
    # epoch 1 runs the same steps as epoch 2; what it took beyond that is compilation and warm-up
    compile_s = max(0.0, first["seconds"] - m["train_examples"] / steady)
    rows.append(f"| {name} | {m['device']} | {m['amp']} | {m['compiled']} | {first['seconds']:.1f} | {steady:.0f} | "
                f"{compile_s:.1f} | {100 * m['best']['accuracy']:.2f}% |")
print("\n".join(rows))
PY

if [ "${GPU_CHECK_TRAIN_ONLY:-0}" = 1 ]; then
  step "done (training only)"
  exit 0
fi

step "export: fp32 (plain), O2, fp16"
nlu-deploy export "$work/compiled-bf16" --output "$work/onnx" --optimize O2 --overwrite
nlu-deploy export "$work/compiled-bf16" --output "$work/onnx-fp16" --quantize fp16 --overwrite
cp "$work/onnx-fp16/model_fp16.onnx" "$work/onnx/"

step "validate every file against PyTorch on the held-out split"
nlu-deploy validate --model "$work/compiled-bf16" --onnx "$work/onnx" \
  --data "$work/compiled-bf16/validation_split.jsonl" --json "$OUT/validation.json" | tee "$OUT/validation.md" \
  || echo "validate: exit $? (a file lost more than allowed: see validation.md)"

if [ "$device" != cuda ]; then
  step "CPU mode: bench on CPU only (CUDA and TensorRT need the GPU)"
  nlu-deploy bench "$work/onnx" --model "$work/compiled-bf16" --batch-sizes 1,8 --seq-lens 16 \
    --min-seconds 0.3 --json "$OUT/bench-cpu.json" | tee "$OUT/bench-cpu.md"
  step "done"
  exit 0
fi

step "bench: CUDA with IOBinding, PyTorch fp32 / fp16 / bf16 / compiled bf16 in the same run"
nlu-deploy bench "$work/onnx" --model "$work/compiled-bf16" --provider cuda --io-binding --no-tf32 \
  --torch-compile --batch-sizes 1,8,32,128 --seq-lens 16,64 --min-seconds 1 \
  --json "$OUT/bench-cuda.json" --plot "$OUT/bench-cuda.png" --recommend \
  --validation-report "$OUT/validation.json" | tee "$OUT/bench-cuda.md" || echo "bench cuda: exit $?"

step "bench: TensorRT, fp16 engines from the plain graph, engine cache reused"
nlu-deploy bench "$work/onnx" --provider tensorrt --trt-fp16 --trt-cache "$work/trt-cache" --io-binding \
  --variants fp32 --batch-sizes 1,8,32 --seq-lens 16,64 --min-seconds 1 \
  --json "$OUT/bench-tensorrt.json" | tee "$OUT/bench-tensorrt.md" || echo "bench tensorrt: exit $?"
step "done"
