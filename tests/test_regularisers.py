"""finetune's regularisers: label smoothing in the loss every task trains on, and the moving
average of the weights that --average-weights scores and keeps."""

import math

import pytest
import torch

from nlu_deploy.tasks.base import masked_cross_entropy
from nlu_deploy.training.weight_averaging import averaged_model


def test_label_smoothing_penalises_a_certain_answer_and_still_ignores_unlabelled_rows():
    certain = torch.tensor([[30.0, 0.0, 0.0, 0.0]])
    assert float(masked_cross_entropy(certain, torch.tensor([0]))) == pytest.approx(0.0, abs=1e-6)
    smoothed = float(masked_cross_entropy(certain, torch.tensor([0]), label_smoothing=0.1))
    # target 0.925 on the answer and 0.025 on each other label; the others' log-probability is -30
    assert smoothed == pytest.approx(3 * 0.025 * 30.0, rel=1e-3)
    # the loss is lowest where the model gives the answer 0.925, not 1
    hedged = torch.tensor([[math.log(0.925 / 0.025), 0.0, 0.0, 0.0]])
    assert float(masked_cross_entropy(hedged, torch.tensor([0]), 0.1)) < smoothed
    mixed = masked_cross_entropy(torch.cat([hedged, certain]), torch.tensor([0, -100]), 0.1)
    assert float(mixed) == pytest.approx(float(masked_cross_entropy(hedged, torch.tensor([0]), 0.1)))


def set_weight(model, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(value)


def test_the_average_forgets_its_start_within_tens_of_steps_whatever_the_run_length():
    model = torch.nn.Linear(3, 2)
    averaged = averaged_model(model, total_steps=100_000)  # a long run: a 10,000-step time constant
    set_weight(model, 5.0)
    for _ in range(60):
        averaged.update_parameters(model)
    assert torch.allclose(averaged.module.weight, torch.full((2, 3), 5.0), atol=0.05)
    assert not averaged.module.weight.requires_grad


def test_the_average_sits_between_the_weights_the_last_steps_visited():
    model = torch.nn.Linear(3, 2)
    averaged = averaged_model(model, total_steps=400)  # a 40-step time constant
    for step in range(400):
        set_weight(model, 1.0 if step % 2 else -1.0)  # the optimiser bouncing across a minimum at 0
        averaged.update_parameters(model)
    assert abs(float(averaged.module.weight[0, 0])) < 0.05
    for _ in range(200):  # the run moves on to a new place: the average follows within ~5 time constants
        set_weight(model, 3.0)
        averaged.update_parameters(model)
    assert float(averaged.module.bias[0]) == pytest.approx(3.0, abs=0.05)


def test_intents_that_learn_to_reject_train_with_label_smoothing_unless_told_otherwise(tmp_path):
    from nlu_deploy.config import FinetuneConfig
    from nlu_deploy.task_specs import SPECS

    assert (
        FinetuneConfig(output=tmp_path, oos_label="oos").label_smoothing
        == SPECS["text-classification"].rejection_label_smoothing
    )
    assert FinetuneConfig(output=tmp_path, oos_validation=tmp_path / "oos.txt").label_smoothing == 0.1
    assert FinetuneConfig(output=tmp_path, oos_label="oos", label_smoothing=0.0).label_smoothing == 0.0
    assert FinetuneConfig(output=tmp_path).label_smoothing == 0.0
    assert FinetuneConfig(output=tmp_path, task="joint", oos_label="oos").label_smoothing == 0.0


def test_the_trainer_comparison_refuses_weight_averaging_that_the_trainer_lacks():
    from click.testing import CliRunner

    from nlu_deploy.cli import main

    result = CliRunner().invoke(main, ["bench-training", "--average-weights", "--epochs", "1"])
    assert result.exit_code != 0
    assert "has no weight averaging" in result.output and "Traceback" not in result.output
