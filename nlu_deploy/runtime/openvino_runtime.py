"""OpenVINO as a second runtime, beside onnxruntime, for the same exported model.

An export with --openvino holds two OpenVINO IR files beside the ONNX ones: the fp32 graph
(openvino_model.xml, converted from model.onnx) and an NNCF post-training int8 model
(openvino_model_int8.xml, calibrated on training texts as `--quantize static` is). They make
up to three variants, each named by runtime and precision:

- openvino-f32: the fp32 IR with INFERENCE_PRECISION_HINT f32;
- openvino-bf16: the same IR with the hint bf16, only on CPUs with AMX or AVX-512 BF16
  (elsewhere OpenVINO would emulate bf16, slower than f32);
- openvino-int8: the int8 IR, its float parts with the hint f32.

The hint is always set explicitly: OpenVINO's default on AMX CPUs is bf16, which changes
scores, and a report must say which precision ran. `OpenVinoSession` offers the slice of
onnxruntime's InferenceSession the rest of the tool uses (get_inputs, get_outputs, run,
get_providers), so validate, bench and predict run either runtime the same way. Nothing
here imports torch: predict from an OpenVINO variant stays light.
"""

from __future__ import annotations

import ctypes
import functools
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlu_deploy.errors import ModelError, NluDeployError
from nlu_deploy.runtime.runtime_variants import RuntimeVariant, SessionLike, TensorInfo

OPENVINO_INSTALL = 'pip install -e ".[openvino]"'
OPENVINO_FP32_IR = "openvino_model.xml"
OPENVINO_INT8_IR = "openvino_model_int8.xml"
# CPU features with native bf16 matrix arithmetic (Linux /proc/cpuinfo names).
BF16_FEATURES = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class OpenVinoVariant(RuntimeVariant):
    """openvino-f32 | openvino-bf16 | openvino-int8: the IR's .xml (its .bin beside it) and
    INFERENCE_PRECISION_HINT, f32 or bf16."""

    runtime = "OpenVINO"

    def session(self, threads: int | None = None) -> OpenVinoSession:
        return OpenVinoSession(self, threads)


def openvino_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except ValueError:  # a module set to None in sys.modules: treated as absent, as import would
        return False


def require_openvino(what: str = "OpenVINO variants") -> None:
    """A missing optional package is not a usage mistake: exit 1 with how to add it. Every use of
    OpenVINO in this process goes through here first, so its signal-stack guard is in place."""
    if not openvino_available():
        raise NluDeployError(f"{what} need the openvino package: {OPENVINO_INSTALL}")
    _guard_signal_stack()


# Why a signal killed the process with SIGSEGV after OpenVINO had run (the lead of 2026-12-01,
# found 2026-12-07 with a core dump: the fault is the kernel's, at signal delivery, in kill()).
# compile_model installs an alternate signal stack on the calling thread (sigaltstack) and a
# compiled model, when freed, puts back the one that was there before it was compiled. Free two
# models in another order than they were compiled and the thread is left with an alternate stack
# whose memory is gone; CPython installs its signal handlers with SA_ONSTACK, so the next SIGTERM
# or Ctrl-C makes the kernel write the signal frame into unmapped memory, and the process dies.
# The guard gives each thread one alternate stack of ours that is never freed, installed before
# and after every compile: whatever a freed model puts back is then ours, or what was there first.
_SIGNAL_STACK_BYTES = 1 << 16
_signal_stacks: dict[int, object] = {}  # thread id -> its buffer, kept for the life of the process


