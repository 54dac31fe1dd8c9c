import json
import time

import numpy as np
import pytest

from nlu_deploy.benchmark import PYTORCH, bench, latency_stats, time_calls
from nlu_deploy.config import BenchConfig
from nlu_deploy.errors import ConfigError, ProviderError


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
    config = BenchConfig(onnx_dir=tiny_onnx, model_dir=tiny_checkpoint, batch_sizes=(1, 4), seq_lens=(8, 16),
                         warmup_iters=1, min_iters=3, min_seconds=0.0)
    report = bench(config)
    assert report.variants() == [PYTORCH, "fp32", "optimized", "int8"]
    assert len(report.measurements) == 4 * 2 * 2
    for m in report.measurements:
        assert m.iterations >= 3 and m.p50_ms <= m.p90_ms <= m.p99_ms
        assert m.speedup_vs_pytorch == pytest.approx(1.0) if m.variant == PYTORCH else m.speedup_vs_pytorch > 0
        assert m.provider == ("torch-cpu" if m.variant == PYTORCH else "CPUExecutionProvider")
    assert report.fastest in report.variants()
    path = tmp_path / "bench.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert set(data) == {"provider", "threads", "machine", "measurements", "fastest"}
    assert data["machine"]["versions"]["onnxruntime-gpu"] or data["machine"]["versions"]["onnxruntime"]
    assert "Fastest variant" in report.to_markdown()


def test_variants_can_be_selected(tiny_onnx):
    report = bench(BenchConfig(onnx_dir=tiny_onnx, batch_sizes=(1,), seq_lens=(8,), min_iters=1, min_seconds=0.0,
                               variants=("int8",)))
    assert report.variants() == ["int8"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU error; this machine has one")
def test_cuda_asked_for_without_a_gpu_is_an_error(tiny_onnx):
    with pytest.raises(ProviderError, match="cuda was asked for"):
        bench(BenchConfig(onnx_dir=tiny_onnx, provider="cuda", batch_sizes=(1,), seq_lens=(8,)))


def test_bad_shapes_are_refused(tiny_onnx):
    with pytest.raises(ConfigError):
        BenchConfig(onnx_dir=tiny_onnx, seq_lens=(1024,))
    with pytest.raises(ConfigError):
        BenchConfig(onnx_dir=tiny_onnx, batch_sizes=())
