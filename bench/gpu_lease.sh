#!/usr/bin/env bash
# One lent-GPU session (../shared/DEVICE.md), as back-to-back calls of the device tool (the machine
# goes back ~30 s after a call, and one call may run 600 s at most). Here first:
# `bash bench/gpu_ship.sh prepare` writes .whl/, .gpu/ and .ort/ and prints the calls; then
#   call 1   carry .whl, .gpu     bash bench/gpu_lease.sh start
#            installs our pinned stack (transformers 4.57, its tokenizers and hub client, optimum-onnx)
#            into /tmp/site over the machine's torch, and starts gpu_check.sh's `models` and
#            `training` steps in the background (setsid: they outlive the call), so that the GPU
#            trains while the next calls bring onnxruntime-gpu;
#   calls 2-5  carry .ort/part-a?   bash bench/gpu_lease.sh part
#            moves the part to /tmp/ort and shows that the earlier parts and the background run are
#            still there (if they are not, files do not survive between calls: the recipe fails);
#   call 6   carry the last part and .ort/SHA256   bash bench/gpu_lease.sh join
#            reassembles and verifies the wheel, installs it into /tmp/site, runs `doctor`, and
#            waits (WAIT_BACKGROUND_S, default 420) for the background run, stopping it after that;
#   calls 7-8  carry .serve/part-a? (the last with .serve/SHA256)   bash bench/gpu_lease.sh serve-part
#            serve-bench's server and clients (nvidia-pytriton, tritonclient, numpy < 2): gathered in
#            /tmp/serve-parts and, with the checksum, installed into /tmp/serve-site
#   call 9   bash bench/gpu_lease.sh measure
#            MEASURE_STEPS (default `parity bench`; `fastpaths` for issue 33) alone on the GPU, then
#            everything as $OUT/gpu-results.tar.gz plus the headline files (PYTEST_S=N also runs
#            `pytest -m gpu` for up to N seconds).
# LEASE_STEPS picks what `start` runs in the background (default `models training`; `intents` is
# all that `fastpaths` needs).
# On 2026-12-01 the whole session took 13 minutes of device time (bench/results/gpu-check/2026-12-01-h200).
# `bash bench/gpu_lease.sh sweep` is the 2026-11-29 lease: the training check and bench/recipe_sweep.py.
# Rehearse here: LEASE_CPU=1 OUT=/tmp/lease bash bench/gpu_lease.sh start (then part, join, measure).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-lease}
results=/tmp/gpu-results   # survives between calls, unlike $OUT, which each call empties
repo=/tmp/nlu-repo         # the background run's own copy: the next call replaces the working tree
mkdir -p "$OUT"
cpu=${LEASE_CPU:-0}
python=python3

install_stack() {  # our pinned wheels over the machine's torch, into /tmp/site
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_lease: the .whl stack did not install"; exit 1; }
}

nlu_deploy_command() {  # `nlu-deploy` on PATH, run from PYTHONPATH (nothing is pip-installed there)
  mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -m nlu_deploy "$@"\n' > /tmp/bin/nlu-deploy && chmod +x /tmp/bin/nlu-deploy
  export PATH=/tmp/bin:$PATH
}

environment() {
  export PYTHONPATH=/tmp/site:$repo PYTHONUNBUFFERED=1
  nlu_deploy_command
  if [ "$cpu" = 1 ]; then  # the rehearsal: the venv's own packages, no /tmp/site
    export PYTHONPATH=$repo
  fi
}

start() {
  [ "$cpu" = 1 ] || install_stack
  rm -rf "$repo" "$results" /tmp/payload /tmp/gpu-background.done /tmp/gpu-background.pid && mkdir -p "$repo" "$results" /tmp/payload
  cp -r nlu_deploy bench tests pyproject.toml "$repo"/
  cp -r .gpu/. /tmp/payload/ && gunzip -f /tmp/payload/data/snips/train.jsonl.gz /tmp/payload/minilm/model.safetensors.gz
  environment
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    lscpu | grep -E "^Model name|^CPU\(s\)" ; $python -c "import torch, transformers, onnxruntime; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, \
'onnxruntime', onnxruntime.__version__)"; } > "$results/machine.txt" 2>&1
  cat "$results/machine.txt"
  local steps=${LEASE_STEPS:-models training}
  setsid nohup env OUT="$results" WORK_DIR=/tmp/nlu-gpu-check STUDY_DEADLINE_S="${STUDY_DEADLINE_S:-270}" SNIPS_TRAIN=/tmp/payload/data/snips/train.jsonl \
    MODEL=/tmp/payload/minilm GPU_CHECK_STEPS="$steps" GPU_CHECK_CPU="$cpu" \
    bash -c "bash $repo/bench/gpu_check.sh; touch /tmp/gpu-background.done" > /tmp/gpu-background.log 2>&1 < /dev/null &
  echo $! > /tmp/gpu-background.pid  # setsid made it a process group of its own: join stops it by that
  sleep 20  # long enough to see the first fine-tune start, or the stack fail
  tail -5 /tmp/gpu-background.log
}

part() {
  if [ "$cpu" = 1 ]; then ls -l .ort; else mkdir -p /tmp/ort && mv .ort/part-* /tmp/ort/ && ls -l /tmp/ort; fi
  ls /tmp/site 2>/dev/null | head -3 || echo "gpu_lease: /tmp/site is gone: files do not survive between calls"
  tail -3 /tmp/gpu-background.log 2>/dev/null || echo "gpu_lease: the background run's log is gone"
}

