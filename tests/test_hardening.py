"""Hardening, round two: two writers on one output, readers that must not change the data,
trainings that diverge, files whose numbers are not numbers, and outputs that are links or
land on a full disk. Each case runs the real stage on tiny models; the bad-input matrix in
test_bad_input.py holds the one-line refusals."""

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from safetensors.torch import load_file, save_file

from nlu_deploy import artifacts
from nlu_deploy.cli import main
from nlu_deploy.data.tables import read_records, read_texts
from nlu_deploy.training.checkpointing import training_state_dir

TINY = ["--epochs", "1", "--batch-size", "8", "--max-length", "32"]


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


# -- two writers, one output ---------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nlu_deploy import artifacts
    with artifacts.output_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def lock_holder(tmp_path):
    """Another process writing `tmp_path / out`, as a second export or finetune would be."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="outputs are locked with flock")
def test_a_second_writer_is_refused_at_once_and_a_killed_writers_lock_is_taken_over(
    tmp_path, lock_holder, tiny_checkpoint, tiny_encoder, tiny_train_csv
):
    output = tmp_path / "out"
    export = run_cli("export", tiny_checkpoint, "--output", output)
    assert export.exit_code == 1
    assert f"is being written by another run (process {lock_holder.pid} on" in export.output
    train = run_cli("finetune", "--model", tiny_encoder, "--train", tiny_train_csv, *TINY, "--output", output)
    assert train.exit_code == 1 and "is being written by another run" in train.output
    assert not output.exists() and not training_state_dir(output).exists()

    lock_holder.send_signal(signal.SIGKILL)  # no cleanup runs: its lock file stays behind
    lock_holder.wait()
    assert artifacts.lock_path(output).exists()
    assert run_cli("export", tiny_checkpoint, "--output", output).exit_code == 0
    assert (output / "model.onnx").exists()
    assert not artifacts.lock_path(output).exists()  # nothing is left beside a finished output


# -- readers that must not change the data -------------------------------------------------


def test_csv_keeps_quoted_newlines_and_long_fields(tmp_path):
    long_text = "word " * 40_000  # 200 kB in one field: over the csv module's default limit
    path = tmp_path / "d.csv"
    path.write_text(f'text,label\n"first line\nsecond line",a\n"{long_text}",b\nplain,a\n', encoding="utf-8")
    records = read_records(path)
    assert [r["text"] for r in records] == ["first line\nsecond line", long_text, "plain"]


def test_jsonl_splits_lines_at_newlines_only(tmp_path):
    path = tmp_path / "d.jsonl"
    texts = ["a\u2028b", "c\u0085d", "e\u2029f"]  # valid inside a JSON string, line breaks to str.splitlines
    path.write_text(
        "".join(json.dumps({"text": t, "label": "x"}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8"
    )
    assert [r["text"] for r in read_records(path)] == texts
    lines = tmp_path / "texts.txt"
    lines.write_text("one\u2028still one\r\ntwo\n", encoding="utf-8")
    assert read_texts(lines) == ["one\u2028still one", "two"]


def test_a_max_length_that_cuts_most_texts_is_warned_about_and_counted(tmp_path, tiny_encoder, tiny_train_csv):
    result = run_cli(
        "finetune",
        "--model",
        tiny_encoder,
        "--train",
        tiny_train_csv,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-length",
        "3",
        "--output",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    metrics = artifacts.read_json(tmp_path / "out" / "metrics.json")
    assert metrics["truncated_train"] > 0.5 * metrics["train_examples"]
    assert f"warning: {metrics['truncated_train']} of {metrics['train_examples']} training texts" in result.output
    assert "are longer than --max-length 3 tokens" in result.output


# -- numbers that are not numbers ----------------------------------------------------------


def test_a_diverging_training_stops_with_a_sentence_and_keeps_nothing(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "out"
    result = run_cli(
        "finetune", "--model", tiny_encoder, "--train", tiny_train_csv, *TINY, "--lr", "1e30", "--output", output
    )
    assert result.exit_code == 1
    assert "training diverged in epoch 1:" in result.output and "lower --lr (it was 1e+30)" in result.output
    assert not output.exists() and not training_state_dir(output).exists()
    assert not list(tmp_path.glob(".out*"))


@pytest.fixture
def nan_checkpoint(tmp_path, tiny_checkpoint):
    import shutil

    broken = tmp_path / "nan-checkpoint"
    shutil.copytree(tiny_checkpoint, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if k.endswith("classifier.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    return broken


def test_a_checkpoint_with_nan_weights_is_refused_by_export_and_validate(
    tmp_path, nan_checkpoint, tiny_onnx, tiny_dev_csv
):
    export = run_cli("export", nan_checkpoint, "--output", tmp_path / "onnx")
    assert export.exit_code == 1 and "holds weights that are not finite numbers" in export.output
    assert not (tmp_path / "onnx").exists()
    validate = run_cli("validate", "--model", nan_checkpoint, "--onnx", tiny_onnx, "--data", tiny_dev_csv)
    assert validate.exit_code == 1 and "its training diverged" in validate.output


def test_an_onnx_file_answering_nan_fails_validation(tmp_path, tiny_checkpoint, tiny_onnx, tiny_dev_csv):
    import shutil

    broken = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, broken)
    for extra in ("model_optimized.onnx", "model_quantized.onnx"):
        (broken / extra).unlink(missing_ok=True)
    model = onnx.load(str(broken / "model.onnx"))
    for initializer in model.graph.initializer:
        if "classifier" in initializer.name and len(initializer.dims) == 1:  # the bias: every logit of label 0
            values = numpy_helper.to_array(initializer).copy()
            values[0] = np.nan
            initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
    onnx.save(model, str(broken / "model.onnx"))
    result = run_cli(
        "validate",
        "--model",
        tiny_checkpoint,
        "--onnx",
        broken,
        "--data",
        tiny_dev_csv,
        "--json",
        tmp_path / "new" / "folder" / "report.json",
    )
    assert result.exit_code == 1
    assert "model.onnx gave outputs that are not finite numbers (NaN or inf)" in result.output
    assert "finite outputs)" in result.output  # the gate column says why
    report = artifacts.read_json(tmp_path / "new" / "folder" / "report.json")  # --json made its folder
    assert "finite_outputs" in report["variants"][0]["failed_on"]


# -- paths that are not what they seem, and a full disk ------------------------------------


def test_an_output_that_is_a_symbolic_link_is_refused_and_left_alone(tmp_path, tiny_checkpoint):
    target = tmp_path / "real"
    target.mkdir()
    for link, points_to in ((tmp_path / "link", target), (tmp_path / "loop", tmp_path / "loop")):
        link.symlink_to(points_to)
        result = run_cli("export", tiny_checkpoint, "--output", link)
        assert result.exit_code == 1 and "is a symbolic link; give the directory" in result.output
        assert link.is_symlink()
    assert list(target.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_gives_one_sentence_and_no_output(tmp_path, tiny_checkpoint):
    def small_disk():  # writes past 64 kB fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    output = tmp_path / "onnx"
    result = subprocess.run(
        [sys.executable, "-m", "nlu_deploy", "export", str(tiny_checkpoint), "--output", str(output)],
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "Error: the disk is full" in result.stderr and "File too large" in result.stderr
    assert not output.exists() and not list(tmp_path.glob(".onnx*"))
