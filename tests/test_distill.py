"""Distillation: a student with K of the teacher's layers and its heads, trained on the teacher's
soft targets, that the other stages take like any checkpoint."""

import json
import os
import signal

import pytest
import torch
from click.testing import CliRunner

from nlu_deploy import artifacts
from nlu_deploy.cli import main
from nlu_deploy.config import DistillConfig, ExportConfig, ValidateConfig
from nlu_deploy.errors import ConfigError, DataError
from nlu_deploy.evaluation.validate import validate
from nlu_deploy.export.onnx_export import export
from nlu_deploy.predict import load_task_predictor
from nlu_deploy.tasks import get_task, task_of
from nlu_deploy.tasks.base import UNLABELED, masked_cross_entropy
from nlu_deploy.training.checkpointing import TrainingInterrupted
from nlu_deploy.training.distill import distill, evenly_spaced_layers, soft_target_loss, student_from_teacher


def test_evenly_spaced_layers_keep_the_top_of_each_block():
    assert evenly_spaced_layers(6, 3) == [1, 3, 5]
    assert evenly_spaced_layers(6, 2) == [2, 5]
    assert evenly_spaced_layers(6, 4) == [1, 2, 3, 5]
    assert evenly_spaced_layers(12, 1) == [11]
    for bad in (0, 6, 7):
        with pytest.raises(ConfigError, match="keeps between 1 and 5"):
            evenly_spaced_layers(6, bad)


def test_student_holds_the_kept_layers_embeddings_and_head_of_its_teacher(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    ).eval()
    student = student_from_teacher(teacher, [1, 3])
    assert len(student.bert.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    assert len(teacher.bert.encoder.layer) == 4  # the teacher is left whole
    for new, old in ((0, 1), (1, 3)):
        assert torch.equal(
            student.bert.encoder.layer[new].output.dense.weight, teacher.bert.encoder.layer[old].output.dense.weight
        )
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert all(p.requires_grad for p in student.parameters())

    # saved and loaded as a normal 2-layer checkpoint, it computes the same logits
    student.eval().save_pretrained(tmp_path, safe_serialization=True)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6)
        # and it is not the teacher: two layers are gone
        assert not torch.allclose(
            student.bert(input_ids=ids).last_hidden_state, teacher.bert(input_ids=ids).last_hidden_state, atol=1e-2
        )


def test_soft_target_loss_is_zero_only_when_the_student_matches_its_teacher():
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    assert float(soft_target_loss(teacher.clone(), teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_target_loss(torch.zeros(2, 3), teacher, 2.0)) > 0.05
    assert float(soft_target_loss(torch.zeros(0, 3), torch.zeros(0, 3), 2.0)) == 0.0


def test_a_batch_without_labels_has_zero_hard_loss_and_finite_gradients():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.tensor([-1000, -1000, -1000, -1000]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(logits.grad).all()
    mixed = masked_cross_entropy(logits, torch.tensor([1, -1000, 2, -100]))
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([1, 2]))
    assert float(mixed) == pytest.approx(float(expected))


def student_config(teacher, output, **changes):
    return DistillConfig(**{**dict(teacher=teacher, output=output, layers=1, epochs=3, seed=3), **changes})


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory, tiny_checkpoint):
    unlabeled = tmp_path_factory.mktemp("unlabeled") / "texts.txt"
    unlabeled.write_text("wake me at six\nplay the radio\nwill it snow\nset a timer for tea\n", encoding="utf-8")
    output = tmp_path_factory.mktemp("students") / "intents-1l"
    distill(student_config(tiny_checkpoint, output, unlabeled=unlabeled), show_progress=False)
    return output


def test_distilled_student_is_a_shallower_checkpoint_that_names_its_teacher(tiny_student, tiny_checkpoint):
    config = artifacts.read_json(tiny_student / "config.json")
    teacher_config = artifacts.read_json(tiny_checkpoint / "config.json")
    assert config["num_hidden_layers"] == 1 and teacher_config["num_hidden_layers"] == 2
    assert config["id2label"] == teacher_config["id2label"]
    manifest = artifacts.read_manifest(tiny_student)
    assert manifest["stage"] == "distill"
    assert manifest["distillation"]["teacher"] == str(tiny_checkpoint.resolve())
    assert manifest["distillation"]["kept_layers"] == [1]
    assert manifest["distillation"]["unlabeled_texts"] == 4
    # trained on the teacher's own split: the same held-out rows
    assert (tiny_student / artifacts.VALIDATION_SPLIT).read_text() == (
        tiny_checkpoint / artifacts.VALIDATION_SPLIT
    ).read_text()
    facts = artifacts.read_json(tiny_student / artifacts.METRICS)["distillation"]
    assert facts["kl_to_teacher_after"] < 0.5 * facts["kl_to_teacher_before"]


