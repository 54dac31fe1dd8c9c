#!/usr/bin/env bash
# Everything one lent-GPU session runs, in one call of the device tool (see ../shared/DEVICE.md):
#   1. installs the pinned stack that travels as wheels in .whl/ (transformers 4.57, its tokenizers
#      and hub client, optimum-onnx) over the machine's own torch;
#   2. bench/gpu_check.sh's training step (torch.compile + bf16 against eager fp32 on CUDA);
#   3. bench/recipe_sweep.py on the GPU until the deadline, 8 fine-tunes side by side.
# .gpu/ carries the data (gzipped) and MiniLM's weights in fp16 (45 MB instead of 91, so that one
# call can carry them; they are widened back to fp32 on load, a change of at most 1e-3 per weight).
# The device's onnxruntime is a CPU build and onnxruntime-gpu (~256 MB) cannot travel in one call,
# so the CUDA / TensorRT execution-provider benchmarks are not run here.
#   run: bash bench/gpu_lease.sh            (on the device, OUT set by the tool)
#   rehearse here: LEASE_CPU=1 OUT=/tmp/lease bash bench/gpu_lease.sh
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
budget=${LEASE_MINUTES:-8}
OUT=${OUT:-/tmp/gpu-lease}
mkdir -p "$OUT"
if [ "${LEASE_CPU:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -m nlu_deploy "$@"\n' > /tmp/bin/nlu-deploy && chmod +x /tmp/bin/nlu-deploy
  export PATH=/tmp/bin:$PATH
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/machine.txt" 2>&1
  python3 -c "import torch, transformers, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'onnxruntime', onnxruntime.__version__)" >> "$OUT/machine.txt" 2>&1
  device=cuda workers=${SWEEP_WORKERS:-8}
else
  device=cpu workers=2
fi
gunzip -kf .gpu/data/*/*.gz  # (on the device; here, delete the copies before the next call: they would travel)
export SNIPS_TRAIN=.gpu/data/snips/train.jsonl MODEL=.gpu/minilm WORK_DIR=/tmp/nlu-gpu-check
if [ "${SWEEP_PLAN:-first}" = first ]; then  # the follow-up lease is the sweep alone
  GPU_CHECK_TRAIN_ONLY=1 GPU_CHECK_CPU=${LEASE_CPU:-0} timeout 240 bash bench/gpu_check.sh || echo "gpu_check: exit $?"
fi
left=$(python3 -c "print(max(0.5, $budget - ($(date +%s) - $started) / 60 - 1.5))")
sweep_options=()
[ "${LEASE_CPU:-0}" = 1 ] && sweep_options=(--rows 300 --epochs-cap 1 --only snips-slots,clinc150)
python3 bench/recipe_sweep.py --data-root .gpu/data --model .gpu/minilm --device "$device" --workers "$workers" \
  --out "$OUT" --deadline-minutes "$left" --grace-minutes "${SWEEP_GRACE:-1}" --plan "${SWEEP_PLAN:-first}" "${sweep_options[@]}"
echo "lease script: $(( $(date +%s) - started )) s"
