"""The command line, in process: every command's help, the happy paths on tiny models, and
user mistakes answered with one sentence, a non-zero exit, no traceback, no output left."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from nlu_deploy import artifacts
from nlu_deploy.cli import main
from nlu_deploy.pipeline import FINALIST_BAND
from nlu_deploy.runtime.openvino_runtime import bf16_features

COMMANDS = ["finetune", "export", "validate", "bench", "bench-training", "predict", "run"]
TINY_TRAINING = ["--epochs", "6", "--batch-size", "8", "--lr", "5e-3", "--max-length", "32"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_failure(result, exit_code, message):
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example:" in result.output


def test_finetune_export_validate_bench_predict(tmp_path, tiny_encoder, tiny_train_csv, tiny_dev_csv):
    checkpoint, onnx_dir = tmp_path / "ckpt", tmp_path / "onnx"
    result = invoke(
        "finetune", "--model", tiny_encoder, "--train", tiny_train_csv, *TINY_TRAINING, "--output", checkpoint
    )
    assert result.exit_code == 0, result.output
    assert "Best epoch" in result.output and (checkpoint / "model.safetensors").exists()

    result = invoke("export", checkpoint, "--output", onnx_dir, "--optimize", "O2", "--quantize", "dynamic")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in onnx_dir.glob("*.onnx")) == [
        "model.onnx",
        "model_optimized.onnx",
        "model_quantized.onnx",
    ]

    report_path = tmp_path / "validation.json"
    result = invoke(
        "validate", "--model", checkpoint, "--onnx", onnx_dir, "--data", tiny_dev_csv, "--json", report_path
    )
    assert result.exit_code == 0, result.output
    assert "| fp32 | model.onnx |" in result.output
    assert json.loads(report_path.read_text())["passed"] is True

    assert json.loads((onnx_dir / "validation.json").read_text())["passed"] is True  # for bench --recommend

    bench_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    result = invoke(
        "bench",
        onnx_dir,
        "--model",
        checkpoint,
        "--batch-sizes",
        "1,2",
        "--seq-lens",
        "8",
        "--min-seconds",
        "0",
        "--min-iters",
        "2",
        "--json",
        bench_path,
        "--plot",
        plot_path,
        "--recommend",
    )
    assert result.exit_code == 0, result.output
    measured = json.loads(bench_path.read_text())["measurements"]
    variants = {m["variant"] for m in measured}  # pytorch-bf16 too on a CPU with native bf16
    assert {"pytorch", "fp32", "optimized", "int8"} <= variants and len(measured) == len(variants) * 2
    assert plot_path.stat().st_size > 10_000
    assert "Recommended: " in result.output and "within 1.0 accuracy points" in result.output

    result = invoke("predict", onnx_dir, "wake me up at 7 am", "play some jazz", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["label"] for line in lines] == ["set_alarm", "play_music"]
    assert all(0 < line["score"] <= 1 for line in lines)

    texts = tmp_path / "texts.txt"
    texts.write_text("set a timer for 5 minutes\n", encoding="utf-8")
    result = invoke("predict", checkpoint, "--file", texts)  # a PyTorch checkpoint works too
    assert result.exit_code == 0 and result.stdout.startswith("set_timer\t")


def test_a_mean_pooling_classifier_goes_through_every_stage(tmp_path, tiny_encoder, tiny_train_csv, tiny_dev_csv):
    import torch

    from nlu_deploy.tasks import task_of

    checkpoint, onnx_dir, student = tmp_path / "ckpt", tmp_path / "onnx", tmp_path / "student"
    result = invoke(
        "finetune",
        "--model",
        tiny_encoder,
        "--train",
        tiny_train_csv,
        *TINY_TRAINING,
        "--pooling",
        "mean",
        "--output",
        checkpoint,
    )
    assert result.exit_code == 0, result.output
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["architectures"] == ["MeanPoolingClassifier"] and config["nlu_pooling"] == "mean"

    # The head reads the mean over the real tokens: padding a text changes nothing.
    model = task_of(checkpoint).load_model(checkpoint)
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    padded_ids = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    padded = model(input_ids=padded_ids, attention_mask=(padded_ids != 0).long()).logits
    assert torch.allclose(alone, padded, atol=1e-5)

    result = invoke("export", checkpoint, "--output", onnx_dir, "--optimize", "O2", "--quantize", "dynamic")
    assert result.exit_code == 0, result.output
    result = invoke("validate", "--model", checkpoint, "--onnx", onnx_dir, "--data", tiny_dev_csv)
    assert result.exit_code == 0, result.output
    assert "| fp32 | model.onnx |" in result.output and "FAIL" not in result.output
    result = invoke("predict", onnx_dir, "wake me up at 7 am", "play some jazz", "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["label"] for line in result.stdout.splitlines()] == ["set_alarm", "play_music"]

    result = invoke("distill", checkpoint, "--layers", "1", "--epochs", "1", "--output", student)
    assert result.exit_code == 0, result.output
    assert json.loads((student / "config.json").read_text())["architectures"] == ["MeanPoolingClassifier"]

    result = invoke(
        "finetune",
        "--model",
        tiny_encoder,
        "--task",
        "token-classification",
        "--pooling",
        "mean",
        "--output",
        tmp_path / "tagger",
    )
    assert_clean_failure(result, 2, "--pooling mean is for intent classification")


def test_run_writes_the_whole_chain_and_a_report(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "run"
    result = invoke(
        "run",
        "--model",
        tiny_encoder,
        "--train",
        tiny_train_csv,
        *TINY_TRAINING,
        "--batch-sizes",
        "1,4",
        "--seq-lens",
        "8",
        "--min-seconds",
        "0",
        "--output",
        output,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((output / "report.json").read_text())
    variants = {f["variant"] for f in report["key_figures"]}
    assert {"fp32", "optimized", "int8", "openvino-f32", "openvino-int8"} <= variants  # OpenVINO is installed here
    assert report["validation"]["passed"] and report["finetune"]["best"]["accuracy"] >= 0.9
    # the measured recipe's --quantize auto measured the OpenVINO variants beside onnxruntime's
    search = json.loads((output / "onnx" / "quantization_report.json").read_text())
    openvino = {c["name"]: c for c in search["candidates"] if c["runtime"] == "openvino"}
    assert set(openvino) == {"openvino-f32", "openvino-int8"} | ({"openvino-bf16"} if bf16_features() else set())
    assert all(c["latency_b32_ms"] > 0 and c["accuracy"] is not None for c in openvino.values())
    # what ships is the fastest variant within the gate on real-length held-out batches
    choice = json.loads((output / "onnx" / "recommendation.json").read_text())
    real = {m["variant"]: [] for m in report["benchmark"]["measurements"]}
    for m in report["benchmark"]["measurements"]:
        if m["lengths"] == "real":
            real[m["variant"]].append(m["sequences_per_second"])
    assert {len(rates) for rates in real.values()} == {2}  # batch 1 and 32 of real texts, every variant
    passing = [v["variant"] for v in report["validation"]["variants"] if v["passed"]]
    decided = choice["sequences_per_s"]  # the finalists' second look when others came close, else the first
    assert choice["variant"] == report["recommended"] == max((v for v in passing if v in decided), key=decided.get)
    first = choice.get("first_look", decided)
    if "first_look" in choice:  # every passing variant left out of the second look was slower by more than the band
        fastest = max(first[v] for v in passing)
        assert all(first[v] < fastest / (1 + FINALIST_BAND) for v in passing if v not in decided)
    assert choice["why"] in (output / "report.md").read_text()
    predicted = invoke("predict", output / "onnx", "wake me up at 7")
    assert (
        predicted.exit_code == 0
        and f"using {choice['variant'] if choice['variant'].startswith('openvino') else ''}" in predicted.output
    )
    assert (output / "checkpoint" / "model.safetensors").exists()
    assert not list(tmp_path.glob(".run.partial-*"))


def test_run_with_the_fixed_recipe_writes_the_files_it_always_wrote(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "run"
    result = invoke("run", "--model", tiny_encoder, "--train", tiny_train_csv, *TINY_TRAINING, "--recipe", "fixed",
                    "--batch-sizes", "1", "--seq-lens", "8", "--min-seconds", "0", "--output", output)  # fmt: skip
    assert result.exit_code == 0, result.output
    files = {p.name for p in (output / "onnx").iterdir()}
    assert {f for f in files if f.endswith((".onnx", ".xml", ".json"))} == {
        "model.onnx", "model_optimized.onnx", "model_quantized.onnx", "config.json", "nlu_deploy.json",
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "ort_config.json",
    }  # no recommendation.json, no OpenVINO files, no search report  # fmt: skip
    manifest = json.loads((output / "onnx" / "nlu_deploy.json").read_text())
    assert manifest["quantization"]["mode"] == "dynamic"
    report = json.loads((output / "report.json").read_text())
    assert all(m["lengths"] == "fixed" for m in report["benchmark"]["measurements"])
    # the files a run wrote name where its files are, not the staging folder they were made in
    assert manifest["parent"] == str((output / "checkpoint").resolve())
    assert all(Path(m["file"]).parent.name in ("checkpoint", "onnx") for m in report["benchmark"]["measurements"])
    written = [p.read_text() for p in output.rglob("*") if p.suffix in (".json", ".md")]
    assert not any(".partial-" in text for text in written)


def test_non_empty_output_is_refused_without_overwrite(tmp_path, tiny_checkpoint):
    output = tmp_path / "onnx"
    output.mkdir()
    (output / "keep.txt").write_text("mine", encoding="utf-8")
    result = invoke("export", tiny_checkpoint, "--output", output)
    assert_clean_failure(result, 1, "already exists and is not empty; pass --overwrite")
    assert (output / "keep.txt").read_text() == "mine"


def test_validate_fails_with_exit_1_on_a_perturbed_model(tmp_path, tiny_checkpoint, tiny_onnx, tiny_dev_csv):
    from test_validate import perturb_classifier

    broken = tmp_path / "broken"
    shutil.copytree(tiny_onnx, broken)
    perturb_classifier(broken / artifacts.ONNX_QUANTIZED)
    result = invoke("validate", "--model", tiny_checkpoint, "--onnx", broken, "--data", tiny_dev_csv)
    assert_clean_failure(result, 1, "accuracy dropped by more than 1.0 points for model_quantized.onnx")
    assert "FAIL" in result.output


def test_predict_needs_some_text(tiny_onnx):
    assert_clean_failure(invoke("predict", tiny_onnx), 2, "give texts as arguments or with --file")


def test_unknown_variant_lists_the_files(tiny_onnx):
    assert_clean_failure(invoke("predict", tiny_onnx, "hi", "--variant", "fp16"), 1, "has no ONNX variant 'fp16'")


def test_recommend_needs_a_validation_report(tiny_checkpoint, tmp_path):
    from nlu_deploy.config import ExportConfig
    from nlu_deploy.export.onnx_export import export

    export(ExportConfig(model_dir=tiny_checkpoint, output=tmp_path / "onnx"))
    assert_clean_failure(invoke("bench", tmp_path / "onnx", "--recommend"), 2, "--recommend needs a validation report")


def test_bad_integer_lists(tiny_onnx):
    assert_clean_failure(invoke("bench", tiny_onnx, "--batch-sizes", "1,x"), 2, "comma-separated integers")


# Each config class and the command whose options fill it.
CONFIG_COMMANDS = {
    "FinetuneConfig": "finetune",
    "SearchConfig": "finetune",
    "DistillConfig": "distill",
    "ExportConfig": "export",
    "ValidateConfig": "validate",
    "BenchConfig": "bench",
    "ServeBenchConfig": "serve-bench",
    "RunConfig": "run",
}


@pytest.mark.parametrize("config_name, command", CONFIG_COMMANDS.items())
def test_number_errors_name_an_option_the_command_has(config_name, command):
    """A config's error about a number names the option the user typed (warmup_s is --warmup)."""
    import dataclasses

    from nlu_deploy import config as configs

    flags = {flag for parameter in main.commands[command].params for flag in parameter.opts}
    numbers = [f for f in dataclasses.fields(getattr(configs, config_name)) if "float" in str(f.type)]
    assert numbers
    named = {f.name: configs.option_name(f) for f in numbers}
    assert {name: flag for name, flag in named.items() if flag is not None and flag not in flags} == {}
