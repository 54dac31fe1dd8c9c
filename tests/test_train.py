import json

import pytest
from conftest import tiny_rows, write_csv
from safetensors.torch import load_file

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.errors import ConfigError
from nlu_deploy.training.batching import BatchesWithoutSingletons
from nlu_deploy.training.loop import finetune


def test_checkpoint_directory_is_complete_and_self_describing(tiny_checkpoint, tiny_train_csv):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["id2label"] == {"0": "get_weather", "1": "play_music", "2": "set_alarm", "3": "set_timer"}
    assert config["label2id"]["set_timer"] == 3
    weights = load_file(tiny_checkpoint / "model.safetensors")
    assert not any(key.startswith("_orig_mod") for key in weights)
    assert (tiny_checkpoint / "tokenizer.json").exists()
    manifest = artifacts.read_manifest(tiny_checkpoint)
    assert manifest["stage"] == "finetune"
    assert manifest["data"]["train"]["sha256"] == artifacts.file_sha256(tiny_train_csv)
    assert manifest["versions"]["torch"]
    held_out = artifacts.read_json(tiny_checkpoint / "metrics.json")["validation_examples"]
    assert len((tiny_checkpoint / artifacts.VALIDATION_SPLIT).read_text().splitlines()) == held_out


def test_loss_goes_down_and_the_model_learns(tiny_checkpoint):
    metrics = artifacts.read_json(tiny_checkpoint / "metrics.json")
    losses = [epoch["train_loss"] for epoch in metrics["epochs"]]
    assert losses[-1] < 0.5 * losses[0]
    assert metrics["best"]["accuracy"] >= 0.9  # 4 intents: chance is 0.25
    assert all(epoch["samples_per_second"] > 0 for epoch in metrics["epochs"])
    best = max(metrics["epochs"], key=lambda e: (e["validation_accuracy"], -e["validation_loss"]))
    assert metrics["best_epoch"] == best["epoch"]


def test_same_seed_same_metrics_on_cpu(tmp_path, tiny_encoder, tiny_train_csv):
    def train(name):
        config = FinetuneConfig(
            output=tmp_path / name,
            model=str(tiny_encoder),
            train=tiny_train_csv,
            epochs=2,
            batch_size=8,
            lr=5e-3,
            max_length=32,
            seed=3,
        )
        finetune(config, show_progress=False)
        return artifacts.read_json(tmp_path / name / "metrics.json")["epochs"]

    first, second = train("a"), train("b")
    for a, b in zip(first, second):
        assert a["train_loss"] == b["train_loss"] and a["validation_accuracy"] == b["validation_accuracy"]


def test_compiled_training_never_recompiles_after_its_first_steps(tmp_path, tiny_encoder):
    """Batch sizes 16 and 17 (a lone last row folded in), padded lengths 16 and 32, evaluation
    batches of 32 and 33: one graph for training and one for evaluation (inference mode), none
    after. Before batching.py, the lone row and the first new length each compiled again."""
    import torch._dynamo.utils

    rows = tiny_rows(per_intent=57)
    # At most 7 words (padded length 16, equal to the batch size: duck sizing would tie them), and
    # two rows three times as long (padded length 32 or more).
    rows = [
        dict(row, text=" ".join(row["text"].split()[:7] * (3 if i in (50, 150) else 1))) for i, row in enumerate(rows)
    ]
    train, validation = rows[:161], rows[161:226]  # 161 = 10 x 16 + 1; 65 = 32 + 33
    assert len(validation) == 65
    graphs_after_step = {}
    torch._dynamo.utils.counters.clear()

    def count_graphs(step):
        graphs_after_step[step] = torch._dynamo.utils.counters["stats"]["unique_graphs"]

    result = finetune(
        FinetuneConfig(
            output=tmp_path / "compiled",
            model=str(tiny_encoder),
            train=write_csv(tmp_path / "train.csv", train),
            validation=write_csv(tmp_path / "validation.csv", validation),
            epochs=2,
            batch_size=16,
            lr=5e-3,
            max_length=64,
            compile="on",
        ),
        show_progress=False,
        on_step=count_graphs,
    )
    assert result.compiled
    assert sorted(graphs_after_step) == list(range(1, 21))  # 10 steps an epoch: the lone row joined a batch
    assert graphs_after_step[1] == 1 and graphs_after_step[10] == 1  # every training shape of epoch 1
    assert graphs_after_step[11] == 2  # + evaluation after epoch 1
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # nothing new in epoch 2
    weights = load_file(tmp_path / "compiled" / "model.safetensors")
    assert weights and not any(key.startswith("_orig_mod") for key in weights)


def test_batches_never_hold_a_single_row():
    for rows, size in [(161, 16), (160, 16), (17, 16), (1, 16), (33, 32), (2, 1)]:
        batches = list(BatchesWithoutSingletons(range(rows), size))
        assert len(batches) == len(BatchesWithoutSingletons(range(rows), size))
        assert [i for batch in batches for i in batch] == list(range(rows))
        assert all(len(batch) > 1 for batch in batches) or rows == 1 or size == 1
        assert max(len(batch) for batch in batches) <= size + 1


def test_long_texts_are_truncated_and_counted(tmp_path, tiny_encoder):
    rows = [("a long " * 40 + "alarm", "alarm"), ("play jazz", "music")] * 10
    path = tmp_path / "long.csv"
    path.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n", encoding="utf-8")
    finetune(
        FinetuneConfig(
            output=tmp_path / "out", model=str(tiny_encoder), train=path, epochs=1, batch_size=4, max_length=16
        ),
        show_progress=False,
    )
    metrics = artifacts.read_json(tmp_path / "out" / "metrics.json")
    assert metrics["truncated_train"] + metrics["truncated_validation"] == 10


