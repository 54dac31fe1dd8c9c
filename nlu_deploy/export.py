"""ONNX export through Optimum's exporter, a numerical check against PyTorch, and the
optional optimized (ORTOptimizer) and int8 variants written beside it."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import ExportConfig
from nlu_deploy.data import read_records
from nlu_deploy.errors import ModelError
from nlu_deploy.modeling import load_checkpoint, load_tokenizer, quiet_transformers
from nlu_deploy.quantize import quantize_dynamic_int8
from nlu_deploy.runtime import OnnxTextClassifier, TorchTextClassifier

# Used for the numerical check when the checkpoint carries no validation split of its own.
_CHECK_SENTENCES = [
    "wake me up at seven tomorrow", "what is the weather like in lisbon",
    "Transfer 40 euros to my savings account, please!", "play something relaxing",
    "a much longer sentence that goes on for a while so that the check also covers inputs "
    "of a few dozen tokens rather than only short commands",
]


@dataclass
class ExportResult:
    output: Path
    files: dict[str, str]  # variant name -> file name
    max_abs_logit_diff: dict[str, float] = field(default_factory=dict)
    quantization: dict | None = None


def _check_texts(model_dir: Path, limit: int = 64) -> list[str]:
    split = model_dir / artifacts.VALIDATION_SPLIT
    if split.exists():
        texts = [str(next(iter(record.values()))) for record in read_records(split)[:limit]]
        if texts:
            return texts + _CHECK_SENTENCES
    return _CHECK_SENTENCES


def max_logit_difference(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.abs(reference - candidate).max())


def export(config: ExportConfig) -> ExportResult:
    from optimum.exporters.onnx import main_export

    model_dir = Path(config.model_dir)
    model = load_checkpoint(model_dir)  # refuses non-checkpoints before any work starts
    tokenizer = load_tokenizer(str(model_dir))
    quiet_transformers()
    with artifacts.staged_output(config.output, config.overwrite) as out:
        try:
            with warnings.catch_warnings():  # tracer notes about constants are expected for BERT
                warnings.simplefilter("ignore")
                main_export(str(model_dir), out, task="text-classification", opset=config.opset,
                            do_validation=False, trust_remote_code=False, local_files_only=True)
        except Exception as exc:  # the exporter wraps torch.onnx failures in many types
            raise ModelError(f"Optimum could not export {model_dir} ({str(exc).strip().splitlines()[0]}).") from None

        # Optimum's own validation only warns on a mismatch; a deployment tool must refuse.
        texts = _check_texts(model_dir)
        reference = TorchTextClassifier(model, tokenizer, tokenizer.model_max_length).logits(texts)
        result = ExportResult(config.output, {"fp32": artifacts.ONNX_FP32})

        def check(name: str, file_name: str) -> float:
            onnx_model = OnnxTextClassifier(out / file_name, tokenizer, model.config.id2label,
                                            tokenizer.model_max_length)
            diff = max_logit_difference(reference, onnx_model.logits(texts))
            result.max_abs_logit_diff[name] = diff
            return diff

        if check("fp32", artifacts.ONNX_FP32) > config.atol:
            raise ModelError(
                f"the ONNX export differs from PyTorch by {result.max_abs_logit_diff['fp32']:.2e} "
                f"in the logits (allowed {config.atol:.0e}); the export is not trustworthy."
            )
        quantize_source = artifacts.ONNX_FP32
        if config.optimize:
            optimize_graph(out, config.optimize)
            result.files["optimized"] = quantize_source = artifacts.ONNX_OPTIMIZED
            check("optimized", artifacts.ONNX_OPTIMIZED)
        if config.quantize == "dynamic":
            result.quantization = quantize_dynamic_int8(out / quantize_source, out / artifacts.ONNX_QUANTIZED,
                                                        config.quantize_preset, config.per_channel)
            result.files["quantized"] = artifacts.ONNX_QUANTIZED
            check("quantized", artifacts.ONNX_QUANTIZED)
        artifacts.write_manifest(out, "export", asdict(config), parent=model_dir,
                                 files=result.files, max_abs_logit_diff=result.max_abs_logit_diff,
                                 quantization=result.quantization)
    return result


def optimize_graph(directory: Path, level: str) -> Path:
    """Write model_optimized.onnx: ORTOptimizer's fusions (O2: attention, LayerNorm, GELU)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    # O4 adds fp16 conversion, which Optimum only offers for GPU deployment.
    optimization = AutoOptimizationConfig.with_optimization_level(level, for_gpu=level == "O4")
    scratch = directory / ".optimize"
    try:
        ORTOptimizer.from_pretrained(directory, file_names=[artifacts.ONNX_FP32]).optimize(
            optimization, save_dir=scratch, file_suffix="optimized")
    except Exception as exc:
        raise ModelError(f"onnxruntime's optimizer failed at level {level} ({str(exc).strip().splitlines()[0]}).") from None
    target = directory / artifacts.ONNX_OPTIMIZED
    shutil.move(scratch / artifacts.ONNX_OPTIMIZED, target)
    shutil.move(scratch / "ort_config.json", directory / "ort_config.json")
    shutil.rmtree(scratch)
    return target