class _SignalStack(ctypes.Structure):  # stack_t of <signal.h>
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def install_own_signal_stack() -> None:
    """This thread's alternate signal stack becomes a buffer of ours (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    buffer = _signal_stacks.setdefault(threading.get_ident(), ctypes.create_string_buffer(_SIGNAL_STACK_BYTES))
    stack = _SignalStack(ctypes.addressof(buffer), 0, _SIGNAL_STACK_BYTES)
    ctypes.CDLL(None, use_errno=True).sigaltstack(ctypes.byref(stack), None)


def _guard_signal_stack() -> None:
    """Wrap openvino.Core.compile_model (NNCF's calls included) once per process."""
    import openvino as ov

    compile_model = ov.Core.compile_model
    if getattr(compile_model, "keeps_signal_stack", False):
        return

    @functools.wraps(compile_model)
    def guarded(self, *args, **kwargs):
        install_own_signal_stack()
        try:
            return compile_model(self, *args, **kwargs)
        finally:
            install_own_signal_stack()

    guarded.keeps_signal_stack = True
    ov.Core.compile_model = guarded


def bf16_features(flags: set[str] | None = None) -> list[str]:
    """The CPU features that make bf16 worth running here (empty: none)."""
    if flags is None:
        from nlu_deploy.runtime.machine import cpu_flags

        flags = cpu_flags()
    return [feature for feature in BF16_FEATURES if feature in flags]


def openvino_variants(directory: Path, flags: set[str] | None = None) -> list[OpenVinoVariant]:
    """The OpenVINO variants an export directory holds, bf16 only where the CPU has it natively."""
    directory = Path(directory)
    variants = []
    fp32 = directory / OPENVINO_FP32_IR
    if fp32.exists():
        variants.append(OpenVinoVariant("openvino-f32", fp32, "f32"))
        if bf16_features(flags):
            variants.append(OpenVinoVariant("openvino-bf16", fp32, "bf16"))
    if (directory / OPENVINO_INT8_IR).exists():
        variants.append(OpenVinoVariant("openvino-int8", directory / OPENVINO_INT8_IR, "f32"))
    return variants


def find_variant(directory: Path, name: str) -> OpenVinoVariant | None:
    """An OpenVINO variant by name, also bf16 on a CPU without native bf16 (asked for by name)."""
    found = next((v for v in openvino_variants(directory) if v.name == name), None)
    if found is None and name == "openvino-bf16" and (Path(directory) / OPENVINO_FP32_IR).exists():
        found = OpenVinoVariant(name, Path(directory) / OPENVINO_FP32_IR, "bf16")
    return found


def openvino_reason(error: BaseException) -> str:
    """What OpenVINO said, without the source locations it wraps it in: its message reads
    "Exception from src/...cpp:84:", "Check '...' failed at src/...cpp:900:", then the reason
    ("Incorrect weights in bin file!")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not re.search(r"(^Exception from |failed at )\S+:\d+:$", line)]
    return (reasons or lines or [type(error).__name__])[0].rstrip("!")


class OpenVinoSession(SessionLike):
    """An OpenVINO CPU model behind the slice of onnxruntime's session API this tool uses."""

    def __init__(self, variant: OpenVinoVariant, threads: int | None = None):
        require_openvino()
        import openvino as ov

        if not variant.path.is_file() or not variant.path.with_suffix(".bin").is_file():
            raise ModelError(f"{variant.path} (and its .bin) is not an OpenVINO model.")
        core = ov.Core()
        properties = {"INFERENCE_PRECISION_HINT": variant.precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(core.read_model(str(variant.path)), "CPU", properties)
        except RuntimeError as error:
            raise ModelError(f"OpenVINO cannot load {variant.path} ({openvino_reason(error)}).") from None
        self.variant = variant
        # what OpenVINO says it runs, read back rather than assumed (f32, bf16)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self._inputs = [
            TensorInfo(port.get_any_name(), list(port.get_partial_shape())) for port in self.compiled.inputs
        ]
        self._outputs = [
            TensorInfo(port.get_any_name(), [d.get_length() if d.is_static else None for d in port.get_partial_shape()])
            for port in self.compiled.outputs
        ]
        self.request = self.compiled.create_infer_request()

    def get_providers(self) -> list[str]:
        return [f"OpenVINO CPU ({self.precision})"]

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer({name: np.ascontiguousarray(value) for name, value in feed.items()})
        by_name = {port.get_any_name(): np.array(value, copy=True) for port, value in results.items()}
        return [by_name[name] for name in (output_names or [o.name for o in self._outputs])]
