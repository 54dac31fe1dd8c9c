"""ONNX export through Optimum's exporter, a numerical check against PyTorch, and the
optional optimized (ORTOptimizer) and int8 variants written beside it."""

from __future__ import annotations

import random
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import ExportConfig
from nlu_deploy.data.tables import read_records
from nlu_deploy.errors import DataError, ModelError, out_of_space
from nlu_deploy.evaluation.validate import default_columns, max_abs_difference
from nlu_deploy.export.gpu_graphs import write_gpu_fp16_graphs
from nlu_deploy.export.openvino_export import write_openvino_files
from nlu_deploy.export.quantize import convert_fp16, quantize_dynamic_int8, quantize_static_int8
from nlu_deploy.export.quantize_search import QuantizationReport, Search, search_int8, write_report
from nlu_deploy.runtime.model_families import family_of
from nlu_deploy.runtime.modeling import check_finite_weights, check_vocabulary_fits, load_tokenizer, quiet_transformers
from nlu_deploy.runtime.openvino_runtime import openvino_variants, require_openvino
from nlu_deploy.runtime.runtime_variants import RuntimeVariant
from nlu_deploy.runtime.sessions import cuda_only_graph, encode, fused_op_counts, pad_batch
from nlu_deploy.tasks import Task, onnx_backend, task_of, torch_backend

# Used for the numerical check when the checkpoint carries no validation split of its own.
_CHECK_SENTENCES = [
    "wake me up at seven tomorrow",
    "what is the weather like in lisbon",
    "Transfer 40 euros to my savings account, please!",
    "play something relaxing",
    "a much longer sentence that goes on for a while so that the check also covers inputs "
    "of a few dozen tokens rather than only short commands",
]


@dataclass
class ExportResult:
    output: Path
    files: dict[str, str]  # variant name -> file name
    max_abs_logit_diff: dict[str, float] = field(default_factory=dict)
    quantization: dict | None = None
    search: QuantizationReport | None = None  # --quantize auto only
    # variants asked for that this model's family cannot have, and why (in the manifest too)
    skipped: dict[str, str] = field(default_factory=dict)
    fused_ops: dict[str, int] = field(default_factory=dict)  # the optimized graph's fused nodes by type


def _check_texts(model_dir: Path, limit: int = 64) -> list[str]:
    split = model_dir / artifacts.VALIDATION_SPLIT
    text_column = default_columns(model_dir)[0]
    if split.exists():
        texts = [_as_text(record[text_column]) for record in read_records(split)[:limit] if text_column in record]
        if texts:
            return texts + _CHECK_SENTENCES
    return _CHECK_SENTENCES


