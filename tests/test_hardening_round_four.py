"""Hardening, round four (issue 40), the classes fixed so far: writers of nested outputs, a final
swap that meets files it did not stage, options that cannot work here, labels that break
one-line answers, a recommendation that is not one, and a text file's final newline."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

from nlu_deploy import artifacts
from nlu_deploy.cli import main
from nlu_deploy.data.tables import column_texts
from nlu_deploy.errors import NluDeployError

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nlu_deploy import artifacts
    with artifacts.output_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
""")


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def hold_lock(path):
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.skipif(sys.platform == "win32", reason="outputs are locked with flock")
def test_writers_of_nested_outputs_are_refused_both_ways(tmp_path, tiny_checkpoint):
    run_writing_out = hold_lock(tmp_path / "out")  # as `run --output out` would
    try:
        export = run_cli("export", tiny_checkpoint, "--output", tmp_path / "out" / "onnx")
        assert export.exit_code == 1
        assert f"(around {tmp_path / 'out' / 'onnx'}) is being written by another run" in export.output
        assert not (tmp_path / "out" / "onnx").exists()
    finally:
        run_writing_out.kill()
        run_writing_out.wait()

    (tmp_path / "out2").mkdir()
    export_inside = hold_lock(tmp_path / "out2" / "onnx")  # an export into a folder a run would replace
    try:
        outer = run_cli("export", tiny_checkpoint, "--output", tmp_path / "out2", "--overwrite")
        assert outer.exit_code == 1
        assert f"(inside {tmp_path / 'out2'}) is being written by another run" in outer.output
        assert not artifacts.lock_path(tmp_path / "out2").exists()  # the refused writer left no lock
    finally:
        export_inside.kill()
        export_inside.wait()
    assert run_cli("export", tiny_checkpoint, "--output", tmp_path / "out2", "--overwrite").exit_code == 0


def test_a_final_swap_never_removes_what_it_did_not_stage(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(NluDeployError, match="was written by another program while this stage ran"):
        with artifacts.staged_output(output) as staging:
            (staging / "ours.txt").write_text("staged")
            output.mkdir()
            (output / "theirs.txt").write_text("another program's")  # appears while the stage runs
    assert (output / "theirs.txt").read_text() == "another program's"
    (kept,) = tmp_path.glob("out.kept-*")
    assert (kept / "ours.txt").read_text() == "staged"
    with artifacts.staged_output(output, overwrite=True) as staging:  # --overwrite: replacing is asked for
        (staging / "ours.txt").write_text("staged")
    assert sorted(p.name for p in output.iterdir()) == ["ours.txt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_a_cuda_package_is_refused_before_any_training_or_export(
    tmp_path, tiny_encoder, tiny_train_csv, tiny_checkpoint
):
    run = run_cli(
        "run", "--model", tiny_encoder, "--train", tiny_train_csv, "--output", tmp_path / "run", "--pt2", "cuda"
    )
    assert run.exit_code == 1 and "--pt2 cuda compiles the package on a CUDA GPU" in run.output
    assert "fine-tuning" not in run.output and not (tmp_path / "run").exists()
    export = run_cli("export", tiny_checkpoint, "--output", tmp_path / "onnx", "--pt2", "cuda")
    assert export.exit_code == 1 and "use --pt2 cpu" in export.output and not (tmp_path / "onnx").exists()


def test_serve_bench_refuses_search_options_without_a_search(tmp_path, tiny_onnx, tiny_dev_csv):
    result = run_cli(
        "serve-bench", tiny_onnx, "--data", tiny_dev_csv, "--output", tmp_path / "report", "--instances", "1,2",
        "--layouts", "pipeline",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--instances, --layouts only apply to a search: give --p99-ms" in result.output
    assert not (tmp_path / "report").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_serve_bench_on_gpu_without_one_names_its_own_option(tmp_path, tiny_onnx, tiny_dev_csv):
    result = run_cli("serve-bench", tiny_onnx, "--data", tiny_dev_csv, "--output", tmp_path / "r", "--device", "gpu")
    assert result.exit_code == 1
    assert "use --device cpu to serve on CPU" in result.output and "--provider" not in result.output


def test_labels_with_a_tab_or_line_break_are_refused_and_case_twins_are_named(tmp_path, tiny_encoder):
    tabbed = tmp_path / "tabbed.jsonl"
    tabbed.write_text(
        "".join(json.dumps({"text": f"text {i}", "label": "a\tb" if i % 2 else "c"}) + "\n" for i in range(20))
    )
    result = run_cli("finetune", "--model", tiny_encoder, "--train", tabbed, "--output", tmp_path / "m")
    assert result.exit_code == 1 and "holds a tab or a line break" in result.output and "'a\\tb'" in result.output
    twins = tmp_path / "twins.jsonl"
    labelled = [("play some jazz", "Play"), ("play the radio", "play"), ("will it rain", "weather")] * 10
    twins.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in labelled))
    result = run_cli(
        "finetune", "--model", tiny_encoder, "--train", twins, "--epochs", "1", "--max-length", "16",
        "--output", tmp_path / "twins",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "differ only in case; they are trained as different classes" in result.output


def test_a_recommendation_that_is_not_one_is_refused_and_a_missing_variant_names_its_file(tmp_path, tiny_onnx):
    folder = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, folder)
    (folder / "recommendation.json").write_text("[1, 2]")
    result = run_cli("predict", folder, "hello")
    assert result.exit_code == 1 and "does not name a variant" in result.output
    (folder / "recommendation.json").write_text(json.dumps({"variant": "openvino-int8"}))
    result = run_cli("predict", folder, "hello")
    assert result.exit_code == 1
    assert f"the name 'openvino-int8' came from {folder / 'recommendation.json'}" in result.output
    assert run_cli("predict", folder, "--variant", "int8", "hello").exit_code == 0


