"""Which attention kernel onnxruntime's CUDA provider ran, per shape: the answer to "did the fused
fp16 graph really take flash or memory-efficient attention here, or fall back to GEMM + softmax?".

onnxruntime says it only one way: with ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO=1 in the
environment when a session is made, its CUDA attention ops print one line per node and run to
the process's standard output, from C++ (attention_kernel_options.cc):

    Operator=Attention Node=Attention_0 DataType=fp16 SdpaKernel=EFFICIENT_ATTENTION

So a separate probe session is made with the variable set, run once per shape with file
descriptor 1 redirected to a file, and dropped; the timed sessions are made without it (the
print and its flush on every call would be timed too).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEBUG_INFO_VARIABLE = "ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO"
# the fused attention ops whose CUDA kernels choose between flash, memory-efficient, TensorRT's
# fused kernels and the unfused MATH path
ATTENTION_OPS = frozenset(
    {"Attention", "MultiHeadAttention", "PackedAttention", "PackedMultiHeadAttention", "GroupQueryAttention"}
)
_KERNEL_LINE = re.compile(r"Operator=(\w+)(?: Node=\S+)? DataType=(\w+) SdpaKernel=(\w+)")


def kernel_counts(printed: str) -> dict[str, int]:
    """'op dtype: KERNEL' -> how many node runs took it, from what onnxruntime printed (its lines
    are wrapped in colour codes, which the pattern skips)."""
    counts: dict[str, int] = {}
    for operator, dtype, kernel in _KERNEL_LINE.findall(printed):
        key = f"{operator} {dtype}: {kernel}"
        counts[key] = counts.get(key, 0) + 1
    return counts


@contextmanager
def captured_stdout() -> Iterator[list[str]]:
    """What this process writes to file descriptor 1 inside the block (C++ included), handed
    over in the yielded list when the block ends; Python's own stdout is flushed around it."""
    captured: list[str] = []
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", errors="replace"))


@contextmanager
def debug_info_enabled() -> Iterator[None]:
    previous = os.environ.get(DEBUG_INFO_VARIABLE)
    os.environ[DEBUG_INFO_VARIABLE] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DEBUG_INFO_VARIABLE, None)
        else:
            os.environ[DEBUG_INFO_VARIABLE] = previous


def probe_attention_kernels(path: Path, batches: dict[str, dict], make_session) -> dict[str, dict[str, int]]:
    """Shape label -> kernel counts for one graph: a probe session from `make_session()` (made
    while the debug variable is set) runs each batch once. Empty counts for a shape mean that
    onnxruntime printed nothing (a build without the debug print, or no attention op ran)."""
    from nlu_deploy.runtime.sessions import graph_feed

    with debug_info_enabled():
        session = make_session()
        kernels = {}
        for label, batch in batches.items():
            with captured_stdout() as printed:
                session.run(None, graph_feed(session.get_inputs(), batch))
            kernels[label] = kernel_counts(printed[0])
    del session
    return kernels
