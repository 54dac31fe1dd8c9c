"""Two training processes on CPU (torchrun, gloo) against one: same data, same global batch."""

import subprocess
import sys

import pytest

from nlu_deploy import artifacts

TINY = ["--epochs", "6", "--batch-size", "8", "--lr", "5e-3", "--max-length", "32", "--seed", "11"]
# Two processes see the data in another order and draw other dropout masks than one process,
# so the runs are not bit-identical; on this task both must land within two examples (of 24).
TOLERANCE = 2 / 24
# A process that dies leaves the other waiting in a collective for gloo's 30 minutes: fail sooner.
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_encoder, tiny_train_csv) -> dict:
    """The metrics of the same fine-tune in one process: what every distributed run is held to."""
    output = tmp_path_factory.mktemp("one-process") / "single"
    common = ["--model", str(tiny_encoder), "--train", str(tiny_train_csv), *TINY]
    single = subprocess.run(
        [sys.executable, "-m", "nlu_deploy", "finetune", *common, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert single.returncode == 0, single.stderr
    return artifacts.read_json(output / "metrics.json")


def test_two_processes_match_one_within_tolerance(tmp_path, tiny_encoder, tiny_train_csv, one_process):
    common = ["--model", str(tiny_encoder), "--train", str(tiny_train_csv), *TINY]
    double = subprocess.run(
        [sys.executable, "-m", "nlu_deploy", "finetune", *common, "--nproc", "2", "--output", str(tmp_path / "double")],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert "torch.distributed.run" in double.stderr
    one, two = one_process, artifacts.read_json(tmp_path / "double" / "metrics.json")
    assert one["processes"] == 1 and two["processes"] == 2
    assert two["validation_examples"] == one["validation_examples"] == 24
    assert abs(two["best"]["accuracy"] - one["best"]["accuracy"]) <= TOLERANCE + 1e-9
    assert two["best"]["accuracy"] >= 0.9
    # one output only: the main process wrote it, the other wrote nothing beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["double"]
    assert (tmp_path / "double" / "model.safetensors").exists()


def test_two_process_tagger_scores_every_held_out_entity(tmp_path, tiny_encoder, tiny_tagged_train):
    """Each process scores its slice of sentences; the gathered words must rebuild every sentence."""
    from nlu_deploy.data.tagged import load_tagged_sentences
    from nlu_deploy.metrics import entity_scores

    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlu_deploy",
            "finetune",
            "--task",
            "token-classification",
            "--model",
            str(tiny_encoder),
            "--train",
            str(tiny_tagged_train),
            TINY[0],
            "1",
            *TINY[2:],
            "--nproc",
            "2",
            "--output",
            str(tmp_path / "tagger"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    metrics = artifacts.read_json(tmp_path / "tagger" / "metrics.json")
    held_out = load_tagged_sentences(tmp_path / "tagger" / artifacts.VALIDATION_SPLIT)
    assert metrics["processes"] == 2 and metrics["validation_examples"] == len(held_out) == 50
    assert metrics["best"]["entities"] == entity_scores(held_out.tags, held_out.tags)["entities"]


def test_two_process_distillation_writes_one_student(tmp_path, tiny_checkpoint):
    """distill --nproc 2: both processes run the teacher on their share of each batch; one student."""
    output = tmp_path / "student"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlu_deploy",
            "distill",
            str(tiny_checkpoint),
            "--layers",
            "1",
            "--epochs",
            "2",
            "--nproc",
            "2",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch.distributed.run" in run.stderr
    metrics = artifacts.read_json(output / "metrics.json")
    assert metrics["processes"] == 2 and metrics["validation_examples"] == 24
    assert metrics["distillation"]["kl_to_teacher_after"] < metrics["distillation"]["kl_to_teacher_before"]
    assert artifacts.read_json(output / "config.json")["num_hidden_layers"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]


def test_a_search_under_torchrun_runs_each_trial_with_both_processes(tmp_path, tiny_encoder, tiny_train_csv):
    """finetune --search 3 --nproc 2: no nested launches; the trials run one after another, each a
    two-process fine-tune; the main process alone keeps the study, the log and the one output."""
    output = tmp_path / "tuned"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlu_deploy",
            "finetune",
            "--model",
            str(tiny_encoder),
            "--train",
            str(tiny_train_csv),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--max-length",
            "32",
            "--search",
            "3",
            "--nproc",
            "2",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("torch.distributed.run") == 1  # one launch, not one per trial
    report = artifacts.read_json(output / "search_report.json")
    assert len(report["trials"]) == 3
    assert {t["state"] for t in report["trials"]} <= {"COMPLETE", "PRUNED"}
    assert artifacts.read_json(output / "metrics.json")["processes"] == 2
    assert (output / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned", "tuned.search"]


def test_two_nodes_with_c10d_rendezvous_match_one_process(tmp_path, tiny_encoder, tiny_train_csv, one_process):
    """`torchrun --nnodes 2` as two machines would run it: two launchers that find each other by
    c10d rendezvous (here both on localhost, gloo), one process each, one output."""
    import socket

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = ["--model", str(tiny_encoder), "--train", str(tiny_train_csv), *TINY]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
              "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "two-nodes",
              "-m", "nlu_deploy", "finetune", *common, "--output", str(tmp_path / "nodes")]  # fmt: skip
    nodes = [subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outcomes = [node.communicate(timeout=RUN_TIMEOUT_S) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, stderr) in zip(nodes, outcomes):
        assert node.returncode == 0, stderr[-3000:]
    one, two = one_process, artifacts.read_json(tmp_path / "nodes" / "metrics.json")
    assert two["processes"] == 2 and two["validation_examples"] == one["validation_examples"]
    assert abs(two["best"]["accuracy"] - one["best"]["accuracy"]) <= TOLERANCE + 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes"]  # one output, no lock or state left


def _processes_mentioning(text: str) -> list[int]:
    import contextlib
    import os

    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(entry))
    return found


def test_sigterm_to_the_launcher_reaches_the_workers_which_save_their_state(tmp_path, tiny_encoder, tiny_train_csv):
    """A scheduler signals the process it started: the launcher, not torchrun's workers. They must
    still save and stop, and nothing may train on after it."""
    import signal
    import time

    output = tmp_path / "double"
    command = [sys.executable, "-m", "nlu_deploy", "finetune", "--model", str(tiny_encoder), "--train",
               str(tiny_train_csv), "--epochs", "200", "--batch-size", "8", "--max-length", "32", "--nproc", "2",
               "--output", str(output)]  # fmt: skip
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed = []
    for line in launcher.stdout:
        printed.append(line)
        if "epoch 1/200" in line:
            launcher.send_signal(signal.SIGTERM)
            break
    rest, _ = launcher.communicate(timeout=RUN_TIMEOUT_S)
    printed = "".join(printed) + rest
    assert launcher.returncode != 0
    assert "training stopped by SIGTERM" in printed and "--resume" in printed
    assert (tmp_path / ".double.training" / "training_state.pt").exists()
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(output)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_mentioning(str(output)), "a worker trains on after its launcher stopped"
