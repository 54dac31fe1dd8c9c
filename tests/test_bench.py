import json
import time

import numpy as np
import pytest

from nlu_deploy.config import BenchConfig
from nlu_deploy.errors import ConfigError, ProviderError
from nlu_deploy.evaluation.benchmark import PYTORCH, BenchReport, Measurement, bench, latency_stats, time_calls
from nlu_deploy.evaluation.plots import plot_benchmark
from nlu_deploy.runtime.openvino_runtime import bf16_features
from nlu_deploy.runtime.sessions import TensorRTSettings, provider_options


def test_percentiles_and_throughput_follow_the_definitions():
    stats = latency_stats(np.arange(1, 101, dtype=float), batch_size=8)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert stats["sequences_per_second"] == pytest.approx(8 * 1000 / 50.5)
    assert stats["std_ms"] == pytest.approx(np.arange(1, 101).std())


def test_timing_meets_both_the_count_and_the_duration():
    calls = []
    latencies = time_calls(lambda: calls.append(1), warmup_iters=2, min_iters=5, min_seconds=0.0)
    assert len(latencies) == 5 and len(calls) == 7

    started = time.perf_counter()
    latencies = time_calls(lambda: time.sleep(0.002), warmup_iters=0, min_iters=2, min_seconds=0.05)
    assert time.perf_counter() - started >= 0.05 and len(latencies) > 2
    assert all(latency >= 2.0 for latency in latencies)


def test_report_has_every_variant_and_shape_with_pytorch_as_baseline(tiny_onnx, tiny_checkpoint, tmp_path):
    config = BenchConfig(
        onnx_dir=tiny_onnx,
        model_dir=tiny_checkpoint,
        batch_sizes=(1, 4),
        seq_lens=(8, 16),
        warmup_iters=1,
        min_iters=3,
        min_seconds=0.0,
    )
    report = bench(config)
    # on a CPU with native bf16 the baseline includes PyTorch under CPU bf16 autocast
    cpu_bf16 = ["pytorch-bf16"] if bf16_features() else []
    assert report.variants() == [PYTORCH, *cpu_bf16, "fp32", "optimized", "int8"]
    assert len(report.measurements) == len(report.variants()) * 2 * 2
    for m in report.measurements:
        assert m.iterations >= 3 and m.p50_ms <= m.p90_ms <= m.p99_ms
        assert m.speedup_vs_pytorch == pytest.approx(1.0) if m.variant == PYTORCH else m.speedup_vs_pytorch > 0
        providers = {PYTORCH: "torch-cpu", "pytorch-bf16": "torch-cpu-autocast-bf16"}
        assert m.provider == providers.get(m.variant, "CPUExecutionProvider")
    assert report.fastest in report.variants()
    path = tmp_path / "bench.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert set(data) == {
        "provider",
        "threads",
        "machine",
        "measurements",
        "notes",
        "fastest",
        "setup_seconds",
        "cpu_only_variants",
        "stopped",
        "complete",
        "attention_kernels",
    }
    assert data["complete"] is True and data["stopped"] is None
    assert data["attention_kernels"] == {}  # recorded on CUDA only
    assert set(data["measurements"][0]) == {
        "variant",
        "batch_size",
        "seq_len",
        "iterations",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "mean_ms",
        "std_ms",
        "sequences_per_second",
        "provider",
        "speedup_vs_pytorch",
        "file",
        "size_mb",
        "lengths",
    }
    by_variant = {m["variant"]: m for m in data["measurements"]}
    assert by_variant["int8"]["file"].endswith("model_quantized.onnx")
    assert by_variant[PYTORCH]["file"].endswith("model.safetensors")
    assert 0 < by_variant["int8"]["size_mb"] < by_variant["fp32"]["size_mb"]
    assert data["machine"]["threads"]["torch"] >= 1 and data["machine"]["logical_cores"] >= 1
    assert data["machine"]["versions"]["onnxruntime-gpu"] or data["machine"]["versions"]["onnxruntime"]
    assert "Fastest variant" in report.to_markdown()