def test_unseen_validation_labels_are_scored_as_errors_and_counted(
    tmp_path, tiny_encoder, tiny_train_csv, tiny_dev_csv
):
    """Real validation sets hold labels the training data never had: training goes on, those
    rows count as errors (never as right), and metrics.json says which and how many."""
    dev = tmp_path / "dev.csv"
    known = tiny_dev_csv.read_text(encoding="utf-8").splitlines()
    dev.write_text(
        "\n".join(known + ["book a cab to the station,order_taxi", "call a taxi,order_taxi"]) + "\n", encoding="utf-8"
    )
    result = finetune(
        FinetuneConfig(
            output=tmp_path / "out",
            model=str(tiny_encoder),
            train=tiny_train_csv,
            validation=dev,
            epochs=2,
            batch_size=8,
            lr=5e-3,
            max_length=32,
        ),
        show_progress=False,
    )
    metrics = artifacts.read_json(tmp_path / "out" / "metrics.json")
    assert metrics["unseen_in_validation"] == {"labels": {"rows": 2, "labels": {"order_taxi": 2}}}
    assert metrics["validation_examples"] == len(known) - 1 + 2
    # the two unseen rows can never be right: at most (n - 2) / n
    assert result.best_scores["accuracy"] <= (len(known) - 1) / (len(known) + 1) + 1e-9


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "epochs must be greater than zero"),
        ({"batch_size": -1}, "batch size must be greater than zero"),
        ({"max_length": 4096}, "beyond what BERT-family encoders support"),
        ({"compile": "maybe"}, "compile must be one of"),
        ({"label_smoothing": 1.0}, "label-smoothing must be at least 0 and below 1"),
    ],
)
def test_absurd_options_are_refused(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(output=tmp_path, **options)


def test_without_a_terminal_training_prints_timed_lines_and_keeps_a_log(tmp_path, tiny_encoder, tiny_train_csv):
    from click.testing import CliRunner

    from nlu_deploy.cli import main

    result = CliRunner().invoke(
        main,
        [
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
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    log = (tmp_path / "out" / artifacts.TRAINING_LOG).read_text(encoding="utf-8")
    assert "training text-classification: " in log and "epoch 1/2: train loss" in log and "epoch 2/2:" in log
    assert "epoch 2/2: train loss" in result.output  # CliRunner is no terminal: plain lines on stderr


def test_periodic_progress_lines_are_rate_limited(tmp_path, capsys):
    from nlu_deploy.progress import ProgressLog

    log = ProgressLog(tmp_path / "progress.log", terminal=False, every_seconds=3600)
    log.line("start")
    log.periodic("too soon")
    ProgressLog(tmp_path / "progress.log", terminal=False, every_seconds=0).periodic("due")
    lines = (tmp_path / "progress.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["start", "due"]
    assert "start" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["text-classification", "mean", "token-classification", "joint"])
def test_a_fine_tune_may_start_from_any_fine_tuned_checkpoint_and_keeps_only_its_encoder(
    tmp_path, tiny_checkpoint, tiny_joint, target
):
    """A Hugging Face checkpoint with another head size and a stale out-of-scope rule, and one of
    our own classes (weights under `encoder.`): the new model gets the source's encoder weights,
    a head for its own labels, and nothing of the source's task."""
    import shutil

    import torch

    from nlu_deploy.runtime.modeling import OWN_ARCHITECTURES
    from nlu_deploy.tasks import get_task
    from nlu_deploy.tasks.joint_model import ARCHITECTURE as JOINT
    from nlu_deploy.tasks.pooled_model import ARCHITECTURE as MEAN

    assert {JOINT, MEAN} == set(OWN_ARCHITECTURES)
    calibrated = tmp_path / "calibrated"
    shutil.copytree(tiny_checkpoint, calibrated)
    config = json.loads((calibrated / "config.json").read_text())
    config["oos_rejection"] = {"label": "oos", "score": "energy", "threshold": 3.0, "oos_class": 0}
    (calibrated / "config.json").write_text(json.dumps(config))

    task = get_task("text-classification" if target == "mean" else target)
    labels = {"labels": ["a", "b"], "tags": ["O", "B-x", "I-x"], "intents": ["a", "b", "c"]}
    for source in (calibrated, tiny_joint):
        model = task.new_model(
            str(source),
            labels,
            False,
            False,
            {"pooling": "mean" if target == "mean" else "default", "slot_loss_weight": 1.0},
        )
        source_weights = load_file(str(source / "model.safetensors"))
        source_embeddings = next(v for k, v in source_weights.items() if k.endswith("word_embeddings.weight"))
        embeddings = next(v for k, v in model.state_dict().items() if k.endswith("word_embeddings.weight"))
        assert torch.equal(embeddings, source_embeddings), source.name
        assert not hasattr(model.config, "oos_rejection")
        assert getattr(model.config, "nlu_task", None) == ("joint" if target == "joint" else None)
        assert model.config.num_labels == (3 if target in ("token-classification", "joint") else 2)


def test_default_precision_is_fp32_on_every_device_and_explicit_choices_hold():
    """The H200 measurements (docs/gpus.md) made auto fp32 on CUDA too; bf16 and fp16 stay one flag away."""
    import torch

    from nlu_deploy.training.loop import autocast_dtype

    cuda = torch.device("cuda")  # a device object: nothing runs on it
    assert autocast_dtype("auto", cuda) is None and autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", cuda) == torch.bfloat16 and autocast_dtype("fp16", cuda) == torch.float16
    with pytest.raises(ConfigError, match="fp16 training needs CUDA"):
        autocast_dtype("fp16", torch.device("cpu"))