serve_part() {  # a part of the serving stack; with the checksum, the whole stack installed
  [ "$cpu" = 1 ] && { ls -l .serve; return; }
  mkdir -p /tmp/serve-parts && mv .serve/part-* /tmp/serve-parts/ && ls /tmp/serve-parts
  if [ -f .serve/SHA256 ]; then
    mv .serve/SHA256 /tmp/serve-parts/
    SITE=/tmp/serve-site bash bench/gpu_ship.sh join /tmp/serve-parts || echo "gpu_lease: the serving stack could not be put together"
    PYTHONPATH=/tmp/serve-site $python -c "import numpy, pytriton, tritonclient; print('serving stack: numpy', numpy.__version__, pytriton.__file__)" 2>&1 \
      | tee "$results/serving-stack.txt"
    ldd --version | head -1 | tee -a "$results/serving-stack.txt"  # tritonserver wants glibc 2.35
  fi
}

join() {
  environment
  if [ "$cpu" != 1 ]; then
    mkdir -p /tmp/ort && mv .ort/part-* .ort/SHA256 /tmp/ort/ && SITE=/tmp/site bash bench/gpu_ship.sh join /tmp/ort \
      || echo "gpu_lease: onnxruntime-gpu could not be put together"
    $python -c "import onnxruntime as o; print(o.__file__, o.get_device(), o.get_available_providers())" 2>&1 \
      | tee "$results/onnxruntime.txt"
  fi
  env OUT="$results" WORK_DIR=/tmp/nlu-gpu-check GPU_CHECK_STEPS="doctor" GPU_CHECK_CPU="$cpu" bash "$repo/bench/gpu_check.sh"
  # parity and bench wait for the background training: nothing else may share the GPU while it is timed
  local deadline=$(( $(date +%s) + ${WAIT_BACKGROUND_S:-420} ))
  while [ ! -e /tmp/gpu-background.done ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
  if [ ! -e /tmp/gpu-background.done ]; then
    echo "gpu_lease: the background run is still going after the wait: stopped. Its last lines:"
    tail -5 /tmp/gpu-background.log
    kill -- -"$(cat /tmp/gpu-background.pid)" 2>/dev/null; touch /tmp/gpu-background.done
  fi
  grep -v "it/s" /tmp/gpu-background.log | tail -20
}

measure() {
  # MEASURE_S: this call's own limit (the device call's timeout_s), so that what ran is packed into
  # $OUT before the call ends
  local end=$(( $(date +%s) + ${MEASURE_S:-300} - 15 ))
  left() { echo $(( end - $(date +%s) > 5 ? end - $(date +%s) : 5 )); }
  environment
  local serve_site=/tmp/serve-site
  [ "$cpu" = 1 ] && serve_site=""  # the rehearsal: the venv has the serving stack
  env OUT="$results" WORK_DIR=/tmp/nlu-gpu-check GPU_CHECK_STEPS="${MEASURE_STEPS:-parity bench}" GPU_CHECK_CPU="$cpu" \
    SERVE_SITE="$serve_site" \
    timeout "$(left)" bash "$repo/bench/gpu_check.sh" > /dev/null || echo "gpu_lease: ${MEASURE_STEPS:-parity bench}: exit $? (124: out of time)"
  if [ "${PYTEST_S:-0}" -gt 0 ] && [ "$(left)" -gt 30 ]; then  # the suite's own GPU tests, if the lease has time left
    (cd "$repo" && timeout "$(( PYTEST_S < $(left) ? PYTEST_S : $(left) ))" $python -m pytest -m gpu -q -p no:cacheprovider \
      tests/test_gpu.py) 2>&1 | tail -15 > "$results/pytest-gpu.txt"
  fi
  grep -v "it/s" /tmp/gpu-background.log > "$results/gpu-background.log" 2>/dev/null
  tar -czf "$OUT/gpu-results.tar.gz" -C "$results" .
  for name in gpu_check.log doctor.md training.md predict-parity.md pytest-gpu.txt serving-stack.txt validation-fast.md; do cp "$results/$name" "$OUT/" 2>/dev/null; done
  cp "$results"/bench-*.md "$OUT/" 2>/dev/null
  tail -12 "$results/gpu_check.log"
}

sweep() {  # the 2026-11-29 lease: training check, then the recipe sweep until the deadline
  local started budget left workers device sweep_options=()
  started=$(date +%s) budget=${LEASE_MINUTES:-8}
  if [ "$cpu" != 1 ]; then
    install_stack
    export PYTHONPATH=/tmp/site:$PWD
    nlu_deploy_command
    device=cuda workers=${SWEEP_WORKERS:-8}
  else
    device=cpu workers=2 sweep_options=(--rows 300 --epochs-cap 1 --only snips-slots,clinc150)
  fi
  gunzip -kf .gpu/data/*/*.gz .gpu/minilm/model.safetensors.gz
  left=$($python -c "print(max(0.5, $budget - ($(date +%s) - $started) / 60 - 1.5))")
  $python bench/recipe_sweep.py --data-root .gpu/data --model .gpu/minilm --device "$device" --workers "$workers" \
    --out "$OUT" --deadline-minutes "$left" --grace-minutes "${SWEEP_GRACE:-1}" --plan "${SWEEP_PLAN:-first}" "${sweep_options[@]}"
}

case "${1:-}" in
  start) start ;; part) part ;; join) join ;; serve-part) serve_part ;; measure) measure ;; sweep) sweep ;;
  *) echo "usage: bash bench/gpu_lease.sh start|part|join|serve-part|measure|sweep" >&2; exit 2 ;;
esac