def _as_text(value) -> str:
    """A text column, or a tagged sentence's word list joined by spaces."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _outputs_for_check(task: Task, model, path: Path | None, tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """Every output's scored rows for the check texts (one per text, or per word), from the
    PyTorch model or, given `path`, an ONNX file."""
    max_length = tokenizer.model_max_length
    backend = (
        torch_backend(model, tokenizer, max_length)
        if path is None
        else onnx_backend(path, tokenizer, model.config, max_length)
    )
    return task.infer(backend, task.examples_from_texts(texts)).outputs


def max_logit_difference(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    """The largest |difference| over every output (words never seen by the model excluded)."""
    return max(max_abs_difference(reference[name], candidate[name]) for name in reference)


def export(config: ExportConfig) -> ExportResult:
    if config.pt2:
        from nlu_deploy.export.aoti_export import check_pt2_device

        check_pt2_device(config.pt2)
    model_dir = Path(config.model_dir)
    task = task_of(model_dir)
    model = task.load_model(model_dir)  # refuses non-checkpoints before any work starts
    check_finite_weights(model, model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    check_vocabulary_fits(tokenizer, model.config, model_dir)
    quiet_transformers()
    heldout = _heldout_data(config, model_dir, task) if config.quantize == "auto" else None
    if config.openvino:  # said before minutes of export, not after
        require_openvino("export --openvino")
    calibrated = config.quantize in ("static", "auto") or config.openvino
    calibration = _calibration_batches(config, model_dir, tokenizer) if calibrated else None
    with artifacts.staged_output(config.output, config.overwrite) as out:
        _export_graph(task, model_dir, model, tokenizer, out, config.opset)
        result = ExportResult(config.output, {"fp32": artifacts.ONNX_FP32})
        # Optimum's own validation only warns on a mismatch; a deployment tool must refuse.
        parity = ParityCheck(task, model, tokenizer, out, result, _check_texts(model_dir))
        if parity.check("fp32", artifacts.ONNX_FP32) > config.atol:
            raise ModelError(
                f"the ONNX export differs from PyTorch by {result.max_abs_logit_diff['fp32']:.2e} "
                f"in the logits (allowed {config.atol:.0e}); the export is not trustworthy."
            )
        graphs = {"plain": out / artifacts.ONNX_FP32}
        family = family_of(model.config)
        if config.optimize and family.optimizer is None:
            result.skipped["optimized"] = f"{family.no_optimizer_why}: the plain graph is served"
        elif config.optimize:
            graphs["optimized"] = optimize_graph(out, config.optimize)
            result.files["optimized"] = artifacts.ONNX_OPTIMIZED
            result.fused_ops = fused_op_counts(graphs["optimized"])
            parity.check("optimized", artifacts.ONNX_OPTIMIZED)
        if config.gpu_fp16:  # CUDA-only files: written and described here, checked by validate --provider cuda
            written, gpu_facts, skipped = write_gpu_fp16_graphs(out, out / artifacts.ONNX_FP32, model.config)
            result.files.update(written)
            result.skipped.update(skipped)
            for name, file_name in written.items():  # what the CPU provider can run is checked here too
                if not cuda_only_graph(out / file_name):
                    parity.check(name, file_name)
        if config.openvino:  # before the search, whose candidates include the OpenVINO variants
            openvino_facts = _openvino_variants(out, calibration, parity)
        if config.pt2:
            pt2_facts = _pt2_variant(model, out, parity, config.pt2)
        _quantize(config, out, graphs, parity, heldout, calibration)
        if (out / artifacts.ONNX_QUANTIZED).exists():
            result.files["int8"] = artifacts.ONNX_QUANTIZED
            parity.check("int8", artifacts.ONNX_QUANTIZED)
        artifacts.write_manifest(
            out,
            "export",
            asdict(config),
            parent=model_dir,
            files=result.files,
            max_abs_logit_diff=result.max_abs_logit_diff,
            quantization=result.quantization,
            task=task.name,
            family=family.name,
            fused_ops=result.fused_ops,
            skipped=result.skipped,
            **({"openvino": openvino_facts} if config.openvino else {}),
            **({"pt2": pt2_facts} if config.pt2 else {}),
            **({"gpu_fp16": gpu_facts} if config.gpu_fp16 else {}),
        )
    return result


def _openvino_variants(out: Path, calibration, parity: ParityCheck) -> dict:
    """The OpenVINO files, each checked against PyTorch. A model OpenVINO's CPU plug-in cannot
    run (DeBERTa-v3's graph has an If of dynamic rank) loses its OpenVINO files, and the result
    says why."""
    facts = write_openvino_files(out, calibration)
    result = parity.result
    if "int8_skipped" in facts:
        result.skipped["openvino-int8"] = facts["int8_skipped"]
    variants = openvino_variants(out)
    try:
        for variant in variants:
            result.files.setdefault(variant.name, variant.file)
            parity.check(variant.name, variant)
    except ModelError as exc:
        for variant in variants:
            result.files.pop(variant.name, None)
            result.max_abs_logit_diff.pop(variant.name, None)
            result.skipped[variant.name] = str(exc).rstrip(".").replace(str(out) + "/", "")
        for path in out.glob("openvino_model*"):
            path.unlink()
        facts["skipped"] = True
    return facts


def _pt2_variant(model, out: Path, parity: ParityCheck, device: str) -> dict:
    """The AOTInductor package, checked against PyTorch like every file (CUDA packages only on a
    machine where they can run: compiling for CUDA needs the device)."""
    from nlu_deploy.export.aoti_export import write_pt2
    from nlu_deploy.runtime.aoti_runtime import pt2_variants

    facts = write_pt2(model, out, out / artifacts.ONNX_FP32, device)
    for variant in pt2_variants(out):
        parity.result.files[variant.name] = variant.file
        parity.check(variant.name, variant)
    return facts


def _export_graph(task: Task, model_dir: Path, model, tokenizer, out: Path, opset: int | None) -> None:
    try:
        with warnings.catch_warnings():  # tracer notes about constants are expected for BERT
            warnings.simplefilter("ignore")
            task.export_onnx(model_dir, model, tokenizer, out, opset)
    except Exception as exc:  # the exporter wraps torch.onnx failures in many types
        if out_of_space(exc):
            raise  # the CLI's sentence about the disk, not an exporter failure
        raise ModelError(f"Optimum could not export {model_dir} ({str(exc).strip().splitlines()[0]}).") from None
    _drop_remote_code(model_dir, out)


def _drop_remote_code(model_dir: Path, out: Path) -> None:
    """The graph is traced from transformers' own classes for the config's model_type, never from
    the Python files a config's auto_map names: say so once, and leave auto_map out of the
    exported config.json, so that nothing downstream (Optimum, transformers) goes looking for
    code that the export does not hold and did not run."""
    config = artifacts.read_model_config(out, missing_ok=True)
    if "auto_map" not in config:
        return
    print(
        f"note: {model_dir}'s config.json names code of its own (auto_map); the export uses transformers' "
        f"{config.get('model_type')!r} classes and ignores that code, and its config.json leaves auto_map out.",
        file=sys.stderr,
    )
    del config["auto_map"]
    artifacts.write_json(out / artifacts.MODEL_CONFIG, config)


class ParityCheck:
    """Every written file against PyTorch on the same check texts; the largest logit difference
    of each goes into the result (and the manifest)."""

    def __init__(self, task: Task, model, tokenizer, out: Path, result: ExportResult, texts: list[str]):
        self.task, self.model, self.tokenizer, self.out, self.result, self.texts = (
            task, model, tokenizer, out, result, texts
        )  # fmt: skip
        self.reference = _outputs_for_check(task, model, None, tokenizer, texts)

    def check(self, name: str, target: str | RuntimeVariant) -> float:
        """target: a file of the output, or another runtime's variant (its file and precision)."""
        path = target if isinstance(target, RuntimeVariant) else self.out / target
        outputs = _outputs_for_check(self.task, self.model, path, self.tokenizer, self.texts)
        difference = max_logit_difference(self.reference, outputs)
        self.result.max_abs_logit_diff[name] = difference
        return difference


def _quantize(config: ExportConfig, out: Path, graphs: dict[str, Path], parity: ParityCheck, heldout, calibration):
    """The --quantize file: int8 (dynamic, static, or the accuracy-budgeted search) or fp16."""
    result, quantized = parity.result, out / artifacts.ONNX_QUANTIZED
    best_graph = graphs.get("optimized", graphs["plain"])
    per_channel = bool(config.per_channel)
    if config.quantize == "dynamic":
        result.quantization = quantize_dynamic_int8(best_graph, quantized, config.quantize_preset, per_channel)
    elif config.quantize == "static":
        # QDQ static quantization cannot wrap the optimizer's fused ops: it starts from the plain graph.
        result.quantization = quantize_static_int8(
            graphs["plain"], quantized, calibration, config.calibration_method, config.quantize_preset, per_channel
        )
    elif config.quantize == "fp16":
        result.quantization = convert_fp16(graphs["plain"], out / artifacts.ONNX_FP16)
        result.files["fp16"] = artifacts.ONNX_FP16
        parity.check("fp16", artifacts.ONNX_FP16)
    elif config.quantize == "auto":
        if "optimized" not in graphs and family_of(parity.model.config).optimizer is not None:
            # the search also tries the O2 graph; it is not kept as a file
            graphs["optimized"] = optimize_graph(out, "O2", out / ".search" / "model_o2.onnx")
        search = Search(
            out / ".search" / "candidates", parity.task, parity.model, parity.tokenizer, heldout, calibration,
            config.max_score_drop, config.quantize_preset, config.calibration_method, config.search_minutes,
        )  # fmt: skip
        openvino = openvino_variants(out) if config.openvino else []
        report = search_int8(search, graphs, quantized, config.per_channel, openvino)
        shutil.rmtree(out / ".search", ignore_errors=True)
        write_report(report, out)
        result.search = report
        kept = next((c for c in report.candidates if c.kept), None)
        result.quantization = {"mode": "auto", "kept": asdict(kept) if kept else None, "reason": report.reason}
        if kept is not None:  # what predict and export --triton use by default (run replaces it with its choice)
            variant = kept.name if kept.runtime == "openvino" else "int8"
            artifacts.write_json(out / artifacts.RECOMMENDATION, {
                "variant": variant, "file": kept.graph if kept.runtime == "openvino" else artifacts.ONNX_QUANTIZED,
                "runtime": kept.runtime, "lengths": "fixed", "chosen_by": "nlu-deploy export --quantize auto",
                "why": report.reason,
            })  # fmt: skip


def _heldout_data(config: ExportConfig, model_dir: Path, task: Task):
    """Held-out data for the search; labels the model never had are scored as errors."""
    path = config.validation or model_dir / artifacts.VALIDATION_SPLIT
    if not path.exists():
        raise DataError(f"--quantize auto needs held-out data: pass --validation ({path} does not exist).")
    return task.read(path, default_columns(model_dir, task))


def _calibration_batches(config: ExportConfig, model_dir: Path, tokenizer, batch_size: int = 8) -> list[dict]:
    """Tokenized batches of real inputs: --calibration, else the sample finetune recorded."""
    path = config.calibration or model_dir / artifacts.CALIBRATION_SAMPLE
    if not path.exists():
        raise DataError(f"static quantization needs calibration texts: pass --calibration ({path} does not exist).")
    text_column = default_columns(model_dir)[0]
    records = read_records(path)
    if text_column not in records[0]:
        raise DataError(f"{path} has no column {text_column!r} (columns: {', '.join(records[0])}).")
    texts = [_as_text(r[text_column]) for r in records]
    texts = random.Random(0).sample(texts, min(config.calibration_samples, len(texts)))
    encoded = encode(tokenizer, texts, tokenizer.model_max_length)
    # Batches of texts with the same token count need no padding: padded positions would feed
    # the additive attention mask's huge negative values into the activation statistics.
    by_length: dict[int, list[dict]] = {}
    for features in encoded.features:
        by_length.setdefault(len(features["input_ids"]), []).append(features)
    return [
        pad_batch(group[start : start + batch_size], tokenizer.pad_token_id or 0)
        for _, group in sorted(by_length.items())
        for start in range(0, len(group), batch_size)
    ]


def optimize_graph(directory: Path, level: str, target: Path | None = None) -> Path:
    """Write model_optimized.onnx (or `target`): ORTOptimizer's fusions (O2: attention, LayerNorm, GELU)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    # O4 adds fp16 conversion, which Optimum only offers for GPU deployment.
    optimization = AutoOptimizationConfig.with_optimization_level(level, for_gpu=level == "O4")
    scratch = directory / ".optimize"
    try:
        ORTOptimizer.from_pretrained(directory, file_names=[artifacts.ONNX_FP32]).optimize(
            optimization, save_dir=scratch, file_suffix="optimized"
        )
    except Exception as exc:
        raise ModelError(
            f"onnxruntime's optimizer failed at level {level} ({str(exc).strip().splitlines()[0]})."
        ) from None
    target = target or directory / artifacts.ONNX_OPTIMIZED
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(scratch / artifacts.ONNX_OPTIMIZED, target)
    if target.parent == directory:
        shutil.move(scratch / "ort_config.json", directory / "ort_config.json")
    shutil.rmtree(scratch)
    return target
