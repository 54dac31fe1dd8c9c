"""Every model family through every stage, on tiny random models built from each family's config
with a tokenizer of its own kind (tests/family_models.py; nothing is downloaded).

Per family, one joint model (intents and slots from one encoder, so both the text and the word
paths are covered) is fine-tuned, exported to every variant the family can have, checked
against PyTorch at two sequence lengths, validated, and asked through predict without torch;
Hugging Face's own heads (text and token classification) are fine-tuned and exported too.
A real tritonserver serves one encoder and one decoder family under serve-bench.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TORCH_FREE_CLI
from family_models import build_family_model

from nlu_deploy.cli import main
from nlu_deploy.config import ExportConfig, FinetuneConfig
from nlu_deploy.data.demo import generate_demo_examples
from nlu_deploy.errors import ModelError
from nlu_deploy.export.onnx_export import export
from nlu_deploy.runtime.model_families import family_of
from nlu_deploy.tasks import onnx_backend, task_of, torch_backend
from nlu_deploy.training.loop import finetune

# the families issue 32 asked for (RoBERTa's byte-level tokenizer is covered by GPT-2's and ModernBERT's)
FAMILY_NAMES = ("albert", "camembert", "deberta-v2", "gpt2", "modernbert", "qwen2")
SHORT_TEXTS = ["play jazz", "wake me up", "lights off"]
LONG_TEXTS = [
    "please set an alarm for seven in the morning tomorrow and then play some relaxing jazz in the "
    "kitchen while i make breakfast for the whole family before we leave for the airport",
]
PREDICT_TEXTS = ["wake me up at seven tomorrow", "play some jazz in the kitchen, please"]


def _chain(
    tmp_path_factory, family: str, task: str, train: Path, epochs: int = 4, **export_options
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp(f"{family}-{task}")
    base = build_family_model(family, root / "base")
    checkpoint = root / "checkpoint"
    finetune(
        FinetuneConfig(
            output=checkpoint, model=str(base), train=train, task=task, epochs=epochs, batch_size=8, lr=5e-3,
            max_length=48,
        ),
        show_progress=False,
    )  # fmt: skip
    onnx_dir = root / "onnx"
    export(ExportConfig(model_dir=checkpoint, output=onnx_dir, **export_options))
    return checkpoint, onnx_dir


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family_joint(request, tmp_path_factory, tiny_joint_train):
    """(family, checkpoint, export directory) of a joint model, exported with every variant."""
    checkpoint, onnx_dir = _chain(
        tmp_path_factory, request.param, "joint", tiny_joint_train, optimize="O2", quantize="dynamic", openvino=True
    )
    return request.param, checkpoint, onnx_dir


def _outputs(task, backend, texts):
    return task.infer(backend, task.examples_from_texts(texts)).outputs


def test_the_export_matches_pytorch_at_two_lengths_and_names_what_the_family_cannot_have(family_joint):
    family, checkpoint, onnx_dir = family_joint
    task = task_of(checkpoint)
    model = task.load_model(checkpoint)
    from nlu_deploy.runtime.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(checkpoint))
    for texts in (SHORT_TEXTS, LONG_TEXTS, SHORT_TEXTS + LONG_TEXTS):  # short, long, and both padded together
        reference = _outputs(task, torch_backend(model, tokenizer, 48), texts)
        exported = _outputs(task, onnx_backend(onnx_dir / "model.onnx", tokenizer, model.config, 48), texts)
        for name in reference:
            np.testing.assert_allclose(exported[name], reference[name], atol=1e-4, err_msg=f"{family} {name}")
    manifest = json.loads((onnx_dir / "nlu_deploy.json").read_text())
    entry = family_of(model.config)
    assert manifest["family"] == entry.name
    # what the family has is written and checked; what it cannot have is named, with the reason
    assert ("optimized" in manifest["files"]) == (entry.optimizer is not None)
    assert ("optimized" in manifest["skipped"]) == (entry.optimizer is None)
    assert {"fp32", "int8"} <= set(manifest["files"])
    for variant in ("openvino-f32", "openvino-int8"):
        assert (variant in manifest["files"]) != (variant in manifest["skipped"])
    for variant, why in manifest["skipped"].items():
        assert why and variant not in manifest["files"]
    for variant in ("fp32", "optimized", "openvino-f32"):
        if variant in manifest["files"]:
            assert manifest["max_abs_logit_diff"][variant] < 1e-4, variant


def _word_aligned(text: str, entity: dict) -> bool:
    start, end = entity["start"], entity["end"]
    return (
        text[start:end] == entity["text"]
        and (start == 0 or text[start - 1] == " ")
        and (end == len(text) or text[end] in " ,.")
    )


def test_validate_passes_and_predict_without_torch_gives_word_aligned_entities(family_joint, tiny_joint_dev):
    family, checkpoint, onnx_dir = family_joint
    report = onnx_dir.parent / "validation.json"
    result = CliRunner().invoke(
        main, ["validate", "--model", str(checkpoint), "--onnx", str(onnx_dir), "--data", str(tiny_joint_dev),
               "--json", str(report)],
    )  # fmt: skip
    variants = {v["variant"]: v for v in json.loads(report.read_text())["variants"]}
    assert variants["fp32"]["passed"], result.output
    arguments = ["predict", str(onnx_dir), "--variant", "model.onnx", "--json", *PREDICT_TEXTS]
    light = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_CLI, *arguments], capture_output=True, text=True, timeout=60
    )
    assert light.returncode == 0, light.stderr
    predictions = [json.loads(line) for line in light.stdout.splitlines()]
    entities = [(p["text"], e) for p in predictions for e in p["entities"]]
    assert entities, f"the {family} joint model finds entities in {PREDICT_TEXTS}"
    assert all(_word_aligned(text, entity) for text, entity in entities), entities
    assert light.stdout.splitlines() == [
        line for line in CliRunner().invoke(main, arguments).output.splitlines() if line.startswith("{")
    ]


# ALBERT and CamemBERT are exported by Optimum as BERT and RoBERTa are (their joint models above go
# through every stage): the heads are checked where Optimum's path differs
@pytest.mark.parametrize("family", ["deberta-v2", "modernbert", "gpt2", "qwen2"])
def test_hugging_face_heads_export_with_parity(tmp_path_factory, family, tiny_train_csv, tiny_tagged_train):
    """Text classification (a decoder's head pools its last real token, found from the pad
    token) with an fp16 file, and token classification with a static int8 file, each exported
    and checked against PyTorch."""
    runs = (
        ("text-classification", tiny_train_csv, "fp16"),  # kept in fp32 where fp16 loses accuracy
        ("token-classification", tiny_tagged_train, "static"),  # QDQ int8 calibrated on training texts
    )
    for task, train, quantize in runs:
        checkpoint, onnx_dir = _chain(tmp_path_factory, family, task, train, epochs=2, quantize=quantize)
        manifest = json.loads((onnx_dir / "nlu_deploy.json").read_text())
        assert manifest["max_abs_logit_diff"]["fp32"] < 1e-4, (family, task)
        # written and compared with PyTorch; whether it keeps the accuracy is validate's gate
        written = "fp16" if quantize == "fp16" else "int8"
        assert np.isfinite(manifest["max_abs_logit_diff"][written]), (family, task, manifest["max_abs_logit_diff"])
        config = json.loads((checkpoint / "config.json").read_text())
        tokenizer_config = json.loads((checkpoint / "tokenizer_config.json").read_text())
        if family_of(config).decoder:  # the head and the tokenizer agree on the pad token
            assert config["pad_token_id"] is not None
            assert tokenizer_config["pad_token"] is not None


def test_a_config_that_would_run_its_own_code_is_refused_naming_the_code(tmp_path, tiny_encoder, tiny_train_csv):
    import shutil

    source = tmp_path / "jina-like"
    shutil.copytree(tiny_encoder, source)
    config = json.loads((source / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "someone/jina-bert-implementation--modeling_bert.JinaBertModel"}
    (source / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(
        main, ["finetune", "--model", str(source), "--train", str(tiny_train_csv), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "asks to run its own code (modeling_bert.py" in result.output and "--trust-remote-code" in result.output
    assert not (tmp_path / "o").exists()


def test_a_family_without_an_entry_is_refused_naming_the_supported_ones(tmp_path, tiny_train_csv):
    from transformers import T5Config, T5EncoderModel

    source = tmp_path / "t5"
    T5EncoderModel(T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(source)
    with pytest.raises(ModelError, match=r"is a 't5' model; nlu-deploy handles the families .*deberta-v2.*gpt2"):
        finetune(FinetuneConfig(output=tmp_path / "out", model=str(source), train=tiny_train_csv), show_progress=False)


def test_split_words_are_read_as_words_after_a_space_in_byte_level_families(tmp_path):
    """The saved tokenizer reads a word handed over alone exactly as inside running text, in
    transformers and in the torch-free tokenizer predict and Triton use."""
    from nlu_deploy.portable.light_tokenizer import LightTokenizer
    from nlu_deploy.runtime.model_families import fit_tokenizer
    from nlu_deploy.runtime.modeling import load_tokenizer

    words = ["wake", "me", "up", "at", "seven,", "it's", "7:30"]
    for family in ("gpt2", "qwen2", "modernbert", "deberta-v2"):
        base = build_family_model(family, tmp_path / family, [e["text"] for e in generate_demo_examples()])
        tokenizer = load_tokenizer(str(base))
        fit_tokenizer(tokenizer, json.loads((base / "config.json").read_text()))
        tokenizer.save_pretrained(tmp_path / f"{family}-fitted")
        light = LightTokenizer(tmp_path / f"{family}-fitted")
        split = tokenizer([words], is_split_into_words=True)
        running = tokenizer([" ".join(words)])
        assert split["input_ids"] == running["input_ids"], family
        assert light([words], is_split_into_words=True)["input_ids"] == split["input_ids"], family
        assert light(words).word_ids(0) is not None and light.pad_token_id is not None, family


def test_distill_keeps_fewer_layers_or_says_why_it_cannot(family_joint, tmp_path):
    family, checkpoint, _ = family_joint
    student = tmp_path / "student"
    result = CliRunner().invoke(
        main, ["distill", str(checkpoint), "--layers", "1", "--epochs", "1", "--output", str(student)]
    )
    entry = family_of(json.loads((checkpoint / "config.json").read_text()))
    if entry.layers_fixed:
        assert result.exit_code == 1 and "whose layers cannot be dropped" in result.output
        assert not student.exists()
        return
    assert result.exit_code == 0, result.output
    assert json.loads((student / "config.json").read_text()).get("num_hidden_layers", 1) == 1
    exported = CliRunner().invoke(main, ["export", str(student), "--output", str(tmp_path / "student-onnx")])
    assert exported.exit_code == 0, exported.output


SERVED_FAMILIES = ("deberta-v2", "qwen2")  # an encoder without OpenVINO, and a decoder; a server start costs seconds


def test_a_real_tritonserver_serves_the_family_with_every_answer_checked(family_joint, tmp_path, tiny_joint_dev):
    family, _, onnx_dir = family_joint
    if family not in SERVED_FAMILIES:
        pytest.skip(f"served under load: {', '.join(SERVED_FAMILIES)} (the repository code is the same for all)")
    pytest.importorskip("tritonclient.http.aio", reason="tritonclient[http] is a test dependency")
    output = tmp_path / "served"
    result = CliRunner().invoke(
        main, ["serve-bench", str(onnx_dir), "--data", str(tiny_joint_dev), "--output", str(output), "--variant",
               "model.onnx", "--concurrency", "2", "--warmup", "0.3", "--duration", "1.5", "--timeout", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [configuration] = json.loads((output / "serve-bench.json").read_text())["configurations"]
    [level] = configuration["levels"]
    assert level["answered"] > 0 and level["errors"] == level["timeouts"] == 0
    assert level["wrong_answers"] == 0 and level["checked"] >= level["answered"]
