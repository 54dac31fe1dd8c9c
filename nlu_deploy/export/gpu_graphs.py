"""export --gpu-fp16: fp16 graphs for CUDA that keep onnxruntime's fused attention, and one that
removes padding.

The plain fp16 file (--quantize fp16) is converted from the unfused graph, so on the GPU its
attention runs as MatMul + Softmax + MatMul with casts around them. onnxruntime's fused BERT
attention takes a faster path on recent GPUs only with a 1-D mask (each row's length) or none
(its TensorRT-derived fused kernels need 385 tokens or more on sm90; memory-efficient attention
takes no mask or a 1-D one; both per onnxruntime's attention kernel sources, as issue 33 read
them). So here, as Optimum's O4 does:

- model_fp16_fused.onnx: the transformer optimizer for the GPU (use_gpu) with the 1-D mask index
  (rows must be right-padded, as every runtime here pads), int32 ids (the fused embedding and
  attention read int32, so the casts from int64 go, and half the bytes cross to the GPU; every
  runtime here feeds the integer type a graph declares), then fp16 with fp32 inputs and outputs;
- model_fp16_packed.onnx: the same graph in packing mode (RemovePadding, PackedAttention,
  RestorePadding): the tokens of a batch are packed without their padding, which real intent
  texts, short and of mixed lengths, are mostly made of.

Both hold fp16 fused ops that only the CUDA provider implements: on CPU they are written and
their structure recorded, and `validate --provider cuda` is what checks them.
"""

from __future__ import annotations

from pathlib import Path

from nlu_deploy.runtime.model_families import family_of
from nlu_deploy.runtime.sessions import fused_op_counts

FUSED_FP16 = "model_fp16_fused.onnx"
PACKED_FP16 = "model_fp16_packed.onnx"


def write_gpu_fp16_graphs(out: Path, source: Path, config) -> tuple[dict[str, str], dict, dict[str, str]]:
    """(variant -> file written, facts per file, variant -> why not written); `config`: the model's."""
    family = family_of(config)
    shape = (config.num_attention_heads, config.hidden_size)  # GPT-2's graphs do not say them
    if family.optimizer is None:
        why = family.no_optimizer_why
        return {}, {}, {"fp16_fused": why, "fp16_packed": why}
    written, facts, skipped = {}, {}, {}
    fused = _fused_graph(source, family.optimizer, shape)
    fused.convert_float_to_float16(keep_io_types=True)
    fused.save_model_to_file(str(out / FUSED_FP16))
    written["fp16_fused"] = FUSED_FP16
    facts[FUSED_FP16] = {
        "fused_ops": fused_op_counts(out / FUSED_FP16), "mask": "1-D (each row's length)", "ids": "int32",
    }  # fmt: skip
    if "Attention" not in facts[FUSED_FP16]["fused_ops"]:
        skipped["fp16_packed"] = (
            f"onnxruntime fused no attention of {family.name}, and packing mode packs fused attention"
        )
        return written, facts, skipped
    from onnxruntime.transformers.convert_to_packing_mode import PackingMode

    packed = _fused_graph(source, family.optimizer, shape)
    PackingMode(packed).convert()
    packed.convert_float_to_float16(keep_io_types=True)
    packed.save_model_to_file(str(out / PACKED_FP16))
    written["fp16_packed"] = PACKED_FP16
    facts[PACKED_FP16] = {
        "fused_ops": fused_op_counts(out / PACKED_FP16), "padding": "removed inside the graph", "ids": "int32",
    }  # fmt: skip
    return written, facts, skipped


def _fused_graph(source: Path, model_type: str, shape: tuple[int, int]):
    """The transformer optimizer's GPU fusions with a 1-D mask index and int32 ids, in fp32
    (onnxruntime's OnnxModel; its CPU provider runs it, which is how the tests check it)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(model_type)
    options.use_raw_attention_mask(False)  # the 1-D mask index: rows are right-padded everywhere here
    # opt_level 0: the Python fusions only, since onnxruntime's own graph optimizations would be
    # made for the provider of this machine, not the GPU's
    heads, hidden = shape
    model = optimize_model(
        str(source), model_type=model_type, num_heads=heads, hidden_size=hidden, optimization_options=options,
        use_gpu=True, opt_level=0,
    )  # fmt: skip
    model.change_graph_inputs_to_int32()  # adds a Cast back to int64 only where an op needs it
    return model
