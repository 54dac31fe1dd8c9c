"""OpenVINO as a second runtime on the tiny models: export --openvino writes the fp32 and NNCF int8
IR files; every OpenVINO variant validates, benches and predicts beside onnxruntime's; a perturbed
OpenVINO model fails validate; the quantization search measures the OpenVINO variants and keeps
one when it is the fastest within budget; predict from OpenVINO imports no torch."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from nlu_deploy.cli import main
from nlu_deploy.config import ExportConfig, ValidateConfig
from nlu_deploy.evaluation.validate import validate
from nlu_deploy.export.onnx_export import export
from nlu_deploy.export.quantize_search import Candidate, pick_kept
from nlu_deploy.predict import load_predictor
from nlu_deploy.runtime.openvino_runtime import OPENVINO_FP32_IR, bf16_features, openvino_variants

ov = pytest.importorskip("openvino", reason="openvino is a test dependency (the openvino extra)")
TEXTS = ["wake me up at 7 am", "play some jazz please", "will it rain in oslo tomorrow"]


@pytest.fixture(scope="module")
def openvino_export(tmp_path_factory, tiny_checkpoint):
    output = tmp_path_factory.mktemp("openvino") / "onnx"
    export(ExportConfig(model_dir=tiny_checkpoint, output=output, quantize="dynamic", openvino=True))
    return output


@pytest.fixture(scope="module")
def joint_openvino_export(tmp_path_factory, tiny_joint):
    output = tmp_path_factory.mktemp("openvino-joint") / "onnx"
    export(ExportConfig(model_dir=tiny_joint, output=output, openvino=True))
    return output


def expected_variants() -> set[str]:
    return {"openvino-f32", "openvino-int8"} | ({"openvino-bf16"} if bf16_features() else set())


def test_export_writes_the_ir_files_and_checks_them_against_pytorch(openvino_export):
    manifest = json.loads((openvino_export / "nlu_deploy.json").read_text())
    assert {v.name for v in openvino_variants(openvino_export)} == expected_variants()
    assert {"openvino-f32", "openvino-int8"} <= set(manifest["files"])
    assert manifest["max_abs_logit_diff"]["openvino-f32"] < 1e-4  # the same fp32 graph, another runtime
    assert manifest["openvino"]["calibration_batches"] > 0 and manifest["openvino"]["openvino"]


@pytest.mark.parametrize("model,export_fixture,data", [
    ("tiny_checkpoint", "openvino_export", "tiny_dev_csv"), ("tiny_joint", "joint_openvino_export", "tiny_joint_dev")
])  # fmt: skip
def test_every_openvino_variant_validates_with_its_precision_recorded(request, model, export_fixture, data):
    report = validate(
        ValidateConfig(
            model_dir=request.getfixturevalue(model),
            onnx_dir=request.getfixturevalue(export_fixture),
            data=request.getfixturevalue(data),
        )
    )
    by_variant = {v.variant: v for v in report.variants}
    assert expected_variants() <= set(by_variant)
    assert by_variant["openvino-f32"].passed and by_variant["openvino-f32"].precision == "f32"
    assert max(by_variant["openvino-f32"].max_abs_logit_diff.values()) < 1e-3
    if "openvino-bf16" in by_variant:
        assert by_variant["openvino-bf16"].precision == "bf16"
        # bf16 keeps 8 bits of mantissa: its logits move, which is why it goes through the gate
        assert max(by_variant["openvino-bf16"].max_abs_logit_diff.values()) > 1e-4
    assert "precision hints" in report.to_markdown()


def test_a_perturbed_openvino_model_fails_validate(tmp_path, openvino_export, tiny_checkpoint, tiny_dev_csv):
    broken = tmp_path / "broken"
    shutil.copytree(openvino_export, broken)
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(openvino_export / "model.onnx"))
    rng = np.random.default_rng(0)
    for initializer in graph.graph.initializer:  # every weight matrix shuffled: the model's knowledge is gone
        values = numpy_helper.to_array(initializer)
        if values.dtype == np.float32 and values.ndim == 2:
            shuffled = rng.permutation(values.reshape(-1)).reshape(values.shape)
            initializer.CopyFrom(numpy_helper.from_array(shuffled, initializer.name))
    onnx.save(graph, str(tmp_path / "perturbed.onnx"))
    ov.save_model(
        ov.convert_model(str(tmp_path / "perturbed.onnx")), str(broken / OPENVINO_FP32_IR), compress_to_fp16=False
    )
    report = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=broken, data=tiny_dev_csv))
    failed = {v.variant for v in report.failures}
    assert "openvino-f32" in failed and "fp32" not in failed


def test_openvino_variants_are_benched_in_the_same_rounds(openvino_export, tmp_path):
    # Through the command line, as a user runs it. (It ran in a child process because a SIGTERM after
    # OpenVINO segfaulted the process: found and fixed, see test_a_signal_after_openvino_ran_...)
    report_path = tmp_path / "bench.json"
    command = ["bench", str(openvino_export), "--batch-sizes", "1,4", "--seq-lens", "16", "--min-iters", "3",
               "--min-seconds", "0", "--warmup", "1", "--json", str(report_path)]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "nlu_deploy", *command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    measured = {m["variant"] for m in report["measurements"]}
    assert expected_variants() | {"fp32", "int8"} <= measured
    hints = report["machine"]["openvino_precision_hints"]
    assert hints["openvino-f32"] == "f32" and hints["openvino-int8"] == "f32"
    assert "OpenVINO precision hints" in done.stdout
    providers = {m["variant"]: m["provider"] for m in report["measurements"]}
    assert providers["openvino-f32"] == "OpenVINO CPU (f32)"


def test_predict_runs_an_openvino_variant_like_onnxruntime(openvino_export):
    onnxruntime_predictor, _ = load_predictor(openvino_export, "model.onnx")
    openvino_predictor, used = load_predictor(openvino_export, "openvino-f32")
    assert "OpenVINO (f32)" in used
    expected = onnxruntime_predictor.predict(TEXTS)
    got = openvino_predictor.predict(TEXTS)
    assert [label for label, _ in got] == [label for label, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
    result = CliRunner().invoke(main, ["predict", str(openvino_export), "--variant", "openvino-int8", "--json", *TEXTS])
    assert result.exit_code == 0, result.output
    assert len([line for line in result.output.splitlines() if line.startswith("{")]) == len(TEXTS)


def test_predict_from_openvino_imports_no_torch(openvino_export):
    code = (
        "import sys; from nlu_deploy.predict import load_predictor; "
        f"p, _ = load_predictor({str(openvino_export)!r}, 'openvino-int8'); p.predict(['play some jazz']); "
        "heavy = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_openvino_the_tool_says_how_to_add_it(openvino_export):
    code = (
        "import sys; sys.modules['openvino'] = None; from click.testing import CliRunner; "
        "from nlu_deploy.cli import main; "
        f"r = CliRunner().invoke(main, ['predict', {str(openvino_export)!r}, '--variant', 'openvino-f32', 'hi']); "
        "print(r.exit_code, r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("1 ") and 'pip install -e ".[openvino]"' in out and "Traceback" not in out


STOP_AFTER_OPENVINO = """
import os, signal, sys
from pathlib import Path
from nlu_deploy.config import BenchConfig
from nlu_deploy.evaluation.benchmark import bench
bench(BenchConfig(onnx_dir=Path(sys.argv[1]), batch_sizes=(1,), seq_lens=(16,), min_iters=2, min_seconds=0.0,
                  warmup_iters=1, variants=("openvino-f32", "openvino-int8")))
