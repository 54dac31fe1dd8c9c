"""export --pt2: the checkpoint as a PyTorch AOTInductor package (see runtime/aoti_runtime.py).

torch.export traces the model with the batch and sequence dimensions left dynamic (Dim.DYNAMIC:
export works out each model's own limits, DeBERTa's relative positions among them), and
aoti_compile_and_package compiles it with Inductor: C++ kernels on CPU (this needs a C++
compiler, as torch.compile does), Triton kernels on CUDA. The package takes the same inputs and
gives the same outputs, by name, as model.onnx, so every stage treats it as one more variant.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from nlu_deploy.errors import ModelError
from nlu_deploy.runtime.aoti_runtime import PT2_FACTS, PT2_FILE

# what each device compiles at: fp32 on CPU (bf16 there is OpenVINO's and onnxruntime's job),
# bf16 on CUDA (the GPU measurements' fastest PyTorch setting)
PRECISIONS = {"cpu": "fp32", "cuda": "bf16"}


def check_pt2_device(device: str | None) -> None:
    """Refuse, before any training or export, a package for a device torch cannot use here."""
    if device == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ModelError(
            f"--pt2 cuda compiles the package on a CUDA GPU, and torch ({torch.__version__}, {build}) sees none "
            "here; use --pt2 cpu, or run this on the GPU machine."
        )


def onnx_signature(onnx_path: Path) -> tuple[list[str], list[str], list[int]]:
    """(input names, output names, output ranks) of the exported graph, which the package copies."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    outputs = [o.name for o in graph.output]
    ranks = [len(o.type.tensor_type.shape.dim) for o in graph.output]
    return inputs, outputs, ranks


def write_pt2(model, out: Path, onnx_path: Path, device: str = "cpu") -> dict:
    """Write model.pt2 and model.pt2.json into `out`; return facts for the manifest."""
    inputs, outputs, ranks = onnx_signature(onnx_path)
    precision = PRECISIONS[device]
    module = _ByName(model, outputs).eval().to(device)
    if precision != "fp32":
        module = module.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    example = {name: torch.ones(2, 8, dtype=torch.long, device=device) for name in inputs}
    dynamic = {name: {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for name in inputs}
    started = time.perf_counter()
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.export.export(module, (), example, dynamic_shapes=dynamic, strict=False)
            torch._inductor.aoti_compile_and_package(program, package_path=str(out / PT2_FILE))
    except Exception as exc:  # torch.export and Inductor raise many types; the first line says which step failed
        raise ModelError(
            f"PyTorch could not compile the model ahead of time ({str(exc).strip().splitlines()[0]})."
        ) from None
    facts = {
        "inputs": inputs, "outputs": outputs, "output_ranks": ranks, "device": device, "precision": precision,
        "torch": torch.__version__, "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    (out / PT2_FACTS).write_text(json.dumps(facts, indent=1), encoding="utf-8")
    return facts


class _ByName(torch.nn.Module):
    """The model with model.onnx's inputs by name (the package is called with them as keyword
    arguments) and its logits as a tuple in model.onnx's output order, in fp32 whatever it
    computes in."""

    def __init__(self, model, outputs: list[str]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        result = self.model(input_ids=input_ids, **{k: v for k, v in given.items() if v is not None})
        return tuple(result[name].float() for name in self.outputs)
