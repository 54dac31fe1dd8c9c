"""Interrupting training with a real signal, then resuming, ends where an uninterrupted run ends."""

import os
import signal

import pytest

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.errors import NluDeployError
from nlu_deploy.training.checkpointing import TrainingInterrupted, training_state_dir
from nlu_deploy.training.loop import finetune


def config(tiny_encoder, tiny_train_csv, output, **changes):
    options = dict(
        output=output,
        model=str(tiny_encoder),
        train=tiny_train_csv,
        epochs=3,
        batch_size=8,
        lr=5e-3,
        max_length=32,
        seed=5,
        checkpoint_every=7,
    )
    return FinetuneConfig(**{**options, **changes})


def send_sigterm_at(step):
    def on_step(global_step):
        if global_step == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_step


# 27 steps = one epoch: stop right at its end. With --average-weights the moving average is part
# of the state: a resumed run that lost it would score (and keep) other weights.
@pytest.mark.parametrize(
    "stop_at_step, options", [(30, {}), (27, {}), (30, {"average_weights": True, "label_smoothing": 0.1})]
)
def test_resume_after_sigterm_matches_an_uninterrupted_run(
    tmp_path, tiny_encoder, tiny_train_csv, stop_at_step, options
):
    finetune(config(tiny_encoder, tiny_train_csv, tmp_path / "straight", **options), show_progress=False)
    expected = artifacts.read_json(tmp_path / "straight" / "metrics.json")

    output = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        finetune(
            config(tiny_encoder, tiny_train_csv, output, **options),
            show_progress=False,
            on_step=send_sigterm_at(stop_at_step),
        )
    assert not output.exists()  # nothing that looks finished
    assert (training_state_dir(output) / "training_state.pt").exists()

    finetune(config(tiny_encoder, tiny_train_csv, output, resume=True, **options), show_progress=False)
    resumed = artifacts.read_json(output / "metrics.json")
    for straight, continued in zip(expected["epochs"], resumed["epochs"], strict=True):
        assert continued["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-6)
        assert continued["validation_loss"] == pytest.approx(straight["validation_loss"], rel=1e-6)
        assert continued["validation_accuracy"] == straight["validation_accuracy"]
    assert resumed["best_epoch"] == expected["best_epoch"]
    assert not training_state_dir(output).exists()


def test_resume_refuses_other_options_and_starts_over_when_nothing_was_saved(
    tmp_path, tiny_encoder, tiny_train_csv, capsys
):
    fresh = tmp_path / "fresh"
    finetune(config(tiny_encoder, tiny_train_csv, fresh, resume=True), show_progress=False)
    assert "no interrupted run to resume" in capsys.readouterr().err and (fresh / "metrics.json").exists()
    # a run killed before its first save leaves an empty state folder: the rerun starts over and says so
    killed_early = tmp_path / "killed-early"
    training_state_dir(killed_early).mkdir()
    finetune(config(tiny_encoder, tiny_train_csv, killed_early), show_progress=False)
    assert "holds no saved training state" in capsys.readouterr().err
    assert (killed_early / "metrics.json").exists() and not training_state_dir(killed_early).exists()
    output = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        finetune(config(tiny_encoder, tiny_train_csv, output), show_progress=False, on_step=send_sigterm_at(3))
    with pytest.raises(NluDeployError, match="used other options or data"):
        finetune(config(tiny_encoder, tiny_train_csv, output, resume=True, lr=1e-3), show_progress=False)
    with pytest.raises(NluDeployError, match="pass --resume to continue it or --overwrite"):
        finetune(config(tiny_encoder, tiny_train_csv, output), show_progress=False)
