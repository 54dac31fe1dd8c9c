"""Dynamic int8 quantization of an exported ONNX graph with onnxruntime's quantizer,
configured from Optimum's per-instruction-set presets."""

from __future__ import annotations

import contextlib
import io
import logging
import platform
from pathlib import Path

from nlu_deploy.errors import ModelError
from nlu_deploy.runtime.machine import cpu_flags


def machine_preset() -> str:
    """The Optimum quantization preset that matches this CPU's integer instructions."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def quantize_dynamic_int8(
    source: Path,
    target: Path,
    preset: str = "auto",
    per_channel: bool = False,
    nodes_to_exclude: list[str] | None = None,
    activation_matmuls: bool = False,
) -> dict:
    """Write `target`, an int8 (dynamic activation scales) copy of `source`; return the settings.

    We call onnxruntime's quantize_dynamic rather than Optimum's ORTQuantizer because the latter
    cannot pass `DefaultTensorType`, without which graphs fused by ORTOptimizer (O2 and up)
    fail with "Unable to find data type for weight_name": the fused Attention and
    SkipLayerNormalization outputs have no inferred type. The preset still comes from Optimum.
    `activation_matmuls` also quantizes MatMuls between two activations (attention scores and
    context), which onnxruntime leaves in fp32 by default.
    """
    import onnx
    from onnxruntime.quantization import quantize_dynamic
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    # onnxruntime logs a generic "consider pre-processing" hint on the root logger each time.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    preset = machine_preset() if preset == "auto" else preset
    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=per_channel)
    operators = [getattr(op, "value", op) for op in qconfig.operators_to_quantize]
    quantize_dynamic(
        model_input=Path(source),
        model_output=Path(target),
        op_types_to_quantize=operators,
        per_channel=qconfig.per_channel,
        reduce_range=qconfig.reduce_range,
        weight_type=qconfig.weights_dtype,
        nodes_to_exclude=sorted(set(qconfig.nodes_to_exclude or []) | set(nodes_to_exclude or [])) or None,
        extra_options={
            "WeightSymmetric": qconfig.weights_symmetric,
            "ActivationSymmetric": qconfig.activations_symmetric,
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            "MatMulConstBOnly": not activation_matmuls,
        },
    )
    return {
        "mode": "dynamic",
        "preset": preset,
        "per_channel": qconfig.per_channel,
        "activation_matmuls": activation_matmuls,
        "reduce_range": qconfig.reduce_range,
        "weights": qconfig.weights_dtype.name,
        "operators": operators,
        "source": Path(source).name,
        "nodes_excluded": sorted(nodes_to_exclude or []),
    }


# Ops kept in fp32 inside fp16 graphs: normalisations and softmax sum many terms or take
# exponentials, where fp16's 10-bit mantissa and 65504 ceiling lose accuracy or overflow.
FP16_KEEP_FP32_OPS = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Exp",
    "Erf",
)


def convert_fp16(source: Path, target: Path, keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32_OPS) -> dict:
    """An fp16 copy for CUDA / TensorRT, with the model's inputs and outputs unchanged
    (int64 ids in, fp32 logits out) and the numerically sensitive ops left in fp32.

    Start from the plain (unfused) graph: onnxruntime's converter leaves fused
    SkipLayerNormalization nodes with mixed fp16/fp32 inputs, which no runtime accepts; the GPU
    providers fuse the fp16 graph again when they load it."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, op_block_list=list(keep_fp32_ops))
    onnx.save(_repair_fp16_graph(model, keep_fp32_ops), str(target))
    return {"mode": "fp16", "kept_in_fp32_ops": list(keep_fp32_ops), "source": Path(source).name}