def test_student_goes_through_export_validate_and_predict(tmp_path, tiny_student):
    onnx_dir = tmp_path / "onnx"
    export(ExportConfig(model_dir=tiny_student, output=onnx_dir, quantize="dynamic"))
    report = validate(
        ValidateConfig(model_dir=tiny_student, onnx_dir=onnx_dir, data=tiny_student / artifacts.VALIDATION_SPLIT)
    )
    assert report.passed
    fp32 = next(v for v in report.variants if v.file == "model.onnx")
    assert fp32.scores["accuracy"] > 0.8
    texts = ["wake me up at 7 tomorrow", "play some jazz"]
    from_torch, _, _ = load_task_predictor(tiny_student, None, "cpu")
    from_onnx, _, _ = load_task_predictor(onnx_dir, "model.onnx", "cpu")
    assert [label for label, _ in from_torch.predict(texts)] == [label for label, _ in from_onnx.predict(texts)]


@pytest.mark.parametrize("fixture", ["tiny_tagger", "tiny_joint"])
def test_word_tasks_distil_with_unlabeled_texts(request, tmp_path, fixture):
    teacher = request.getfixturevalue(fixture)
    unlabeled = tmp_path / "texts.jsonl"
    unlabeled.write_text(
        "\n".join(
            json.dumps({"tokens": t.split()}) for t in ("play jazz in the kitchen", "wake me at 7", "weather in paris")
        )
        + "\n"
    )
    output = tmp_path / "student"
    distill(
        student_config(teacher, output, unlabeled=unlabeled, unlabeled_column="tokens", epochs=4), show_progress=False
    )
    task = task_of(output)
    assert task.name == task_of(teacher).name
    facts = artifacts.read_json(output / artifacts.METRICS)["distillation"]
    assert facts["unlabeled_texts"] == 3
    assert facts["kl_to_teacher_after"] < facts["kl_to_teacher_before"]
    assert artifacts.read_json(output / "config.json")["num_hidden_layers"] == 1
    export(ExportConfig(model_dir=output, output=tmp_path / "onnx"))
    assert validate(
        ValidateConfig(model_dir=output, onnx_dir=tmp_path / "onnx", data=output / artifacts.VALIDATION_SPLIT)
    ).passed


def test_unlabeled_rows_only_train_the_soft_targets(tiny_checkpoint):
    task = get_task("text-classification")
    data = task.unlabeled(["play jazz", "  ", "wake me"])
    assert data.texts == ["play jazz", "  ", "wake me"] and set(data.labels) == {UNLABELED}
    ids = task.label_ids_for(data, task.label2ids(task.load_model(tiny_checkpoint).config))
    assert ids["labels"][UNLABELED] < 0  # never a class: masked out of the hard-label loss


def sigterm_at(step):
    def on_step(global_step):
        if global_step == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_step


