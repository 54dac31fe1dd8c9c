"""export --gpu-fp16 on the tiny BERT: the fp16 graph from the GPU-fused graph keeps one fused
Attention per layer with a 1-D mask, the packed graph removes padding around PackedAttention,
both keep int64 ids in and fp32 logits out; on CPU, validate and bench name them as CUDA-only
instead of failing on them. On a CUDA machine (pytest -m gpu) both keep PyTorch's scores."""

import json

import onnx
import pytest
import torch

from nlu_deploy.config import BenchConfig, ExportConfig, ValidateConfig
from nlu_deploy.evaluation.benchmark import bench
from nlu_deploy.evaluation.validate import validate
from nlu_deploy.export.gpu_graphs import FUSED_FP16, PACKED_FP16
from nlu_deploy.export.onnx_export import export

LAYERS = 2  # the tiny encoder's (conftest.build_tiny_encoder)


@pytest.fixture(scope="module")
def gpu_graphs(tmp_path_factory, tiny_checkpoint):
    output = tmp_path_factory.mktemp("gpu-graphs") / "onnx"
    export(ExportConfig(model_dir=tiny_checkpoint, output=output, gpu_fp16=True))
    return output


def _ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_the_fused_fp16_graph_keeps_fused_attention_with_a_1d_mask_and_fp32_io(gpu_graphs):
    model = onnx.load(str(gpu_graphs / FUSED_FP16))
    ops = _ops(gpu_graphs / FUSED_FP16)
    assert ops["Attention"] == LAYERS and ops["EmbedLayerNormalization"] == 1
    assert "Softmax" not in ops  # no unfused attention left
    embed = next(n for n in model.graph.node if n.op_type == "EmbedLayerNormalization")
    attention = next(n for n in model.graph.node if n.op_type == "Attention")
    # the mask enters the embedding (cast to int32), which gives each row's length to every Attention
    assert embed.input[-1].startswith("attention_mask") and attention.input[3] == embed.output[1]
    assert {i.name: i.type.tensor_type.elem_type for i in model.graph.input} == dict.fromkeys(
        ("input_ids", "attention_mask", "token_type_ids"), onnx.TensorProto.INT64
    )
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_the_packed_graph_removes_padding_around_packed_attention(gpu_graphs):
    ops = _ops(gpu_graphs / PACKED_FP16)
    assert ops["PackedAttention"] == LAYERS and "Attention" not in ops
    assert ops["RemovePadding"] == ops["RestorePadding"] == 1
    manifest = json.loads((gpu_graphs / "nlu_deploy.json").read_text())
    assert manifest["gpu_fp16"][PACKED_FP16]["fused_ops"]["PackedAttention"] == LAYERS
    assert {"fp16_fused", "fp16_packed"} <= set(manifest["files"])
    assert not {"fp16_fused", "fp16_packed"} & set(manifest["max_abs_logit_diff"])  # CUDA checks them


def test_on_cpu_validate_and_bench_name_them_as_cuda_only(gpu_graphs, tiny_checkpoint, tiny_dev_csv):
    report = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=gpu_graphs, data=tiny_dev_csv))
    assert report.passed and {v.variant for v in report.variants} == {"fp32"}
    assert report.not_scored == [FUSED_FP16, PACKED_FP16]
    assert "--provider cuda" in report.to_markdown()
    timed = bench(BenchConfig(onnx_dir=gpu_graphs, batch_sizes=(1,), seq_lens=(16,), min_iters=2, min_seconds=0))
    assert {m.variant for m in timed.measurements} == {"fp32"}
    assert any("only the CUDA provider runs" in note for note in timed.notes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_fused_and_packed_graphs_keep_pytorchs_scores(gpu_graphs, tiny_checkpoint, tiny_dev_csv):
    report = validate(
        ValidateConfig(
            model_dir=tiny_checkpoint, onnx_dir=gpu_graphs, data=tiny_dev_csv, provider="cuda", max_score_drop=0.3
        )
    )
    scored = {v.variant: v for v in report.variants}
    assert scored["fp16_fused"].passed and scored["fp16_packed"].passed