def test_variants_can_be_selected(tiny_onnx):
    report = bench(
        BenchConfig(
            onnx_dir=tiny_onnx, batch_sizes=(1,), seq_lens=(8,), min_iters=1, min_seconds=0.0, variants=("int8",)
        )
    )
    assert report.variants() == ["int8"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU error; this machine has one")
def test_cuda_asked_for_without_a_gpu_is_an_error_unless_fallback(tiny_onnx):
    with pytest.raises(ProviderError, match="cuda was asked for"):
        bench(BenchConfig(onnx_dir=tiny_onnx, provider="cuda", batch_sizes=(1,), seq_lens=(8,)))
    report = bench(
        BenchConfig(
            onnx_dir=tiny_onnx,
            provider="cuda",
            fallback=True,
            batch_sizes=(1,),
            seq_lens=(8,),
            min_iters=1,
            min_seconds=0.0,
            variants=("fp32",),
        )
    )
    assert [m.provider for m in report.measurements] == ["CPUExecutionProvider"]
    assert "cuda could not start; measured on CPUExecutionProvider" in report.to_markdown()


def test_provider_lists_put_the_requested_provider_first():
    settings = TensorRTSettings(cache_dir=None, fp16=True, min_shape=(1, 8), opt_shape=(32, 128), max_shape=(32, 128))
    providers = provider_options("tensorrt", ["input_ids", "attention_mask"], settings)
    name, options = providers[0]
    cuda_off = ("CUDAExecutionProvider", {"use_tf32": "0"})
    assert name == "TensorrtExecutionProvider" and providers[1:] == [cuda_off, "CPUExecutionProvider"]
    assert options["trt_profile_min_shapes"] == "input_ids:1x8,attention_mask:1x8"
    assert options["trt_profile_max_shapes"] == "input_ids:32x128,attention_mask:32x128"
    assert options["trt_fp16_enable"] is True
    assert provider_options("cuda", []) == [cuda_off, "CPUExecutionProvider"]
    assert provider_options("cuda", [], tf32=True)[0] == ("CUDAExecutionProvider", {"use_tf32": "1"})
    assert provider_options("cpu", []) == ["CPUExecutionProvider"]


def test_recommendation_is_the_fastest_variant_that_passed():
    report = BenchReport(
        "cpu",
        None,
        {},
        [
            Measurement("fp32", 1, 8, 5, 2.0, 2, 2, 2.0, 0, 500.0, "cpu"),
            Measurement("int8", 1, 8, 5, 1.0, 1, 1, 1.0, 0, 1000.0, "cpu"),
            Measurement("optimized", 1, 8, 5, 1.5, 1.5, 1.5, 1.5, 0, 700.0, "cpu"),
        ],
    )
    validation = {
        "variants": [
            {"variant": "fp32", "passed": True},
            {"variant": "int8", "passed": False},
            {"variant": "optimized", "passed": True},
        ]
    }
    assert report.fastest == "int8"
    assert report.recommend(validation) == "optimized"
    assert report.recommend({"variants": []}) is None


def test_plot_is_drawn_from_the_json(tmp_path):
    from PIL import Image

    measurements = [
        Measurement(v, b, s, 5, 10.0 / f, 1, 1, 10.0 / f, 0, b * 100.0 * f, "cpu")
        for v, f in (("pytorch", 1), ("int8", 3))
        for b in (1, 8, 32)
        for s in (16, 64)
    ]
    report = BenchReport("cpu", None, {"cpu": "test cpu"}, measurements)
    path = plot_benchmark(report.to_json(), tmp_path / "plots" / "bench.png")
    with Image.open(path) as image:
        assert image.size[0] > image.size[1] > 300  # two panels wide, two rows tall


def test_bad_shapes_are_refused(tiny_onnx):
    with pytest.raises(ConfigError):
        BenchConfig(onnx_dir=tiny_onnx, seq_lens=(1024,))
    with pytest.raises(ConfigError):
        BenchConfig(onnx_dir=tiny_onnx, batch_sizes=())


def test_training_comparison_runs_both_loops_on_the_same_data(tmp_path, tiny_encoder, tiny_train_csv):
    from nlu_deploy.config import FinetuneConfig
    from nlu_deploy.training.versus_trainer import compare_with_trainer

    config = FinetuneConfig(
        output=tmp_path / "unused",
        model=str(tiny_encoder),
        train=tiny_train_csv,
        epochs=6,
        batch_size=8,
        lr=5e-3,
        max_length=32,
    )
    comparison = compare_with_trainer(config)
    ours, trainer = comparison.runs
    assert (ours.loop, trainer.loop) == ("nlu-deploy", "transformers.Trainer")
    assert ours.samples_per_second > 0 and trainer.samples_per_second > 0
    # same recipe, same data: both loops must learn the four tiny intents
    assert ours.final_validation_score >= 0.9 and trainer.final_validation_score >= 0.9
    assert "nlu-deploy / Trainer throughput" in comparison.to_markdown()
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("provider, measured", [("cuda", ["fp32", "optimized"]), ("tensorrt", ["fp32"])])
def test_gpu_providers_skip_cpu_kernel_int8_and_tensorrt_skips_contrib_ops(tiny_onnx, provider, measured):
    """Decided from the graphs, before any session starts: checked here with --fallback on CPU."""
    config = BenchConfig(
        onnx_dir=tiny_onnx,
        provider=provider,
        fallback=True,
        batch_sizes=(1,),
        seq_lens=(8,),
        warmup_iters=0,
        min_iters=1,
        min_seconds=0.0,
    )
    report = bench(config)
    assert report.variants() == measured
    notes = " ".join(report.notes)
    assert "model_quantized.onnx skipped: dynamic int8 runs on CPU kernels only" in notes
    assert ("model_optimized.onnx skipped: TensorRT cannot parse" in notes) == (provider == "tensorrt")
    assert report.machine["tf32"] is False and set(report.setup_seconds) == set(measured)
    with_int8 = bench(BenchConfig(**{**config.__dict__, "int8_on_gpu": True}))
    if provider == "tensorrt":  # this int8 file was quantized from the O2 graph: contrib ops
        assert "int8" not in with_int8.variants() and with_int8.cpu_only_variants == []
        return
    assert "int8" in with_int8.variants() and with_int8.cpu_only_variants == ["int8"]
    passed_all = {"variants": [{"variant": v, "passed": True} for v in with_int8.variants()]}
    assert with_int8.recommend(passed_all) != "int8"


def test_io_binding_gives_the_results_of_session_run(tiny_onnx):
    from nlu_deploy.evaluation.benchmark import bound_outputs, synthetic_batch
    from nlu_deploy.runtime.sessions import create_session

    session = create_session(tiny_onnx / "model.onnx")
    batch = synthetic_batch(4, 12, 100, seed=0)
    feed = {i.name: batch[i.name] for i in session.get_inputs()}
    expected = session.run(None, feed)
    got = bound_outputs(session, feed, "cpu")  # onnxruntime binds on CPU too: the same code path as CUDA
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_doctor_reports_which_providers_really_start(tmp_path):
    from click.testing import CliRunner

    from nlu_deploy.cli import main
    from nlu_deploy.runtime.machine import diagnose

    report = diagnose()
    assert report.starts("CPUExecutionProvider")
    names = {check.name for check in report.checks}
    assert {"torch", "onnxruntime"} <= names
    for check in report.checks:
        assert check.ok is not False or check.fix.startswith("pip install")  # every missing piece has its fix
    result = CliRunner().invoke(main, ["doctor", "--json", str(tmp_path / "doctor.json")])
    assert result.exit_code == 0 and "| CPUExecutionProvider | starts |" in result.output
    assert json.loads((tmp_path / "doctor.json").read_text())["providers"]["CPUExecutionProvider"] == "starts"
    if not report.starts("CUDAExecutionProvider"):  # this machine: the requirement fails in one sentence
        result = CliRunner().invoke(main, ["doctor", "--require", "cuda"])
        assert result.exit_code == 1 and "CUDAExecutionProvider does not start here" in result.output


def _report_with(figures: dict[str, dict[str, float]]):
    """A bench report: per variant, sequences/s at the real lengths and at a fixed shape."""
    from nlu_deploy.evaluation.benchmark import BenchReport, Measurement

    report = BenchReport("cpu", 2, {"cpu": "recorded"})
    for variant, rates in figures.items():
        for lengths, rate in rates.items():
            for batch in (1, 32):
                latency = batch * 1000 / rate
                report.measurements.append(Measurement(variant, batch, 12, 10, latency, latency, latency, latency,
                                                       0.0, rate, "cpu", lengths=lengths))  # fmt: skip
    return report


def test_the_shipped_variant_is_the_fastest_within_the_gate_at_real_lengths():
    from nlu_deploy.evaluation.recommendation import choose_shipped

    report = _report_with({
        "pytorch": {"real": 100, "fixed": 50},
        "fp32": {"real": 300, "fixed": 200},
        "int8": {"real": 500, "fixed": 900},  # fastest on fixed shapes, second at real lengths
        "openvino-int8": {"real": 650, "fixed": 600},
        "openvino-bf16": {"real": 900, "fixed": 950},  # the fastest, but over the accuracy gate
    })  # fmt: skip
    gate = {"max_score_drop": 1.0, "variants": [
        {"variant": v, "file": f"{v}.file", "passed": v != "openvino-bf16"} for v in report.variants() if v != "pytorch"
    ]}  # fmt: skip
    choice = choose_shipped(report, gate)
    assert choice["variant"] == "openvino-int8" and choice["lengths"] == "real" and choice["runtime"] == "OpenVINO"
    assert choice["beats"]["int8"] == pytest.approx(1.3) and choice["failed_gate"] == ["openvino-bf16"]
    assert "1.30x the next fastest variant within the gate (int8)" in choice["why"]
    assert "6.50x PyTorch eager" in choice["why"] and "Over the accuracy gate: openvino-bf16" in choice["why"]
    nothing = choose_shipped(report, {"variants": [{**v, "passed": False} for v in gate["variants"]]})
    assert nothing["variant"] is None and "No variant passed" in nothing["why"]


def test_real_lengths_time_batches_of_real_texts_each_padded_to_its_longest(tmp_path, tiny_onnx, tiny_dev_csv):
    from click.testing import CliRunner

    from nlu_deploy.cli import main
    from nlu_deploy.evaluation.real_lengths import BATCHES_PER_SIZE, real_length_batches

    texts = ["wake me up", "play some jazz in the kitchen please and loudly", "hi"]
    batches = real_length_batches(tiny_onnx, texts, 2, seed=0)
    assert len(batches) == BATCHES_PER_SIZE
    for batch in batches:  # padded to the batch's own longest text, never to a fixed length
        assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][:, -1].max() == 1
    path = tmp_path / "b.json"
    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), "--batch-sizes", "1", "--seq-lens", "8",
                                       "--min-seconds", "0", "--min-iters", "2", "--variants", "fp32,int8",
                                       "--real-lengths", str(tiny_dev_csv), "--real-batch-sizes", "1,4",
                                       "--json", str(path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    real = [m for m in json.loads(path.read_text())["measurements"] if m["lengths"] == "real"]
    assert sorted((m["variant"], m["batch_size"]) for m in real) == [("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)]
    assert all(3 <= m["seq_len"] <= 32 for m in real) and "real (mean" in result.output