def test_interrupted_distillation_resumes_to_the_same_result(tmp_path, tiny_checkpoint):
    distill(student_config(tiny_checkpoint, tmp_path / "straight", epochs=2, checkpoint_every=5), show_progress=False)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        distill(
            student_config(tiny_checkpoint, tmp_path / "resumed", epochs=2, checkpoint_every=5),
            show_progress=False,
            on_step=sigterm_at(12),
        )
    distill(
        student_config(tiny_checkpoint, tmp_path / "resumed", epochs=2, checkpoint_every=5, resume=True),
        show_progress=False,
    )
    straight = artifacts.read_json(tmp_path / "straight" / artifacts.METRICS)
    resumed = artifacts.read_json(tmp_path / "resumed" / artifacts.METRICS)
    for a, b in zip(straight["epochs"], resumed["epochs"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["validation_accuracy"] == a["validation_accuracy"]


def test_bad_distillation_requests_get_one_sentence(tmp_path, tiny_checkpoint, tiny_encoder, tiny_train_csv):
    runner = CliRunner()
    cases = [
        ([str(tiny_checkpoint), "--layers", "2"], "keeps between 1 and 1 of the teacher's 2 layers"),
        ([str(tiny_encoder), "--layers", "1"], "not a checkpoint written by `nlu-deploy finetune`"),
        ([str(tiny_checkpoint), "--layers", "1", "--alpha", "1.5"], "alpha must be between 0 and 1"),
        ([str(tiny_checkpoint), "--layers", "1", "--validation", str(tiny_train_csv)], "--validation needs --train"),
        ([str(tiny_checkpoint), "--layers", "1", "--unlabeled", str(tmp_path / "none.txt")], "does not exist"),
    ]
    for arguments, message in cases:
        result = runner.invoke(main, ["distill", *arguments, "--output", str(tmp_path / "out")])
        assert result.exit_code != 0 and message in result.output, (arguments, result.output)
        assert "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


def test_a_teacher_whose_training_file_changed_is_refused(tmp_path, tiny_encoder, tiny_train_csv):
    from nlu_deploy.config import FinetuneConfig
    from nlu_deploy.training.loop import finetune

    train = tmp_path / "train.csv"
    train.write_bytes(tiny_train_csv.read_bytes())
    teacher = tmp_path / "teacher"
    finetune(
        FinetuneConfig(output=teacher, model=str(tiny_encoder), train=train, epochs=1, batch_size=8, max_length=32),
        show_progress=False,
    )
    train.write_text(train.read_text() + "turn the music up,play_music\n")
    with pytest.raises(DataError, match="has changed since the teacher"):
        distill(student_config(teacher, tmp_path / "student"), show_progress=False)
    train.unlink()
    with pytest.raises(DataError, match="not there any more"):
        distill(student_config(teacher, tmp_path / "student"), show_progress=False)
    # with labels the teacher never had, the student cannot keep the teacher's head
    other = tmp_path / "other.csv"
    other.write_text(
        "text,label\n" + "".join(f"order pizza number {i},order_food\nplay song {i},play_music\n" for i in range(20))
    )
    with pytest.raises(DataError, match="labels the teacher does not have"):
        distill(student_config(teacher, tmp_path / "student", train=other), show_progress=False)


def test_run_with_a_student_benchmarks_both_against_the_teachers_pytorch(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--model",
            str(tiny_encoder),
            "--train",
            str(tiny_train_csv),
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--lr",
            "5e-3",
            "--max-length",
            "32",
            "--student-layers",
            "1",
            "--student-epochs",
            "2",
            "--recipe",
            "fixed",  # the teacher's int8 file is the dynamic one this test compares with its student's
            "--batch-sizes",
            "1,8",
            "--seq-lens",
            "16",
            "--min-seconds",
            "0.05",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((output / "report.json").read_text())
    rows = {row["variant"]: row for row in report["teacher_and_student"]}
    assert {"pytorch", "int8", "student/fp32", "student/int8"} <= set(rows)
    assert rows["pytorch"]["speedup_vs_pytorch"] == 1.0 and rows["pytorch"]["delta_vs_teacher_points"] == 0.0
    student_int8 = rows["student/int8"]
    assert student_int8["delta_vs_teacher_points"] == pytest.approx(
        100 * (student_int8["score"] - report["validation"]["pytorch"]["accuracy"])
    )
    assert "## Teacher and student" in (output / "report.md").read_text()
    assert (output / "accuracy_vs_speed.png").stat().st_size > 10_000
    student = output / "student" / "checkpoint"
    assert artifacts.read_json(student / "config.json")["num_hidden_layers"] == 1
    assert artifacts.read_manifest(student)["distillation"]["teacher"] == str((output / "checkpoint").resolve())
    assert not list(tmp_path.glob(".run.partial*"))


def test_bench_measures_another_directory_in_the_same_run_and_plots_accuracy(
    tmp_path, tiny_checkpoint, tiny_onnx, tiny_student
):
    student_onnx = tmp_path / "student-onnx"
    export(ExportConfig(model_dir=tiny_student, output=student_onnx, quantize="dynamic"))
    runner = CliRunner()
    for model_dir, onnx_dir in ((tiny_checkpoint, tiny_onnx), (tiny_student, student_onnx)):
        result = runner.invoke(
            main,
            [
                "validate",
                "--model",
                str(model_dir),
                "--onnx",
                str(onnx_dir),
                "--data",
                str(tiny_checkpoint / artifacts.VALIDATION_SPLIT),
            ],
        )
        assert result.exit_code == 0, result.output
    arguments = [
        "bench",
        str(tiny_onnx),
        "--model",
        str(tiny_checkpoint),
        "--also",
        f"small={student_onnx}",
        "--batch-sizes",
        "8",
        "--seq-lens",
        "16",
        "--min-seconds",
        "0.05",
        "--json",
        str(tmp_path / "b.json"),
        "--accuracy-plot",
        str(tmp_path / "tradeoff.png"),
    ]
    result = runner.invoke(main, arguments)
    assert result.exit_code == 0, result.output
    variants = {m["variant"] for m in json.loads((tmp_path / "b.json").read_text())["measurements"]}
    assert {"pytorch", "fp32", "int8", "small/fp32", "small/int8"} <= variants
    assert (tmp_path / "tradeoff.png").stat().st_size > 10_000
    (student_onnx / artifacts.VALIDATION_REPORT).unlink()
    result = runner.invoke(main, arguments)
    assert result.exit_code == 2 and "run `nlu-deploy validate" in result.output


def test_a_student_can_be_the_best_of_a_search(tmp_path, tiny_checkpoint):
    output = tmp_path / "searched"
    result = CliRunner().invoke(
        main,
        ["distill", str(tiny_checkpoint), "--layers", "1", "--epochs", "2", "--search", "2", "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((output / "search_report.json").read_text())
    assert "epochs" not in report["searched"] and report["fixed"]["epochs"] == 2
    assert len(report["trials"]) == 2
    assert artifacts.read_json(output / "config.json")["num_hidden_layers"] == 1
    manifest = artifacts.read_manifest(output)
    assert manifest["stage"] == "distill" and manifest["options"]["output"] == str(output)
    assert manifest["distillation"]["teacher"] == str(tiny_checkpoint.resolve())
