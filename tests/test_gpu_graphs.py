"""The GPU fast paths, as far as a CPU can check them (issue 33), and their CUDA checks
(pytest -m gpu, on a lent device):
- export --gpu-fp16 on the tiny BERT: the fp16 graph from the GPU-fused graph keeps one fused
  Attention per layer with a 1-D mask, the packed graph removes padding around PackedAttention,
  both take int32 ids and give fp32 logits; the fused graph before fp16 computes what model.onnx
  computes when fed int32 on CPU; on CPU, validate and bench name them as CUDA-only;
- bench --cuda-graphs: refused without CUDA; a replay is gated by its file's validation;
- the attention kernel each shape ran (onnxruntime's CUDA debug report, read in a child process):
  parsed, split by shape, shown in the bench report, and on CUDA recorded for every shape;
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
    # the mask enters the embedding, which gives each row's length to every Attention; the ids
    # are int32 from the graph's inputs on, without a cast
    assert embed.input[-1] == "attention_mask" and attention.input[3] == embed.output[1]
    assert {i.name: i.type.tensor_type.elem_type for i in model.graph.input} == dict.fromkeys(
        ("input_ids", "attention_mask", "token_type_ids"), onnx.TensorProto.INT32
    )
    assert not any(n.op_type == "Cast" and n.input[0] in {i.name for i in model.graph.input} for n in model.graph.node)
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


def test_the_fused_graph_with_int32_ids_computes_what_the_plain_graph_computes(tmp_path, gpu_graphs):
    """The fusions, the 1-D mask and the int32 inputs checked on CPU (onnxruntime's CPU provider
    runs the fp32 fused graph; only its fp16 form is CUDA-only), fed as every runtime here feeds a
    graph: int64 batches cast to what the graph declares."""
    import numpy as np
    from transformers import AutoConfig

    from nlu_deploy.export.gpu_graphs import _fused_graph
    from nlu_deploy.runtime.sessions import create_session, graph_feed

    config = AutoConfig.from_pretrained(gpu_graphs)
    fused = _fused_graph(gpu_graphs / "model.onnx", "bert", (config.num_attention_heads, config.hidden_size))
    fused.save_model_to_file(str(tmp_path / "fused_fp32.onnx"))
    plain, fused = create_session(gpu_graphs / "model.onnx"), create_session(tmp_path / "fused_fp32.onnx")
    rng = np.random.default_rng(0)
    lengths = [9, 4, 1]  # rows right-padded to the longest, as every runtime here pads
    batch = {
        "input_ids": rng.integers(5, config.vocab_size, size=(3, 9)),
        "attention_mask": np.array([[1] * n + [0] * (9 - n) for n in lengths]),
        "token_type_ids": np.zeros((3, 9), dtype=np.int64),
    }
    assert {i.type for i in fused.get_inputs()} == {"tensor(int32)"}
    expected = plain.run(None, graph_feed(plain.get_inputs(), batch))[0]
    got = fused.run(None, graph_feed(fused.get_inputs(), batch))[0]
    assert np.abs(got - expected).max() < 1e-4


def test_on_cpu_validate_and_bench_name_them_as_cuda_only(gpu_graphs, tiny_checkpoint, tiny_dev_csv):
    report = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=gpu_graphs, data=tiny_dev_csv))
    assert report.passed and {v.variant for v in report.variants} == {"fp32"}
    assert [entry.split(" (")[0] for entry in report.not_scored] == [FUSED_FP16, PACKED_FP16]
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


def test_onnxruntimes_kernel_report_is_counted_per_operator_and_kernel():
    """The lines onnxruntime's CUDA attention ops print (attention_kernel_options.cc: colour codes
    around `Operator=... Node=... DataType=... SdpaKernel=...`), its options line ignored."""
    from nlu_deploy.runtime.attention_kernels import kernel_counts

    printed = (
        "\x1b[36mAttentionKernelOptions: FLASH_ATTENTION=1 EFFICIENT_ATTENTION=1 MATH=1\x1b[0m\n"
        "\x1b[36mOperator=Attention Node=Attention_0 DataType=fp16 SdpaKernel=EFFICIENT_ATTENTION\x1b[0m\n"
        "\x1b[36mOperator=Attention Node=Attention_1 DataType=fp16 SdpaKernel=EFFICIENT_ATTENTION\x1b[0m\n"
        "\x1b[36mOperator=PackedAttention DataType=fp16 SdpaKernel=MATH\x1b[0m\n"
    )
    assert kernel_counts(printed) == {
        "Attention fp16: EFFICIENT_ATTENTION": 2, "PackedAttention fp16: MATH": 1,
    }  # fmt: skip


def test_the_probe_runs_every_shape_in_a_child_process_and_reads_its_output_per_shape(tiny_onnx):
    """The probe's plumbing, on CPU: the batches reach the child, each shape is run once after its
    marker, and the child's output comes back split by shape (the CPU provider prints no kernel
    lines, so every shape's counts are empty); a child that fails is one RuntimeError."""
    from nlu_deploy.evaluation.benchmark import synthetic_batch
    from nlu_deploy.runtime.attention_kernels import kernels_per_shape, probe_attention_kernels

    batches = {"1 x 8": synthetic_batch(1, 8, 100, 0), "4 x real (mean 11)": synthetic_batch(4, 11, 100, 0)}
    assert probe_attention_kernels(tiny_onnx / "model.onnx", batches, provider="cpu") == dict.fromkeys(batches, {})
    with pytest.raises(RuntimeError, match="the probe process exited 1"):
        probe_attention_kernels(tiny_onnx / "nlu_deploy.json", batches, provider="cpu")
    printed = (
        "### nlu-deploy probe shape: 1 x 8\nOperator=Attention DataType=fp16 SdpaKernel=FLASH_ATTENTION\n"
        "### nlu-deploy probe shape: 8 x 8\nOperator=Attention DataType=fp16 SdpaKernel=MATH\n"
    )
    assert kernels_per_shape(printed) == {
        "1 x 8": {"Attention fp16: FLASH_ATTENTION": 1}, "8 x 8": {"Attention fp16: MATH": 1},
    }  # fmt: skip


