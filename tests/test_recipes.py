"""The task defaults (task_specs.SPECS, config.default_epochs; evidence in the docs/recipes.md):
what a user gets without options, and that every option the user gives wins."""

import json

import pytest

from nlu_deploy import artifacts
from nlu_deploy.config import DEFAULT_SLOT_LOSS_WEIGHT, FinetuneConfig, default_epochs
from nlu_deploy.data.tables import LabelledTexts
from nlu_deploy.data.tagged import TaggedSentences
from nlu_deploy.task_specs import SPECS
from nlu_deploy.tasks import get_task
from nlu_deploy.training.loop import finetune
from nlu_deploy.training.plan import resolve_epochs


def intents(rows_per_label: int, labels: int) -> LabelledTexts:
    texts = [f"text {i} of intent {k}" for k in range(labels) for i in range(rows_per_label)]
    return LabelledTexts(texts, [f"intent_{k}" for k in range(labels) for _ in range(rows_per_label)], "made here")


@pytest.mark.parametrize("task", sorted(SPECS))
def test_each_task_gets_its_recipe_and_the_users_options_win(tmp_path, task):
    default = FinetuneConfig(output=tmp_path, task=task)
    assert (default.batch_size, default.lr) == (SPECS[task].batch_size, SPECS[task].lr)
    assert default.epochs is None and default.slot_loss_weight == DEFAULT_SLOT_LOSS_WEIGHT
    given = FinetuneConfig(
        output=tmp_path,
        task=task,
        batch_size=64,
        lr=3e-5,
        epochs=2,
        slot_loss_weight=1.0,
        warmup_ratio=0.0,
        weight_decay=0.0,
    )
    assert (given.batch_size, given.lr, given.epochs, given.slot_loss_weight) == (64, 3e-5, 2, 1.0)
    assert (given.warmup_ratio, given.weight_decay) == (0.0, 0.0)


def test_fewer_examples_per_intent_get_more_epochs_up_to_a_cap():
    assert default_epochs(None) == 3  # word tagging: no intent
    assert default_epochs(1600) == 3  # SNIPS: 1,600 rows per intent
    assert default_epochs(117) == 7  # BANKING77's seeded 90%: 117 per intent
    assert default_epochs(105) == 8  # the 81% the recipe sweep trained on
    assert default_epochs(129) == 7  # 1,000 SNIPS rows
    assert default_epochs(2) == 10  # the cap
    rule = [default_epochs(n) for n in range(1, 3000, 7)]
    assert rule == sorted(rule, reverse=True)  # never fewer epochs for less data


def test_the_epochs_follow_the_training_rows_per_intent_unless_given(tmp_path):
    task = get_task("text-classification")
    assert resolve_epochs(FinetuneConfig(output=tmp_path), task, intents(2000, 5)).epochs == 3
    assert resolve_epochs(FinetuneConfig(output=tmp_path), task, intents(100, 5)).epochs == 8
    assert resolve_epochs(FinetuneConfig(output=tmp_path, epochs=2), task, intents(100, 5)).epochs == 2
    # texts only a teacher labels (distillation) are not examples of any intent
    padded = task.concatenated(intents(100, 5), task.unlabeled([f"extra {i}" for i in range(5000)]))
    assert resolve_epochs(FinetuneConfig(output=tmp_path), task, padded).epochs == 8
    tagger = get_task("token-classification")
    tagged = TaggedSentences([["play", "jazz"]] * 20, [["O", "B-genre"]] * 20, "made here")
    assert resolve_epochs(FinetuneConfig(output=tmp_path, task=tagger.name), tagger, tagged).epochs == 3


def test_a_finetune_without_epochs_trains_and_records_the_chosen_number(tmp_path, tiny_encoder, tiny_train_csv):
    # 240 rows of 4 intents, 10% held out: 54 training rows per intent -> the cap, 10 epochs
    output = tmp_path / "out"
    result = finetune(
        FinetuneConfig(
            output=output, model=str(tiny_encoder), train=tiny_train_csv, batch_size=8, lr=5e-3, max_length=32
        ),
        show_progress=False,
    )
    assert len(result.epochs) == 10
    manifest = json.loads((output / artifacts.MANIFEST).read_text())
    assert manifest["options"]["epochs"] == 10  # what distill rebuilds the teacher's recipe from
