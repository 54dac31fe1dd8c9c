"""PyTorch's AOTInductor package as a third runtime, on CPU: export --pt2 compiles the tiny joint
model (intents and slots, so both output kinds) into model.pt2, checked against PyTorch; it
validates, benches in the same rounds, predicts and is served by a real tritonserver like the
ONNX and OpenVINO variants; a package compiled from perturbed weights fails validate. Each package
takes Inductor about half a minute to compile on 2 cores, so the module builds two."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from nlu_deploy.cli import main
from nlu_deploy.config import ExportConfig, ValidateConfig
from nlu_deploy.evaluation.validate import validate
from nlu_deploy.export.onnx_export import export
from nlu_deploy.predict import load_predictor
from nlu_deploy.runtime.aoti_runtime import PT2_FILE, pt2_variants

TEXTS = ["wake me up at 7 am", "play some jazz please", "will it rain in oslo tomorrow", "timer"]


@pytest.fixture(scope="module")
def joint_pt2_export(tmp_path_factory, tiny_joint):
    output = tmp_path_factory.mktemp("pt2-joint") / "onnx"
    export(ExportConfig(model_dir=tiny_joint, output=output, quantize="dynamic", pt2="cpu"))
    return output


def test_export_writes_the_package_and_checks_it_against_pytorch(joint_pt2_export):
    manifest = json.loads((joint_pt2_export / "nlu_deploy.json").read_text())
    [variant] = pt2_variants(joint_pt2_export)
    assert variant.name == "pt2-fp32" and manifest["files"]["pt2-fp32"] == PT2_FILE
    assert manifest["max_abs_logit_diff"]["pt2-fp32"] < 1e-4  # fp32, compiled: the same numbers
    assert manifest["pt2"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["pt2"]["outputs"] == ["intent_logits", "slot_logits"] and manifest["pt2"]["output_ranks"] == [2, 3]
    assert manifest["pt2"]["device"] == "cpu" and manifest["pt2"]["precision"] == "fp32"


def test_the_package_validates_and_predicts_as_the_onnx_file_does(joint_pt2_export, tiny_joint, tiny_joint_dev):
    report = validate(ValidateConfig(model_dir=tiny_joint, onnx_dir=joint_pt2_export, data=tiny_joint_dev))
    scored = {v.variant: v for v in report.variants}
    assert scored["pt2-fp32"].passed and scored["pt2-fp32"].file == PT2_FILE
    assert all(agreement == 1.0 for agreement in scored["pt2-fp32"].agreement.values())
    compiled, described = load_predictor(joint_pt2_export, "pt2-fp32")[:2]
    assert "PyTorch AOTInductor (fp32)" in described
    onnx = load_predictor(joint_pt2_export, "model.onnx")[0]
    for got, want in zip(compiled.predict(TEXTS), onnx.predict(TEXTS)):
        assert got[0] == want[0] and abs(got[1] - want[1]) < 1e-4  # the intent and its score
        assert [(e.type, e.start, e.end) for e in got[2]] == [(e.type, e.start, e.end) for e in want[2]]


def test_a_package_of_perturbed_weights_fails_validate(tmp_path, joint_pt2_export, tiny_joint, tiny_joint_dev):
    import torch

    from nlu_deploy.export.aoti_export import write_pt2
    from nlu_deploy.tasks import task_of

    broken = tmp_path / "broken"
    shutil.copytree(joint_pt2_export, broken)
    model = task_of(tiny_joint).load_model(tiny_joint)
    with torch.no_grad():  # the intent head's rows rotated: every intent answered as the next one
        model.intent_head.weight.copy_(model.intent_head.weight.roll(1, dims=0))
        model.intent_head.bias.copy_(model.intent_head.bias.roll(1, dims=0))
    write_pt2(model, broken, broken / "model.onnx")
    report = validate(ValidateConfig(model_dir=tiny_joint, onnx_dir=broken, data=tiny_joint_dev))
    failed = {v.variant: v for v in report.failures}
    assert "pt2-fp32" in failed and "fp32" not in failed
    assert "intent_accuracy" in failed["pt2-fp32"].failed_on


def test_the_package_is_benched_in_the_same_rounds_and_named_by_its_runtime(joint_pt2_export, tmp_path):
    report_path = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main, ["bench", str(joint_pt2_export), "--batch-sizes", "1,4", "--seq-lens", "16", "--min-iters", "3",
               "--min-seconds", "0", "--warmup", "1", "--json", str(report_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    measured = {m["variant"]: m for m in json.loads(report_path.read_text())["measurements"]}
    assert {"fp32", "int8", "pt2-fp32"} <= set(measured)
    assert measured["pt2-fp32"]["provider"] == "PyTorch AOTInductor cpu (fp32)"
    assert measured["pt2-fp32"]["sequences_per_second"] > 0


def test_predict_names_the_export_option_when_there_is_no_package(tiny_onnx):
    result = CliRunner().invoke(main, ["predict", str(tiny_onnx), "--variant", "pt2-fp32", "hello"])
    assert result.exit_code == 1 and "has no variant 'pt2-fp32'; export it with --pt2" in result.output


def test_serve_bench_serves_the_package_with_every_answer_checked(joint_pt2_export, tiny_joint_dev, tmp_path):
    """A real tritonserver runs the package in the pipeline layout's Python model (torch there)."""
    pytest.importorskip("tritonclient.http.aio", reason="tritonclient[http] is a test dependency")
    output = tmp_path / "served"
    result = CliRunner().invoke(
        main, ["serve-bench", str(joint_pt2_export), "--data", str(tiny_joint_dev), "--output", str(output),
               "--variant", "pt2-fp32", "--concurrency", "2", "--warmup", "0.3", "--duration", "1.5",
               "--timeout", "10"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((output / "serve-bench.json").read_text())
    [configuration] = report["configurations"]
    [level] = configuration["levels"]
    assert level["answered"] > 0 and level["errors"] == level["timeouts"] == 0
    assert level["wrong_answers"] == 0 and level["checked"] >= level["answered"]
    assert np.isfinite(list(report["in_process_sequences_per_s"].values())).all()
