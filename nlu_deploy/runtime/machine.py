"""`nlu-deploy doctor`: what the GPU stack really is, checked rather than assumed.

onnxruntime's get_available_providers() lists what the wheel was compiled with, not what
starts: a missing cuBLAS or TensorRT library only shows when a session falls back to CPU. So
every provider is started on a one-node model and kept only if the session reports it first.
Each missing piece is one sentence with the command that installs it. CUDA libraries are
loaded the way onnxruntime documents: torch first (it brings its own), then preload_dlls().
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nlu_deploy.config import EXECUTION_PROVIDERS
from nlu_deploy.reports import markdown_table

# Shared libraries onnxruntime-gpu 1.31's CUDA and TensorRT providers load, and what installs them.
# (onnxruntime-gpu is a CUDA 13 build; its TensorRT provider links TensorRT 10, libnvinfer.so.10,
# while the newest tensorrt wheels are 11.x.)
LIBRARIES = [
    ("CUDA runtime 13", "libcudart.so.13", "pip install 'nvidia-cuda-runtime>=13,<14'"),
    ("cuBLAS 13", "libcublas.so.13", "pip install 'nvidia-cublas>=13,<14'"),
    ("cuBLASLt 13", "libcublasLt.so.13", "pip install 'nvidia-cublas>=13,<14'"),
    ("cuRAND 10", "libcurand.so.10", "pip install 'nvidia-curand>=10,<11'"),
    ("cuDNN 9", "libcudnn.so.9", "pip install 'nvidia-cudnn-cu13>=9,<10'"),
    # PyPI's tensorrt-cu13-libs 10.x is a stub that fetches the real 3.7 GB wheel from NVIDIA's
    # own index while installing: behind a mirror without that index it installs nothing usable.
    (
        "TensorRT 10",
        "libnvinfer.so.10",
        "pip install 'tensorrt-cu13-libs>=10.14,<11' (a stub that downloads the libraries from NVIDIA's index "
        "at install time: it needs that index to be reachable)",
    ),
]
CHECKED_PROVIDERS = tuple(EXECUTION_PROVIDERS[name] for name in ("cuda", "tensorrt", "cpu"))  # doctor's order


@dataclass
class Check:
    name: str
    ok: bool | None  # None: informational
    detail: str
    fix: str = ""


@dataclass
class StackReport:
    checks: list[Check] = field(default_factory=list)
    providers: dict[str, str] = field(default_factory=dict)  # provider -> "starts" or why not

    def starts(self, provider: str) -> bool:
        return self.providers.get(provider) == "starts"

    def problems(self) -> list[str]:
        return [f"{c.detail}{' Fix: ' + c.fix if c.fix else ''}" for c in self.checks if c.ok is False]

    def to_json(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        rows = [[c.name, {True: "ok", False: "MISSING", None: ""}[c.ok], c.detail, c.fix] for c in self.checks]
        providers = [[name, state] for name, state in self.providers.items()]
        return (
            markdown_table(["check", "state", "detail", "fix"], rows)
            + "\n\n"
            + markdown_table(["execution provider", "session"], providers)
            + "\n"
        )


def _library(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def _tiny_model() -> bytes:
    """One Add node: enough for a provider to load its libraries and claim the node."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    # IR version 9: what onnxruntime 1.17 and later read (the onnx package may write a newer one)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


@contextlib.contextmanager
def _silenced():
    """Provider libraries print their load failures from C++ straight to the file descriptors;
    the report says it in one line instead."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def provider_state(provider: str, model: bytes) -> str:
    """'starts' when a session with `provider` first really runs on it, else why not."""
    import numpy as np
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        return "not in this onnxruntime build"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        with _silenced():
            session = ort.InferenceSession(model, options, providers=[provider, "CPUExecutionProvider"])
            session.run(None, {"x": np.ones((1, 4), dtype=np.float32)})
    except Exception as exc:  # provider libraries raise many types when they fail to load
        return f"fails: {str(exc).strip().splitlines()[0][:120]}"
    used = session.get_providers()[0]
    return "starts" if used == provider else f"falls back to {used} (a library or the device is missing)"


def diagnose() -> StackReport:
    report = StackReport()
    torch_cuda = None
    try:
        import torch  # first: it brings CUDA libraries onnxruntime can then use

        torch_cuda = torch.version.cuda
        gpu = torch.cuda.is_available()
        devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if gpu else ""
        report.checks.append(
            Check(
                "torch",
                None,
                f"{torch.__version__}, built for CUDA {torch_cuda or 'none (CPU build)'}"
                f"; CUDA device: {devices or 'none'}",
            )
        )
        report.checks.append(
            Check(
                "TF32",
                None,
                f"torch matmul allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                f"cudnn allow_tf32={torch.backends.cudnn.allow_tf32} (bench sets both with "
                "--tf32/--no-tf32, and onnxruntime's use_tf32 to match)",
            )
        )
    except ImportError:
        report.checks.append(Check("torch", None, "not installed (serving needs only onnxruntime)"))
    import onnxruntime as ort

    try:
        from onnxruntime.capi import build_and_package_info as build

        package, ort_cuda = build.package_name, getattr(build, "cuda_version", None)
    except ImportError:
        package, ort_cuda = "onnxruntime", None
    report.checks.append(
        Check("onnxruntime", None, f"{package} {ort.__version__}, built for CUDA {ort_cuda or 'none'}")
    )
    if torch_cuda and ort_cuda:
        agree = torch_cuda.split(".")[0] == ort_cuda.split(".")[0]
        report.checks.append(
            Check(
                "CUDA versions agree",
                agree,
                f"torch uses CUDA {torch_cuda}, onnxruntime CUDA {ort_cuda}.",
                ""
                if agree
                else f"install a torch build for CUDA {ort_cuda.split('.')[0]} (pip install torch "
                f"--index-url https://download.pytorch.org/whl/cu{ort_cuda.replace('.', '')}) or an onnxruntime-gpu "
                f"built for CUDA {torch_cuda.split('.')[0]}.",
            )
        )
    if ort_cuda:
        load_cuda_libraries()
        for name, soname, fix in LIBRARIES:
            found = _library(soname)
            report.checks.append(
                Check(name, found, f"{soname} {'found' if found else 'not found'}.", "" if found else fix)
            )
    model = _tiny_model()
    report.providers = {provider: provider_state(provider, model) for provider in CHECKED_PROVIDERS}
    return report


def load_cuda_libraries() -> None:
    """Load CUDA, cuDNN and cuBLAS from the nvidia-* wheels before a GPU session starts, so that a
    process that never imports torch (predict's light path) finds them as one that does would."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # its failures only print: doctor's checks say what is missing
        with _silenced(), contextlib.suppress(Exception):
            ort.preload_dlls()


def provider_problem(provider_name: str) -> str:
    """One sentence on why a provider does not start, for error messages."""
    report = diagnose()
    state = report.providers.get(provider_name, "unknown")
    problems = report.problems()
    detail = f" Missing: {' '.join(problems)}" if problems else ""
    return f"{provider_name} {state}.{detail} Run `nlu-deploy doctor` for the whole picture."


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()
