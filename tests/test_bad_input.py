"""The bad-input matrix: every user mistake through the real CLI gets one sentence naming the
problem, a non-zero exit, no traceback, and leaves no output directory behind."""

import shutil

import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from nlu_deploy import artifacts
from nlu_deploy.cli import main

TINY = ["--epochs", "1", "--batch-size", "8", "--max-length", "32"]


def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def odd_input_onnx(directory, tiny_onnx):
    """A valid ONNX model whose only input is named pixel_values."""
    shutil.copytree(tiny_onnx, directory)
    for file in directory.glob("*.onnx"):
        file.unlink()
    node = helper.make_node("Identity", ["pixel_values"], ["logits"])
    graph = helper.make_graph(
        [node],
        "odd",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.save(model, str(directory / "model.onnx"))
    return directory


def corrupt_onnx(directory, tiny_onnx):
    shutil.copytree(tiny_onnx, directory)
    write(directory / artifacts.ONNX_FP32, b"\x08\x07 this is not a protobuf")
    return directory


def pickle_only_model(directory, tiny_encoder):
    from transformers import AutoModel

    shutil.copytree(tiny_encoder, directory)
    (directory / "model.safetensors").unlink()
    torch.save(AutoModel.from_pretrained(tiny_encoder).state_dict(), directory / "pytorch_model.bin")
    return directory


# (case id, arguments built from the fixtures, expected exit code, expected message)
CASES = [
    ("missing file", lambda f: ["finetune", "--train", f.tmp / "nope.csv"], 1, "nope.csv does not exist"),
    ("directory as file", lambda f: ["finetune", "--train", f.tmp], 1, "is a directory, not a data file"),
    ("wrong format", lambda f: ["finetune", "--train", write(f.tmp / "d.xlsx", "x")], 1, "unsupported file type .xlsx"),
    ("empty file", lambda f: ["finetune", "--train", write(f.tmp / "d.csv", "")], 1, "d.csv is empty"),
    ("header only", lambda f: ["finetune", "--train", write(f.tmp / "d.csv", "text,label\n")], 1, "holds no examples"),
    (
        "missing column",
        lambda f: ["finetune", "--model", f.encoder, "--train", f.train, "--text-column", "utterance"],
        1,
        "has no column 'utterance' (columns: text, label)",
    ),
    (
        "malformed JSON line",
        lambda f: ["finetune", "--train", write(f.tmp / "d.jsonl", '{"text": "a", "label": "x"}\n{oops\n')],
        1,
        "d.jsonl line 2 is not valid JSON",
    ),
    (
        "malformed CSV row",
        lambda f: ["finetune", "--train", write(f.tmp / "d.csv", "text,label\na,x\nb,y,z\n")],
        1,
        "d.csv line 3: expected 2 fields like the header, found 3",
    ),
    (
        "non-UTF-8",
        lambda f: ["finetune", "--train", write(f.tmp / "d.csv", "text,label\nca\xe9,x\n".encode("latin-1"))],
        1,
        "is not UTF-8 text (invalid byte at line 2)",
    ),
    (
        "single class",
        lambda f: ["finetune", "--train", write(f.tmp / "d.csv", "text,label\na,x\nb,x\nc,x\n")],
        1,
        "d.csv has a single label ('x'); a classifier needs at least two.",
    ),
    ("zero epochs", lambda f: ["finetune", "--epochs", "0"], 2, "epochs must be greater than zero"),
    ("negative epochs", lambda f: ["finetune", "--epochs", "-2"], 2, "epochs must be greater than zero"),
    ("zero batch size", lambda f: ["finetune", "--batch-size", "0"], 2, "batch size must be greater than zero"),
    (
        "fp16 training on CPU",
        lambda f: ["finetune", "--device", "cpu", "--precision", "fp16"],
        2,
        "fp16 training needs CUDA",
    ),
    (
        "max length beyond BERT",
        lambda f: ["finetune", "--max-length", "4096"],
        2,
        "beyond what BERT-family encoders support",
    ),
    (
        "max length beyond this model",
        lambda f: ["finetune", "--model", f.encoder, "--train", f.train, "--max-length", "256"],
        2,
        "beyond this model's limit of 128 positions",
    ),
    (
        "not a model directory",
        lambda f: ["finetune", "--model", f.tmp, "--train", f.train],
        1,
        "is not a model directory (it has no config.json)",
    ),
    (
        "pickle weights",
        lambda f: ["finetune", "--model", pickle_only_model(f.tmp / "bin-model", f.encoder), "--train", f.train],
        1,
        "only pickle weights (.bin/.pt), which can run code",
    ),
    ("export of a non-model", lambda f: ["export", f.tmp], 1, "is not a model checkpoint"),
    (
        "corrupt ONNX in validate",
        lambda f: [
            "validate",
            "--model",
            f.checkpoint,
            "--onnx",
            corrupt_onnx(f.tmp / "bad-onnx", f.onnx),
            "--data",
            f.dev,
        ],
        1,
        "model.onnx is not a valid ONNX model",
    ),
    (
        "corrupt ONNX in predict",
        lambda f: ["predict", corrupt_onnx(f.tmp / "bad-onnx", f.onnx), "--variant", "fp32", "hello"],
        1,
        "is not a valid ONNX model",
    ),
    (
        "ONNX inputs we do not produce",
        lambda f: ["predict", odd_input_onnx(f.tmp / "odd", f.onnx), "hello"],
        1,
        "expects inputs this tool does not produce: pixel_values",
    ),
    ("ONNX directory without ONNX", lambda f: ["bench", f.checkpoint], 1, "holds no .onnx files"),
    (
        "validate column missing",
        lambda f: ["validate", "--model", f.checkpoint, "--onnx", f.onnx, "--data", f.dev, "--label-column", "intent"],
        1,
        "has no column 'intent'",
    ),
]


def non_empty(directory):
    directory.mkdir()
    (directory / "keep.txt").write_text("a user's file")
    return directory


def symlink_loop(path):
    path.symlink_to(path)
    return path


def without_tokenizer(directory, tiny_onnx):
    shutil.copytree(tiny_onnx, directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (directory / name).unlink(missing_ok=True)
    return directory


# Hardening, round two (issue 25): names that would escape, numbers that are not numbers, paths
# that are not what they seem. Each is refused before anything is written.
HARDENING_CASES = [
    *[
        (
            f"Triton name {name!r}",
            lambda f, name=name: ["export", f.checkpoint, "--triton", f.tmp / "repo", "--triton-name", name],
            2,
            "cannot name a Triton model",
        )
        for name in ("../x", "a/b", 'a"b', "a\nb", "", ".hidden", "a..b")
    ],
    (
        "non-empty Triton repository",
        lambda f: ["export", f.checkpoint, "--triton", non_empty(f.tmp / "repo")],
        1,
        "repo already exists and is not empty",
    ),
    *[
        (
            f"--{option} {value}",
            lambda f, option=option, value=value: ["finetune", f"--{option}", value],
            2,
            f"--{option} must be a finite number",
        )
        for option, value in (
            ("lr", "inf"),
            ("lr", "nan"),
            ("weight-decay", "nan"),
            ("warmup-ratio", "inf"),
            ("label-smoothing", "nan"),
            ("slot-loss-weight", "-inf"),
            ("oos-recall", "nan"),
        )
    ],
    (
        "negative weight decay",
        lambda f: ["finetune", "--weight-decay", "-0.1"],
        2,
        "--weight-decay must not be negative",
    ),
    (
        "validate --max-score-drop nan",
        lambda f: ["validate", "--model", f.checkpoint, "--onnx", f.onnx, "--data", f.dev, "--max-score-drop", "nan"],
        2,
        "--max-score-drop must be a finite number",
    ),
    (
        "bench --min-seconds inf",
        lambda f: ["bench", f.onnx, "--min-seconds", "inf"],
        2,
        "--min-seconds must be a finite number",
    ),
    (
        "--model a symlink loop",
        lambda f: ["finetune", "--model", symlink_loop(f.tmp / "loop"), "--train", f.train],
        1,
        "is a symbolic link that leads nowhere",
    ),
    (
        "--model a missing path",
        lambda f: ["finetune", "--model", f"{f.tmp}/nowhere", "--train", f.train],
        1,
        "nowhere does not exist",
    ),
    (
        "--output under a file",
        lambda f: ["export", f.checkpoint, "--output", write(f.tmp / "a-file", "x") / "sub"],
        1,
        "is not a writable directory",
    ),
    (
        "predict without tokenizer files",
        lambda f: ["predict", without_tokenizer(f.tmp / "bare", f.onnx), "hello"],
        1,
        "has no tokenizer files",
    ),
]

GPU_CASES = [
    (
        "CUDA for training",
        lambda f: ["finetune", "--device", "cuda"],
        1,
        "CUDA was asked for but no CUDA device is available",
    ),
    (
        "CUDA for ONNX",
        lambda f: ["bench", f.onnx, "--provider", "cuda", "--batch-sizes", "1", "--seq-lens", "8"],
        1,
        "cuda was asked for but",
    ),
    (
        "TensorRT for ONNX",
        lambda f: ["bench", f.onnx, "--provider", "tensorrt", "--batch-sizes", "1", "--seq-lens", "8"],
        1,
        "tensorrt was asked for but",
    ),
    ("CUDA for predict", lambda f: ["predict", f.onnx, "--provider", "cuda", "hello"], 1, "cuda was asked for but"),
    (
        "CUDA for validate",
        lambda f: ["validate", "--model", f.checkpoint, "--onnx", f.onnx, "--data", f.dev, "--provider", "cuda"],
        1,
        "cuda was asked for but",
    ),
    (
        "TensorRT for predict",
        lambda f: ["predict", f.onnx, "--provider", "tensorrt", "hello"],
        1,
        "tensorrt was asked for but",
    ),
]


def serve_bench(f, *arguments):
    return ["serve-bench", f.onnx, "--data", f.dev, "--output", f.tmp / "output", *arguments]


# Hardening, round three (issue 34): every error names the option the user typed, and an option
# that cannot apply is refused, not ignored; usage errors show the command's own usage line.
ROUND_THREE_CASES = [
    ("serve-bench --duration inf", lambda f: serve_bench(f, "--duration", "inf"), 2, "--duration must be a finite"),
    ("serve-bench --warmup nan", lambda f: serve_bench(f, "--warmup", "nan"), 2, "--warmup must be a finite number"),
    ("serve-bench --timeout 0", lambda f: serve_bench(f, "--timeout", "0"), 2, "--timeout must be greater than zero"),
    ("serve-bench --warmup -1", lambda f: serve_bench(f, "--warmup", "-1"), 2, "--warmup must not be negative"),
    (
        "finetune --search-time nan",
        lambda f: ["finetune", "--search", "2", "--search-time", "nan"],
        2,
        "--search-time must be a finite number",
    ),
    ("--concurrency 1,,2", lambda f: serve_bench(f, "--concurrency", "1,,2"), 2, "'1,,2' has an empty item"),
    ("--concurrency 1,2,", lambda f: serve_bench(f, "--concurrency", "1,2,"), 2, "'1,2,' has an empty item"),
    ("--rates nan", lambda f: serve_bench(f, "--rates", "nan"), 2, "expected positive finite numbers"),
    (
        "--triton-openvino-variant without --triton",
        lambda f: ["export", f.checkpoint, "--openvino", "--triton-openvino-variant", "openvino-int8"],
        2,
        "--triton-openvino-variant describe the Triton repository: add --triton REPO",
    ),
    (
        "--triton-name without --triton",
        lambda f: ["export", f.checkpoint, "--triton-name", "intents"],
        2,
        "--triton-name describe the Triton repository",
    ),
    (
        "--triton-openvino-variant without the OpenVINO backend",
        lambda f: ["export", f.checkpoint, "--triton", f.tmp / "repo", "--triton-openvino-variant", "openvino-int8"],
        2,
        "--triton-openvino-variant chooses what --triton-backend openvino serves",
    ),
    (
        "serve-bench with missing --data",
        lambda f: ["serve-bench", f.onnx, "--data", f.tmp / "nope.csv", "--output", f.tmp / "output"],
        1,
        "nope.csv is not a file",
    ),
]


class Fixtures:
    def __init__(self, tmp, encoder, train, dev, checkpoint, onnx_dir):
        self.tmp, self.encoder, self.train, self.dev = tmp, encoder, train, dev
        self.checkpoint, self.onnx = checkpoint, onnx_dir


def check_case(fixtures, build, exit_code, message):
    output = fixtures.tmp / "output"
    args = [str(a) for a in build(fixtures)]
    if args[0] in ("finetune", "export") and "--output" not in args:
        args += ["--output", str(output)]
    if args[0] == "finetune":  # keep accidental real trainings tiny: fill in what the case left out
        for flag, value in zip(TINY[::2], TINY[1::2]):
            if flag not in args:
                args += [flag, value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not output.exists()
    assert not list(fixtures.tmp.glob(".output*"))


@pytest.fixture
def fixtures(tmp_path, tiny_encoder, tiny_train_csv, tiny_dev_csv, tiny_checkpoint, tiny_onnx):
    return Fixtures(tmp_path, tiny_encoder, tiny_train_csv, tiny_dev_csv, tiny_checkpoint, tiny_onnx)


@pytest.mark.parametrize("case, build, exit_code, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(fixtures, case, build, exit_code, message):
    check_case(fixtures, build, exit_code, message)


@pytest.mark.parametrize("case, build, exit_code, message", HARDENING_CASES, ids=[c[0] for c in HARDENING_CASES])
def test_hardening(fixtures, case, build, exit_code, message):
    check_case(fixtures, build, exit_code, message)
    assert not (fixtures.tmp / "repo" / "keep.txt").exists() or list((fixtures.tmp / "repo").iterdir()) == [
        fixtures.tmp / "repo" / "keep.txt"
    ]  # a user's repository is left as it was
    assert not (fixtures.tmp / "x").exists()  # nothing climbed out of the repository


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU errors; this machine has a GPU")
@pytest.mark.parametrize("case, build, exit_code, message", GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_accelerator_asked_for_but_absent(fixtures, case, build, exit_code, message):
    check_case(fixtures, build, exit_code, message)


def test_pickle_weights_load_when_explicitly_allowed(fixtures):
    model = pickle_only_model(fixtures.tmp / "bin-model", fixtures.encoder)
    result = CliRunner().invoke(
        main,
        [
            "finetune",
            "--model",
            str(model),
            "--train",
            str(fixtures.train),
            "--allow-pickle",
            *TINY,
            "--output",
            str(fixtures.tmp / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (fixtures.tmp / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("case, build, exit_code, message", ROUND_THREE_CASES, ids=[c[0] for c in ROUND_THREE_CASES])
def test_round_three(fixtures, case, build, exit_code, message):
    check_case(fixtures, build, exit_code, message)
    if exit_code == 2:  # the command's own usage line, not the group's
        command = build(fixtures)[0]
        result = CliRunner().invoke(main, [str(a) for a in build(fixtures)], prog_name="nlu-deploy")
        assert f"Usage: nlu-deploy {command} [OPTIONS]" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU errors; this machine has a GPU")
@pytest.mark.parametrize("command", [["predict", "{onnx}", "--provider", "tensorrt", "hello"],
                                     ["validate", "--model", "{checkpoint}", "--onnx", "{onnx}", "--data", "{dev}",
                                      "--provider", "cuda"]])  # fmt: skip
def test_a_missing_accelerator_is_not_answered_with_an_option_the_command_lacks(fixtures, command):
    values = {"onnx": fixtures.onnx, "checkpoint": fixtures.checkpoint, "dev": fixtures.dev}
    result = CliRunner().invoke(main, [part.format(**values) for part in command])
    assert result.exit_code == 1 and "--fallback" not in result.output
    assert "use --provider cpu to run on CPU" in result.output