received = []
signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
os.kill(os.getpid(), signal.SIGTERM)
print("handled", received)
"""


def test_a_signal_after_openvino_ran_is_handled_not_a_segfault(openvino_export):
    """Two compiled models freed out of order used to leave the thread an alternate signal stack in
    freed memory: the next SIGTERM killed the process with SIGSEGV (runtime/openvino_runtime.py)."""
    done = subprocess.run([sys.executable, "-c", STOP_AFTER_OPENVINO, str(openvino_export)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "handled [15]" in done.stdout


def _bench_cli(*arguments) -> subprocess.CompletedProcess:
    """bench in a child process (see test_openvino_variants_are_benched_in_the_same_rounds)."""
    short = ["--batch-sizes", "1", "--seq-lens", "16", "--min-iters", "2", "--min-seconds", "0", "--warmup", "1"]
    command = [sys.executable, "-m", "nlu_deploy", "bench", *map(str, arguments), *short]
    return subprocess.run(command, capture_output=True, text=True)


def test_an_openvino_variant_alone_is_benched(openvino_export, tmp_path):
    done = _bench_cli(openvino_export, "--variants", "openvino-f32", "--json", tmp_path / "b.json")
    assert done.returncode == 0, done.stderr
    assert {m["variant"] for m in json.loads((tmp_path / "b.json").read_text())["measurements"]} == {"openvino-f32"}
    unknown = _bench_cli(openvino_export, "--variants", "int8,openvino-f16")
    assert unknown.returncode == 1 and "has no variant openvino-f16; it has fp32, int8, openvino-" in unknown.stderr


def test_bf16_on_a_cpu_without_it_is_refused_not_dropped(openvino_export):
    from nlu_deploy.artifacts import onnx_files
    from nlu_deploy.errors import NluDeployError
    from nlu_deploy.evaluation.benchmark import check_variants

    files = onnx_files(openvino_export)
    check_variants(openvino_export, ("int8", "openvino-bf16"), files, flags={"avx512_bf16"})  # a CPU that has it
    with pytest.raises(NluDeployError, match="openvino-bf16 needs a CPU with AMX or AVX-512 BF16"):
        check_variants(openvino_export, ("int8", "openvino-bf16"), files, flags={"avx2"})


def test_a_truncated_bin_says_what_openvino_said(openvino_export, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(openvino_export, damaged)
    weights = damaged / OPENVINO_FP32_IR.replace(".xml", ".bin")
    weights.write_bytes(weights.read_bytes()[:100])
    result = CliRunner().invoke(main, ["predict", str(damaged), "--variant", "openvino-f32", "hello"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "(Incorrect weights in bin file)" in result.output and "src/" not in result.output


def test_the_search_keeps_an_openvino_variant_when_it_is_the_fastest_within_budget():
    def candidate(name, runtime, latency, delta):
        found = Candidate(name, "openvino" if runtime == "openvino" else "dynamic", "g", False, runtime=runtime)
        found.latency_b32_ms, found.deltas, found.fits = latency, {"accuracy": delta}, True
        return found

    onnx = candidate("dynamic/optimized", "onnxruntime", 10.0, -0.1)
    bf16 = candidate("openvino-bf16", "openvino", 7.0, 0.0)
    assert pick_kept([onnx, bf16])[0] is bf16
    assert pick_kept([onnx, candidate("openvino-f32", "openvino", 12.0, 0.0)])[0] is onnx


@pytest.mark.slow  # half a minute; the default run's `run` test checks the same in its search report
def test_quantize_auto_measures_the_openvino_variants(tmp_path, tiny_checkpoint):
    result = export(ExportConfig(model_dir=tiny_checkpoint, output=tmp_path / "auto", quantize="auto", openvino=True))
    by_name = {c.name: c for c in result.search.candidates}
    assert expected_variants() <= set(by_name)
    for name in expected_variants():
        assert by_name[name].runtime == "openvino" and by_name[name].latency_b32_ms > 0
        assert by_name[name].accuracy is not None
    kept = next(c for c in result.search.candidates if c.kept)
    assert (tmp_path / "auto" / "model_quantized.onnx").exists() or kept.runtime == "openvino"
    if kept.runtime == "openvino":
        assert f"predict --variant {kept.name}" in result.search.reason


@pytest.mark.parametrize("layout", ["ensemble", "pipeline"])
def test_triton_serves_the_openvino_variant(tmp_path, openvino_export, layout):
    """The repository for Triton's OpenVINO backend parses as Triton's ModelConfig with the precision
    hint set; its Python-backend substitute, served by a real tritonserver, answers as predict does."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from nlu_deploy.serving.local_server import local_triton_server
    from nlu_deploy.serving.repository import TritonOptions, export_triton_repository

    real = TritonOptions(runtime="openvino", openvino_variant="openvino-bf16")
    assert export_triton_repository(openvino_export, tmp_path / "real", real) == "openvino-bf16"
    config = text_format.Parse(
        (tmp_path / "real" / "nlu_model" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.backend == "openvino" and config.parameters["INFERENCE_PRECISION_HINT"].string_value == "bf16"
    assert (tmp_path / "real" / "nlu_model" / "1" / "model.bin").exists()

    substitute = TritonOptions(runtime="openvino", onnx_backend="python", layout=layout)
    export_triton_repository(openvino_export, tmp_path / "served", substitute)
    httpclient = pytest.importorskip("tritonclient.http")
    with local_triton_server(tmp_path / "served", tmp_path / "server") as server:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60.0)
        text_input = httpclient.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
        text_input.set_data_from_numpy(np.array([[t.encode("utf-8")] for t in TEXTS], dtype=object))
        result = client.infer("nlu", [text_input])
        labels = [value.decode("utf-8") for value in result.as_numpy("LABEL").reshape(-1)]
        scores = result.as_numpy("SCORE").reshape(-1)
        client.close()
    expected = load_predictor(openvino_export, "openvino-f32")[0].predict(TEXTS)
    assert labels == [label for label, _ in expected]
    np.testing.assert_allclose(scores, [score for _, score in expected], atol=1e-4)


def _measured(figures: dict[str, float]):
    """A bench report holding one measurement per variant at the issue's shape (batch 32)."""
    from nlu_deploy.evaluation.benchmark import BenchReport, Measurement

    report = BenchReport("cpu", 2, {"cpu": "recorded"})
    for variant, rate in figures.items():
        latency = 32_000 / rate
        report.measurements.append(
            Measurement(variant, 32, 32, 10, latency, latency, latency, latency, 0.0, rate, "cpu")
        )
    return report


@pytest.mark.parametrize(
    "machine,figures,failing,winner",
    [
        # the SNIPS MiniLM figures measured on both kinds of CPU before this runtime was added (issue 28)
        ("Intel Xeon with AMX", {"fp32": 451, "int8": 974, "openvino-bf16": 1379, "openvino-int8": 262}, set(), "openvino-bf16"),
        ("AMD EPYC", {"fp32": 416, "int8": 982, "openvino-f32": 725, "openvino-int8": 916}, set(), "int8"),
        # faster, but outside the accuracy budget: never recommended
        ("AMX, bf16 over budget", {"int8": 974, "openvino-bf16": 1379}, {"openvino-bf16"}, "int8"),
    ],
)  # fmt: skip
def test_the_recommendation_is_the_fastest_within_budget_whatever_its_runtime(machine, figures, failing, winner):
    from nlu_deploy.evaluation.recommendation import recommendation

    report = _measured(figures)
    validation = {
        "max_score_drop": 0.3,
        "gated_metrics": ["accuracy"],
        "variants": [{"variant": v, "passed": v not in failing} for v in figures],
    }
    assert report.recommend(validation) == winner, machine
    text = recommendation(report, validation)
    if winner == "openvino-bf16":
        assert (
            "OpenVINO openvino-bf16 runs 1.42x the geometric-mean throughput of onnxruntime's best passing variant, int8"
            in text
        )