def test_the_bench_report_shows_the_kernel_of_each_shape():
    from nlu_deploy.evaluation.benchmark import BenchReport

    report = BenchReport("cuda", None, {"cpu": "recorded"})
    report.attention_kernels["fp16_fused"] = {
        "32 x 128": {"Attention fp16: EFFICIENT_ATTENTION": 6}, "1 x 16": {},
    }  # fmt: skip
    text = report.to_markdown()
    assert "| fp16_fused | 32 x 128 | Attention fp16: EFFICIENT_ATTENTION x6 |" in text
    assert "| fp16_fused | 1 x 16 | nothing printed |" in text
    assert report.to_json()["attention_kernels"]["fp16_fused"]["32 x 128"] == {"Attention fp16: EFFICIENT_ATTENTION": 6}


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_bench_records_the_attention_kernel_of_every_node_at_every_shape(gpu_graphs):
    report = bench(BenchConfig(onnx_dir=gpu_graphs, provider="cuda", batch_sizes=(1, 8), seq_lens=(16, 64),
                               min_iters=2, min_seconds=0, variants=("fp16_fused", "fp16_packed")))  # fmt: skip
    for variant in ("fp16_fused", "fp16_packed"):
        shapes = report.attention_kernels[variant]
        assert set(shapes) == {"1 x 16", "1 x 64", "8 x 16", "8 x 64"}
        assert all(sum(kernels.values()) == LAYERS for kernels in shapes.values()), shapes


def test_the_ensemble_for_int32_graphs_declares_int32_ids_from_tokenizer_to_model(tmp_path, gpu_graphs):
    """Triton checks types between an ensemble's steps: the tokenizer gives the ids in the type
    the served graph takes (WORD_IDS stays int64), and the model's config declares it."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from nlu_deploy.serving.repository import TritonOptions, export_triton_repository

    export_triton_repository(gpu_graphs, tmp_path / "repo", TritonOptions(device="gpu"), FUSED_FP16)

    def config(name):
        text = (tmp_path / "repo" / name / "config.pbtxt").read_text()
        return text_format.Parse(text, model_config_pb2.ModelConfig())

    int32 = model_config_pb2.DataType.TYPE_INT32
    assert {i.name: i.data_type for i in config("nlu_model").input} == dict.fromkeys(
        ("input_ids", "attention_mask", "token_type_ids"), int32
    )
    assert {o.name: o.data_type for o in config("nlu_tokenizer").output} == dict.fromkeys(
        ("input_ids", "attention_mask", "token_type_ids"), int32
    )


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
