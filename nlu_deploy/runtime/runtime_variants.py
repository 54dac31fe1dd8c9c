"""The runtimes beside onnxruntime, as data: a variant is a file of an export directory, the
runtime that runs it and the precision it runs at. OpenVINO (openvino_runtime.py) and PyTorch's
AOTInductor packages (aoti_runtime.py) each give their variants a session with the slice of
onnxruntime's InferenceSession API the tool uses (get_inputs, get_outputs, run, get_providers),
so validate, bench, predict and serve-bench run every runtime the same way and ask the variant,
never the runtime's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RuntimeVariant:
    name: str  # what every report calls it: openvino-f32, pt2-fp32, ...
    path: Path  # the file the runtime loads
    precision: str

    runtime = "?"  # the runtime's name in reports
    device = "cpu"  # where it runs: provider names (cpu, cuda)
    imports_torch = False  # predict says so: the light, torch-free path does not apply

    @property
    def file(self) -> str:
        return self.path.name

    def session(self, threads: int | None = None):
        raise NotImplementedError


@dataclass(frozen=True)
class TensorInfo:
    """An input or output as onnxruntime's sessions describe it: a name and a shape (None or a
    name where a dimension varies)."""

    name: str
    shape: list


class SessionLike:
    """What a runtime's session shares with onnxruntime's: its inputs and outputs, described
    (subclasses fill _inputs and _outputs, and give run and get_providers)."""

    _inputs: list[TensorInfo]
    _outputs: list[TensorInfo]

    def get_inputs(self) -> list[TensorInfo]:
        return self._inputs

    def get_outputs(self) -> list[TensorInfo]:
        return self._outputs


def runtime_variants(directory: Path, flags: set[str] | None = None) -> list[RuntimeVariant]:
    """Every non-onnxruntime variant an export directory holds (OpenVINO's bf16 only where the
    CPU has native bf16: `flags`, the CPU's, decides)."""
    from nlu_deploy.runtime.aoti_runtime import pt2_variants
    from nlu_deploy.runtime.openvino_runtime import openvino_variants

    return openvino_variants(directory, flags) + pt2_variants(directory)


def find_runtime_variant(directory: Path, name: str) -> RuntimeVariant | None:
    """A variant by name, also one this CPU would not run by default (openvino-bf16 without
    native bf16) when asked for by name."""
    from nlu_deploy.runtime.openvino_runtime import find_variant

    found = find_variant(directory, name)
    return found or next((v for v in runtime_variants(directory) if v.name == name), None)


def runtime_label(variant_name: str) -> str:
    """The runtime a variant name belongs to, for reports: onnxruntime for ONNX files."""
    if variant_name.startswith("openvino-"):
        return "OpenVINO"
    if variant_name.startswith("pt2-"):
        return "PyTorch AOTInductor"
    return "PyTorch" if variant_name.startswith("pytorch") else "onnxruntime"