def test_a_text_files_final_newline_is_not_an_empty_row(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("wake me up\nplay jazz\n")
    assert column_texts(path, "text") == (["wake me up", "play jazz"], 0)
    path.write_text("wake me up\n\nplay jazz")
    assert column_texts(path, "text") == (["wake me up", "play jazz"], 1)


def enlarged_tokenizer(folder, extra: int = 200):
    """The folder's tokenizer.json with `extra` added tokens: ids past the embedding table."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.add_tokens([f"zzextra{i}" for i in range(extra)])
    tokenizer.save(str(folder / "tokenizer.json"))


def test_a_vocabulary_past_the_embedding_table_is_refused_at_training_validate_and_predict(
    tmp_path, tiny_encoder, tiny_train_csv, tiny_checkpoint, tiny_onnx, tiny_dev_csv
):
    folder = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, folder)
    enlarged_tokenizer(folder)
    sentence = "rows, so some texts would fail; use the tokenizer the model was made with"
    predicted = run_cli("predict", folder, "zzextra150 please")
    assert predicted.exit_code == 1 and sentence in predicted.output
    validated = run_cli("validate", "--model", tiny_checkpoint, "--onnx", folder, "--data", tiny_dev_csv)
    assert validated.exit_code == 1 and sentence in validated.output  # its own tokenizer, as predict reads it

    base = tmp_path / "base"
    shutil.copytree(tiny_encoder, base)
    if (base / "tokenizer.json").exists():
        enlarged_tokenizer(base)
    else:
        (base / "vocab.txt").write_text((base / "vocab.txt").read_text() + "".join(f"zz{i}\n" for i in range(200)))
    trained = run_cli("finetune", "--model", base, "--train", tiny_train_csv, "--output", tmp_path / "m")
    assert trained.exit_code == 1 and sentence in trained.output
    assert "epoch" not in trained.output and not (tmp_path / "m").exists()


def test_a_package_that_cannot_be_run_is_named_by_validate_bench_and_predict(
    tmp_path, tiny_checkpoint, tiny_onnx, tiny_dev_csv
):
    folder = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, folder)
    (folder / "model.pt2").write_bytes(b"not a package")
    for description, why in [
        ("[1, 2]", "is not a JSON object"),
        ('{"outputs": ["logits"], "output_ranks": [2]}', "names inputs this tool does not give"),
        (
            '{"inputs": ["pixel_values"], "outputs": ["logits"], "output_ranks": [2]}',
            "names inputs this tool does not give",
        ),
    ]:
        (folder / "model.pt2.json").write_text(description)
        validated = run_cli("validate", "--model", tiny_checkpoint, "--onnx", folder, "--data", tiny_dev_csv)
        assert validated.exit_code == 0 and f"model.pt2 (its model.pt2.json {why}" in validated.output
        predicted = run_cli("predict", folder, "--variant", "pt2-fp32", "hello")
        assert predicted.exit_code == 1 and why in predicted.output
    benched = run_cli(
        "bench", folder, "--batch-sizes", "1", "--seq-lens", "8", "--min-seconds", "0", "--variants", "fp32"
    )
    assert benched.exit_code == 0 and "model.pt2 not measured: its model.pt2.json names inputs" in benched.output


def test_an_auto_map_checkpoint_is_exported_with_transformers_classes_and_says_so(tmp_path, tiny_checkpoint):
    source = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, source)
    config = json.loads((source / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_custom.CustomBert"}
    (source / "config.json").write_text(json.dumps(config))
    result = run_cli("export", source, "--output", tmp_path / "onnx")
    assert result.exit_code == 0, result.output
    assert result.output.count("names code of its own (auto_map)") == 1 and "ignores that code" in result.output
    assert "auto_map" not in json.loads((tmp_path / "onnx" / "config.json").read_text())


class _Hostile:
    """Unpickled, this would run a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_or_damaged_training_state_is_refused_and_runs_nothing(tmp_path, tiny_encoder, tiny_train_csv):
    marker = tmp_path / "pwned"
    state_dir = tmp_path / ".m.training"
    state_dir.mkdir()
    torch.save({"fingerprint": _Hostile(marker)}, state_dir / "training_state.pt")
    arguments = ["finetune", "--model", tiny_encoder, "--train", tiny_train_csv, "--epochs", "1",
                 "--output", tmp_path / "m", "--resume"]  # fmt: skip
    result = run_cli(*arguments)
    assert result.exit_code == 1 and "is not a training state this tool wrote" in result.output
    assert not marker.exists()
    (state_dir / "training_state.pt").write_bytes((state_dir / "training_state.pt").read_bytes()[:100])  # cut short
    result = run_cli(*arguments)
    assert result.exit_code == 1 and "is not a training state this tool wrote" in result.output


def test_a_damaged_base_model_gets_a_sentence(tmp_path, tiny_encoder, tiny_train_csv):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_encoder, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run_cli("finetune", "--model", truncated, "--train", tiny_train_csv, "--output", tmp_path / "a")
    assert result.exit_code == 1 and str(truncated) in result.output and not (tmp_path / "a").exists()

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_encoder / name, bare / name)
    result = run_cli("finetune", "--model", bare, "--train", tiny_train_csv, "--output", tmp_path / "b")
    assert result.exit_code == 1 and "tokenizer" in result.output and not (tmp_path / "b").exists()

    config = json.loads((tiny_encoder / "config.json").read_text())
    del config["model_type"]
    untyped = tmp_path / "untyped"
    shutil.copytree(tiny_encoder, untyped)
    (untyped / "config.json").write_text(json.dumps(config))
    result = run_cli("finetune", "--model", untyped, "--train", tiny_train_csv, "--output", tmp_path / "c")
    assert result.exit_code == 1 and "has no model_type" in result.output and "None" not in result.output


