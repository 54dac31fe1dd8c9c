"""SIGTERM and Ctrl-C reach every long command as ordinary events: it unwinds, keeps what it
measured or finished, leaves no staging folder, lock or child process, and exits 128 + the
signal's number with one sentence. (serve-bench's own cases, with a real tritonserver, are in
test_serve_bench.py; a training's "save, then stop" in test_resume.py.)

Real signals throughout: in a child process for the commands that print a line to wait for, and
sent by the process to itself from inside the stage for the others (deterministic timing)."""

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nlu_deploy.cli import main

TINY = ["--epochs", "1", "--batch-size", "8", "--max-length", "32"]


def start(*arguments) -> subprocess.Popen:
    command = [sys.executable, "-m", "nlu_deploy", *map(str, arguments)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_at(process: subprocess.Popen, marker: str, stop_signal: int) -> str:
    """Send the signal once the command has printed `marker`; what it printed in all."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            process.send_signal(stop_signal)
            break
    rest, _ = process.communicate(timeout=120)
    return "".join(seen) + rest


def leftovers(folder) -> list[str]:
    """Staging folders and locks beside an output."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_bench_keeps_the_shapes_it_measured(tmp_path, tiny_onnx, stop_signal):
    report = tmp_path / "bench.json"
    process = start("bench", tiny_onnx, "--batch-sizes", "1,2,4,8,16,32", "--seq-lens", "8,16,32",
                    "--min-seconds", "0.5", "--json", report)  # fmt: skip
    printed = stop_at(process, "batch   1 seq    8", stop_signal)
    assert process.returncode == 128 + stop_signal, printed
    name = signal.Signals(stop_signal).name
    assert f"Error: nlu-deploy bench was stopped by {name}; the " in printed and f"are in {report}" in printed
    assert "Traceback" not in printed and "INCOMPLETE" in printed
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["stopped"] == name
    assert 1 <= len({(m["batch_size"], m["seq_len"]) for m in data["measurements"]}) < 18


def test_a_run_stopped_after_its_fine_tune_keeps_the_stages_it_finished(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "run"
    process = start("run", "--model", tiny_encoder, "--train", tiny_train_csv, *TINY, "--recipe", "fixed",
                    "--batch-sizes", "1,2,4,8,16,32", "--seq-lens", "8,16,32,64", "--min-seconds", "1",
                    "--output", output)  # fmt: skip
    printed = stop_at(process, "[4/4]", signal.SIGTERM)
    assert process.returncode == 143, printed
    assert f"stopped by SIGTERM; the stages it finished (finetune, export, validate) are in {output}" in printed
    assert (output / "checkpoint" / "model.safetensors").exists() and (output / "onnx" / "model.onnx").exists()
    assert "INCOMPLETE: stopped by SIGTERM" in (output / "report.md").read_text()
    assert not (output / "report.json").exists() and leftovers(tmp_path) == []


def test_a_run_stopped_during_its_fine_tune_keeps_nothing_and_says_so(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "run"
    process = start("run", "--model", tiny_encoder, "--train", tiny_train_csv, "--epochs", "50", "--batch-size", "8",
                    "--max-length", "32", "--output", output)  # fmt: skip
    printed = stop_at(process, "epoch 1/50", signal.SIGINT)
    assert process.returncode == 130, printed
    assert "nlu-deploy run was stopped by SIGINT; nothing was kept: run has no --resume" in printed
    assert "Traceback" not in printed and not output.exists() and leftovers(tmp_path) == []


def signal_self_during(monkeypatch, module, name: str, stop_signal: int) -> None:
    """`module.name` sends the signal to this process, then does its work: a stop mid-stage."""
    original = getattr(module, name)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), stop_signal)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_export_leaves_nothing(monkeypatch, tmp_path, tiny_checkpoint, stop_signal):
    from nlu_deploy.export import onnx_export

    signal_self_during(monkeypatch, onnx_export, "optimize_graph", stop_signal)
    output = tmp_path / "onnx"
    result = CliRunner().invoke(main, ["export", str(tiny_checkpoint), "--output", str(output), "--optimize", "O2"])
    assert result.exit_code == 128 + stop_signal, result.output
    name = signal.Signals(stop_signal).name
    assert f"nlu-deploy export was stopped by {name}; nothing half-written was kept." in result.output
    assert not output.exists() and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's handlers are gone with it


def test_a_stopped_validate_writes_no_report(monkeypatch, tmp_path, tiny_checkpoint, tiny_onnx, tiny_dev_csv):
    import shutil

    from nlu_deploy.evaluation import validate

    onnx_dir = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, onnx_dir)
    (onnx_dir / "validation.json").unlink(missing_ok=True)
    signal_self_during(monkeypatch, validate, "default_columns", signal.SIGTERM)
    arguments = ["validate", "--model", str(tiny_checkpoint), "--onnx", str(onnx_dir), "--data", str(tiny_dev_csv)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 143 and "nlu-deploy validate was stopped by SIGTERM" in result.output
    assert not (onnx_dir / "validation.json").exists()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_finetune_saves_its_state_and_says_how_to_resume(tmp_path, tiny_encoder, tiny_train_csv, stop_signal):
    output = tmp_path / "tuned"
    process = start("finetune", "--model", tiny_encoder, "--train", tiny_train_csv, "--epochs", "50", "--batch-size",
                    "8", "--max-length", "32", "--output", output)  # fmt: skip
    printed = stop_at(process, "epoch 1/50", stop_signal)
    assert process.returncode == 128 + stop_signal, printed
    assert f"training stopped by {signal.Signals(stop_signal).name}" in printed and "--resume" in printed
    assert (tmp_path / ".tuned.training" / "training_state.pt").exists() and not output.exists()
    assert "Traceback" not in printed
