"""Dynamic int8 quantization of an exported ONNX graph with onnxruntime's quantizer,
configured from Optimum's per-instruction-set presets."""

from __future__ import annotations

import logging
import platform
from pathlib import Path


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


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


def quantize_dynamic_int8(source: Path, target: Path, preset: str = "auto", per_channel: bool = False) -> dict:
    """Write `target`, an int8 (dynamic activation scales) copy of `source`; return the settings.

    We call onnxruntime's quantize_dynamic rather than Optimum's ORTQuantizer because the latter
    cannot pass `DefaultTensorType`, without which graphs fused by ORTOptimizer (O2 and up)
    fail with "Unable to find data type for weight_name": the fused Attention and
    SkipLayerNormalization outputs have no inferred type. The preset still comes from Optimum.
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
        nodes_to_exclude=qconfig.nodes_to_exclude or None,
        extra_options={
            "WeightSymmetric": qconfig.weights_symmetric,
            "ActivationSymmetric": qconfig.activations_symmetric,
            "DefaultTensorType": onnx.TensorProto.FLOAT,
        },
    )
    return {"mode": "dynamic", "preset": preset, "per_channel": qconfig.per_channel,
            "reduce_range": qconfig.reduce_range, "weights": qconfig.weights_dtype.name,
            "operators": operators, "source": Path(source).name}
