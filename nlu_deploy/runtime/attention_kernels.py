"""Which attention kernel onnxruntime's CUDA provider ran, per shape: the answer to "did the fused
fp16 graph really take flash or memory-efficient attention here, or fall back to GEMM + softmax?".

onnxruntime says it only one way: with ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1 in the
environment, its CUDA attention ops print one line per node and run to the process's standard
output, from C++ (attention_kernel_options.cc):

    Operator=Attention Node=Attention_0 DataType=fp16 SdpaKernel=EFFICIENT_ATTENTION

The probe runs in a child process (`python -m nlu_deploy.runtime.attention_kernels`) with the
variable set only there: onnxruntime reads it once, and depending on the version per provider or
per process, so setting it in the benchmark's own process could make the timed sessions print
(and flush) on every call. The child runs each shape once, after a marker line naming it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DEBUG_INFO_VARIABLE = "ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO"
# the fused attention ops whose CUDA kernels choose between flash, memory-efficient, TensorRT's
# fused kernels and the unfused MATH path
ATTENTION_OPS = frozenset(
    {"Attention", "MultiHeadAttention", "PackedAttention", "PackedMultiHeadAttention", "GroupQueryAttention"}
)
_KERNEL_LINE = re.compile(r"Operator=(\w+)(?: Node=\S+)? DataType=(\w+) SdpaKernel=(\w+)")
_SHAPE_MARKER = "### nlu-deploy probe shape: "
PROBE_TIMEOUT_S = 300


def kernel_counts(printed: str) -> dict[str, int]:
    """'op dtype: KERNEL' -> how many node runs took it, from what onnxruntime printed (its lines
    are wrapped in colour codes, which the pattern skips)."""
    counts: dict[str, int] = {}
    for operator, dtype, kernel in _KERNEL_LINE.findall(printed):
        key = f"{operator} {dtype}: {kernel}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def kernels_per_shape(printed: str) -> dict[str, dict[str, int]]:
    """The child's whole output split at its shape markers: shape label -> kernel counts."""
    shapes: dict[str, dict[str, int]] = {}
    for section in printed.split(_SHAPE_MARKER)[1:]:
        label, _, rest = section.partition("\n")
        shapes[label.strip()] = kernel_counts(rest)
    return shapes


def probe_attention_kernels(
    path: Path, batches: dict[str, dict[str, np.ndarray]], provider: str = "cuda", tf32: bool = False
) -> dict[str, dict[str, int]]:
    """Shape label -> kernel counts for one graph, each batch run once in a child process with
    onnxruntime's report turned on. Empty counts for a shape: onnxruntime printed nothing (the CPU
    provider, a build without the report, or no attention op ran). Raises RuntimeError with the
    child's last words if it fails."""
    from nlu_deploy.stopping import dies_with_this_process

    with tempfile.TemporaryDirectory(prefix="attention-probe-") as scratch:
        arrays = {
            f"{index}/{name}": value for index, batch in enumerate(batches.values()) for name, value in batch.items()
        }
        np.savez(Path(scratch) / "batches.npz", **arrays)
        (Path(scratch) / "labels.txt").write_text("\n".join(batches), encoding="utf-8")
        command = [sys.executable, "-m", "nlu_deploy.runtime.attention_kernels", str(path), scratch, provider]
        command += ["--tf32"] if tf32 else []
        child = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env={**os.environ, DEBUG_INFO_VARIABLE: "1"},
            preexec_fn=dies_with_this_process(),
        )
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the probe process exited {child.returncode}: {last}")
    return kernels_per_shape(child.stdout)


def _probe_main(arguments: list[str]) -> None:
    """The child: one session on the graph, each batch once after its marker."""
    from nlu_deploy.runtime.sessions import create_session, graph_feed

    path, scratch, provider = Path(arguments[0]), Path(arguments[1]), arguments[2]
    labels = (scratch / "labels.txt").read_text(encoding="utf-8").split("\n")
    arrays = np.load(scratch / "batches.npz")
    session = create_session(path, provider, fallback=False, tf32="--tf32" in arguments)
    for index, label in enumerate(labels):
        batch = {key.split("/", 1)[1]: arrays[key] for key in arrays.files if key.split("/", 1)[0] == str(index)}
        print(f"{_SHAPE_MARKER}{label}", flush=True)  # onnxruntime's own lines follow, flushed by C++
        session.run(None, graph_feed(session.get_inputs(), batch))
    sys.stdout.flush()


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
