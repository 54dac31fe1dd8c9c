"""The GPU fast paths, as far as a CPU can check them (issue 33), and their CUDA checks
(pytest -m gpu, on a lent device):
- export --gpu-fp16 on the tiny BERT: the fp16 graph from the GPU-fused graph keeps one fused
  Attention per layer with a 1-D mask, the packed graph removes padding around PackedAttention,
  both keep int64 ids in and fp32 logits out; on CPU, validate and bench name them as CUDA-only;
- bench --cuda-graphs: refused without CUDA; a replay is gated by its file's validation;
- serve-bench --device gpu: the pipeline model's instances on the GPU; without a GPU, one sentence
  before any server starts."""

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


def test_cuda_graphs_need_the_cuda_provider(tiny_onnx):
    from click.testing import CliRunner

    from nlu_deploy.cli import main

    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), "--cuda-graphs"])
    assert result.exit_code != 0 and "--cuda-graphs captures CUDA graphs: it needs --provider cuda" in result.output


def test_a_cuda_graph_replay_is_gated_by_its_file_and_can_be_shipped():
    """A replay computes what its file computes: it passes or fails with the file's validation,
    and ships when it is the fastest that passes."""
    from nlu_deploy.evaluation.benchmark import BenchReport, Measurement
    from nlu_deploy.evaluation.recommendation import choose_shipped

    report = BenchReport("cuda", None, {"cpu": "recorded"})
    for variant, rate in {"optimized": 9000, "optimized+cuda-graph": 14000, "fp32+cuda-graph": 20000}.items():
        latency = 32_000 / rate
        report.measurements.append(
            Measurement(variant, 32, 32, 10, latency, latency, latency, latency, 0.0, rate, "cuda")
        )
    validation = {"variants": [
        {"variant": "optimized", "file": "model_optimized.onnx", "passed": True},
        {"variant": "fp32", "file": "model.onnx", "passed": False},
    ]}  # fmt: skip
    assert report.recommend(validation) == "optimized+cuda-graph"
    shipped = choose_shipped(report, validation)
    assert shipped["variant"] == "optimized+cuda-graph" and shipped["file"] == "model_optimized.onnx"
    assert shipped["failed_gate"] == ["fp32+cuda-graph"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_graph_replay_gives_the_plain_runs_outputs_and_is_timed(tiny_onnx):
    import numpy as np

    from nlu_deploy.evaluation.benchmark import _cuda_graph_runner, synthetic_batch
    from nlu_deploy.runtime.sessions import create_session

    plain = create_session(tiny_onnx / "model.onnx", "cuda")
    graphed = create_session(tiny_onnx / "model.onnx", "cuda", cuda_graph=True)
    batch = synthetic_batch(4, 16, 100, 0)
    replay = _cuda_graph_runner(graphed, plain)(batch)
    replay()
    feed = {i.name: batch[i.name] for i in plain.get_inputs()}
    np.testing.assert_allclose(replay().copy_outputs_to_cpu()[0], plain.run(None, feed)[0], atol=1e-4)
    report = bench(BenchConfig(onnx_dir=tiny_onnx, provider="cuda", batch_sizes=(1, 8), seq_lens=(16,),
                               min_iters=5, min_seconds=0, cuda_graphs=True))  # fmt: skip
    assert {"fp32+cuda-graph", "optimized+cuda-graph"} <= {m.variant for m in report.measurements}


def test_a_gpu_repository_for_the_python_backend_puts_the_pipeline_model_on_the_gpu(tmp_path, tiny_onnx):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from nlu_deploy.serving.repository import TritonOptions, export_triton_repository

    options = TritonOptions(device="gpu", onnx_backend="python")
    assert options.layout == "pipeline"
    served = export_triton_repository(tiny_onnx, tmp_path / "repo", options)
    assert served == "model_optimized.onnx"  # a float graph: onnxruntime's int8 kernels are CPU ones
    config = text_format.Parse((tmp_path / "repo" / "nlu" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "python" and config.parameters["device"].string_value == "gpu"
    assert [group.kind for group in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]


def test_serve_bench_on_the_gpu_without_one_says_so_before_any_server_starts(tmp_path, tiny_onnx, tiny_dev_csv):
    from click.testing import CliRunner

    from nlu_deploy.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the gpu-marked test serves on it")
    output = tmp_path / "served"
    result = CliRunner().invoke(
        main, ["serve-bench", str(tiny_onnx), "--data", str(tiny_dev_csv), "--output", str(output), "--device", "gpu"]
    )
    assert result.exit_code == 1 and "cuda was asked for" in result.output and "Traceback" not in result.output
    assert not output.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_serve_bench_on_the_gpu_checks_every_answer_against_predict_on_cuda(tmp_path, tiny_onnx, tiny_dev_csv):
    from click.testing import CliRunner

    from nlu_deploy.cli import main

    output = tmp_path / "served"
    result = CliRunner().invoke(
        main, ["serve-bench", str(tiny_onnx), "--data", str(tiny_dev_csv), "--output", str(output), "--device", "gpu",
               "--variant", "model.onnx", "--concurrency", "1,16", "--warmup", "0.5", "--duration", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [configuration] = json.loads((output / "serve-bench.json").read_text())["configurations"]
    for level in configuration["levels"]:
        assert level["answered"] > 0 and level["errors"] == level["wrong_answers"] == 0