def test_the_repository_of_an_existing_export_is_written_without_touching_it(tmp_path, tiny_onnx):
    folder = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, folder)
    (folder / "recommendation.json").write_text(json.dumps({"variant": "int8"}))
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}
    result = run_cli("export", folder, "--triton", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    assert "serves model_quantized.onnx" in result.output
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()} == before
    assert list((tmp_path / "repo").rglob("config.pbtxt"))
    refused = run_cli("export", folder, "--triton", tmp_path / "repo2", "--quantize", "dynamic")
    assert refused.exit_code == 2 and "--quantize describe a new export: give --output too" in refused.output


def test_serve_bench_sends_long_texts_to_a_classifier_truncated_and_counts_them(tmp_path, tiny_onnx):
    from nlu_deploy.config import ServeBenchConfig
    from nlu_deploy.progress import ProgressLog
    from nlu_deploy.serving.load_bench import read_traffic

    long_text = " ".join(["play some jazz in the kitchen"] * 30)
    data = tmp_path / "texts.txt"
    data.write_text(f"wake me up at 7\n{long_text}\nadd milk\n")
    config = ServeBenchConfig(onnx_dir=tiny_onnx, data=data, output=tmp_path / "report", variant="model.onnx")
    traffic = read_traffic(config, ProgressLog(None, terminal=False, enabled=False))
    assert long_text in traffic.texts and len(traffic.texts) == 3  # the final newline is not a row
    assert traffic.facts["longer_than_max_length"] == 1 and traffic.facts["long_texts"] == "sent truncated"
    assert traffic.facts["empty_or_not_text"] == 0


def test_labels_that_do_not_fit_the_head_are_named(tmp_path, tiny_checkpoint):
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {**config["id2label"], str(len(config["id2label"])): "extra"}
    config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(config))
    result = run_cli("export", folder, "--output", tmp_path / "onnx")
    assert result.exit_code == 1
    assert f"id2label names {len(config['id2label'])} labels, but the weights' head has another" in result.output


def test_a_model_with_eight_positions_trained_at_max_length_8_exports(tmp_path, tiny_encoder, tiny_train_csv):
    short = tmp_path / "short"
    shutil.copytree(tiny_encoder, short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 8  # its position table is cut to 8 rows (re-initialised at fine-tuning)
    (short / "config.json").write_text(json.dumps(config))
    trained = run_cli("finetune", "--model", short, "--train", tiny_train_csv, "--epochs", "1", "--max-length", "8",
                      "--output", tmp_path / "checkpoint")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    exported = run_cli("export", tmp_path / "checkpoint", "--output", tmp_path / "onnx")
    assert exported.exit_code == 0, exported.output
    assert run_cli("predict", tmp_path / "onnx", "wake me up at 7 am please").exit_code == 0