def _repair_fp16_graph(model, keep_fp32_ops: tuple[str, ...]):
    """Mend three flaws of onnxruntime 1.31's converter on BERT graphs: it inserts the same Cast
    twice when two kept-fp32 nodes read one tensor (an invalid graph), it hands kept-fp32 nodes
    fp16 initializers (a type error), and it appends Casts out of topological order (which
    onnx.checker rejects). Drop the duplicates, give those nodes fp32 copies, re-sort."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    seen, unique = set(), []
    for node in graph.node:
        signature = (node.op_type, tuple(node.input), tuple(node.output))
        if signature not in seen:
            seen.add(signature)
            unique.append(node)
    del graph.node[:]
    graph.node.extend(unique)
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type not in keep_fp32_ops:
            continue
        for position, name in enumerate(node.input):
            initializer = initializers.get(name)
            if initializer is None or initializer.data_type != onnx.TensorProto.FLOAT16:
                continue
            copy_name = f"{name}_fp32"
            if copy_name not in initializers:
                copy = numpy_helper.from_array(numpy_helper.to_array(initializer).astype(np.float32), copy_name)
                graph.initializer.append(copy)
                initializers[copy_name] = copy
            node.input[position] = copy_name
    _sort_topologically(graph)
    return model


def _sort_topologically(graph) -> None:
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError("the fp16 graph has a cycle or an undefined input")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


class TokenizedBatches:
    """Calibration input for onnxruntime: pre-tokenized batches, readable in ranges so that
    calibration runs chunk by chunk and memory stays bounded however large the set is."""

    def __init__(self, batches: list[dict]):
        self.batches = batches
        self._pending = iter(batches)

    def get_next(self):
        return next(self._pending, None)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.batches[start_index:end_index])


def quantize_static_int8(
    source: Path,
    target: Path,
    batches: list[dict],
    method: str = "minmax",
    preset: str = "auto",
    per_channel: bool = False,
    nodes_to_exclude: list[str] | None = None,
) -> dict:
    """int8 weights and activations, activation ranges calibrated on real inputs (QDQ format).

    Calibration runs one batch at a time (onnxruntime's CalibStridedMinMax with stride 1):
    statistics are merged as they come, so memory stays bounded however many samples are
    used, and batches of different lengths never have to be stacked."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = machine_preset() if preset == "auto" else preset
    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=True, per_channel=per_channel)
    operators = [getattr(op, "value", op) for op in qconfig.operators_to_quantize]
    # only the inputs the graph has: a tokenizer's token_type_ids are not inputs of every family's
    graph_inputs = {i.name for i in onnx.load(str(source), load_external_data=False).graph.input}
    reader = TokenizedBatches([{k: v for k, v in batch.items() if k in graph_inputs} for batch in batches])
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    with contextlib.redirect_stdout(io.StringIO()), _histogram_failures_explained(method):
        quantize_static(
            model_input=Path(source),
            model_output=Path(target),
            calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=operators,
            per_channel=qconfig.per_channel,
            reduce_range=qconfig.reduce_range,
            activation_type=qconfig.activations_dtype,
            weight_type=qconfig.weights_dtype,
            nodes_to_exclude=nodes_to_exclude or None,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[method],
            extra_options={
                "CalibStridedMinMax": 1,
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                "WeightSymmetric": qconfig.weights_symmetric,
                "ActivationSymmetric": qconfig.activations_symmetric,
            },
        )
    return {
        "mode": "static",
        "preset": preset,
        "method": method,
        "per_channel": qconfig.per_channel,
        "calibration_batches": len(batches),
        "operators": operators,
        "source": Path(source).name,
        "nodes_excluded": sorted(nodes_to_exclude or []),
    }


@contextlib.contextmanager
def _histogram_failures_explained(method: str):
    """onnxruntime's entropy and percentile calibrators build numpy histograms that fail on
    tensors whose float32 values are (almost) all equal; say so instead of a numpy message."""
    try:
        yield
    except ValueError as exc:
        if method == "minmax" or "bins" not in str(exc):
            raise
        raise ModelError(
            f"onnxruntime's {method} calibration failed on this model ({exc}); use --calibration-method minmax."
        ) from None


OPTIMUM_PEER = "model_optimum_peer.onnx"


def write_optimum_peer(onnx_dir: Path) -> str:
    """The plain Optimum recipe, as a peer for benchmarks: ORTQuantizer with the
    AutoQuantizationConfig.avx512_vnni dynamic preset, applied to the O2 graph when Optimum
    can quantize it, else to the fp32 graph. Returns a sentence saying which one it did.

    Optimum's ORTQuantizer cannot quantize O2 graphs of BERT (it offers no way to pass
    DefaultTensorType), which is exactly why quantize_dynamic_int8 above exists.
    """
    import shutil
    import tempfile

    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    onnx_dir = Path(onnx_dir)
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    note = "ORTQuantizer avx512_vnni dynamic on model_optimized.onnx (Optimum's O2 + int8 recipe)"
    with tempfile.TemporaryDirectory(dir=onnx_dir, prefix=".peer-") as scratch:
        try:
            ORTQuantizer.from_pretrained(onnx_dir, file_name="model_optimized.onnx").quantize(qconfig, scratch)
            produced = Path(scratch) / "model_optimized_quantized.onnx"
        except Exception as exc:  # the O2 failure is a RuntimeError from onnxruntime's quantizer
            first_line = str(exc).strip().splitlines()[0][:120]
            note = f"ORTQuantizer avx512_vnni dynamic on model.onnx: on the O2 graph Optimum fails ({first_line}...)"
            ORTQuantizer.from_pretrained(onnx_dir, file_name="model.onnx").quantize(qconfig, scratch)
            produced = Path(scratch) / "model_quantized.onnx"
        shutil.move(produced, onnx_dir / OPTIMUM_PEER)
    return note
