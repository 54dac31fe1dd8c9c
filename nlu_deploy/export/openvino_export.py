"""export --openvino: the OpenVINO IR files beside the ONNX ones (see runtime/openvino_runtime.py).

The fp32 IR is OpenVINO's own conversion of model.onnx (weights kept in fp32: the precision a
variant runs in is a compile-time hint, not baked into the file). The int8 IR is NNCF's
post-training quantization of that IR with the transformer preset (it keeps the attention's
softmax and the layer norms in float), calibrated on the same tokenized training texts as
onnxruntime's static int8.
"""

from __future__ import annotations

import time
from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.runtime.openvino_runtime import OPENVINO_FP32_IR, OPENVINO_INT8_IR, bf16_features, require_openvino


def write_openvino_files(out: Path, calibration: list[dict]) -> dict:
    """Write openvino_model.xml/.bin and openvino_model_int8.xml/.bin into `out`; return facts
    for the manifest (versions, calibration size, the CPU features that allow bf16 here)."""
    require_openvino("export --openvino")
    import nncf
    import openvino as ov

    started = time.perf_counter()
    model = ov.convert_model(str(out / artifacts.ONNX_FP32))
    ov.save_model(model, str(out / OPENVINO_FP32_IR), compress_to_fp16=False)
    input_names = [port.get_any_name() for port in model.inputs]
    dataset = nncf.Dataset(calibration, lambda batch: {name: batch[name] for name in input_names})
    facts = {"openvino": ov.get_version(), "nncf": nncf.__version__, "calibration_batches": len(calibration)}
    try:
        quantized = nncf.quantize(
            model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration)
        )  # subset_size counts dataset items, here whole batches: every calibration batch is used
    except Exception as exc:  # NNCF cannot build its graph of some families (DeBERTa-v3's slices)
        facts["int8_skipped"] = f"NNCF could not quantize this model ({str(exc).strip().splitlines()[-1]})"
    else:
        ov.save_model(quantized, str(out / OPENVINO_INT8_IR), compress_to_fp16=False)
    return {**facts, "bf16_features_here": bf16_features(), "seconds": round(time.perf_counter() - started, 1)}
