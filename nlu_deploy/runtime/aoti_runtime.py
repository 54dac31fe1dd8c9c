"""PyTorch as a deployment runtime: an AOTInductor package (`model.pt2`), the model traced by
torch.export and compiled ahead of time by Inductor into a shared library plus its weights.
It runs without Python-level PyTorch modules or transformers, but it does need torch (its
runtime loads the package): predict from it imports torch, and says so.

`export --pt2` writes the package and `model.pt2.json` beside it (input and output names, the
device and precision it was compiled for). Its variant is `pt2-fp32` on CPU; a package compiled
for CUDA is `pt2-bf16` (or `pt2-fp16`) and runs only there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlu_deploy.errors import ModelError
from nlu_deploy.runtime.runtime_variants import RuntimeVariant, SessionLike, TensorInfo

PT2_FILE = "model.pt2"
PT2_FACTS = "model.pt2.json"


@dataclass(frozen=True)
class Pt2Variant(RuntimeVariant):
    """pt2-fp32 (CPU), pt2-bf16 / pt2-fp16 (CUDA): the package and the precision it was compiled at."""

    device: str = "cpu"

    runtime = "PyTorch AOTInductor"
    imports_torch = True

    def session(self, threads: int | None = None) -> Pt2Session:
        return Pt2Session(self, threads)


MODEL_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}  # what this tool feeds a package


def read_facts(directory: Path) -> dict:
    """model.pt2.json: what export recorded about the package; {} when it is missing or is not a
    description of a package this tool can feed (not an object, no inputs, other inputs, no
    outputs), so every stage treats such a package as absent and says why (pt2_problem)."""
    return {} if pt2_problem(directory) else json.loads((Path(directory) / PT2_FACTS).read_text(encoding="utf-8"))


def pt2_problem(directory: Path) -> str | None:
    """Why the package in `directory` cannot be run, in words, or None."""
    path = Path(directory) / PT2_FACTS
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        return f"it has no readable {PT2_FACTS} describing it"
    except ValueError:
        return f"its {PT2_FACTS} is not valid JSON"
    if not isinstance(facts, dict):
        return f"its {PT2_FACTS} is not a JSON object"
    inputs, outputs = facts.get("inputs"), facts.get("outputs")
    if not isinstance(inputs, list) or not inputs or not set(map(str, inputs)) <= MODEL_INPUTS:
        return f"its {PT2_FACTS} names inputs this tool does not give ({inputs!r}; it gives {sorted(MODEL_INPUTS)})"
    ranks = facts.get("output_ranks")
    if not isinstance(outputs, list) or not outputs or not isinstance(ranks, list) or len(ranks) != len(outputs):
        return f"its {PT2_FACTS} does not list the outputs and their ranks"
    return None


def pt2_variants(directory: Path) -> list[Pt2Variant]:
    """The export's AOTInductor variant, if it has one."""
    directory = Path(directory)
    facts = read_facts(directory)
    if not (directory / PT2_FILE).is_file() or not facts:
        return []
    precision = facts.get("precision", "fp32")
    return [Pt2Variant(f"pt2-{precision}", directory / PT2_FILE, precision, facts.get("device", "cpu"))]


class Pt2Session(SessionLike):
    """An AOTInductor package behind the slice of onnxruntime's session API this tool uses."""

    def __init__(self, variant: Pt2Variant, threads: int | None = None):
        import torch

        facts = read_facts(variant.path.parent)
        if not variant.path.is_file() or not facts:
            why = pt2_problem(variant.path.parent) or "it is missing"
            raise ModelError(f"{variant.path} cannot be run: {why}.")
        if variant.device == "cuda" and not torch.cuda.is_available():
            raise ModelError(f"{variant.path} was compiled for CUDA, and PyTorch finds no CUDA device here.")
        if threads:
            torch.set_num_threads(int(threads))
        try:
            self.model = torch._inductor.aoti_load_package(str(variant.path))
        except Exception as exc:  # a damaged zip, a library built for another torch or CPU
            raise ModelError(f"PyTorch cannot load {variant.path} ({str(exc).strip().splitlines()[0]}).") from None
        self.variant, self.device = variant, torch.device(variant.device)
        self._inputs = [TensorInfo(name, ["batch_size", "sequence_length"]) for name in facts["inputs"]]
        self._outputs = [TensorInfo(name, [None] * rank) for name, rank in zip(facts["outputs"], facts["output_ranks"])]

    def get_providers(self) -> list[str]:
        return [f"PyTorch AOTInductor {self.device.type} ({self.variant.precision})"]

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            inputs = {
                t.name: torch.from_numpy(np.ascontiguousarray(feed[t.name])).to(self.device) for t in self._inputs
            }
            results = self.model(**inputs)
        by_name = {t.name: value.float().cpu().numpy() for t, value in zip(self._outputs, results)}
        return [by_name[name] for name in (output_names or [o.name for o in self._outputs])]
