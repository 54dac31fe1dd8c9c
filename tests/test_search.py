"""finetune --search: real fine-tunes chosen by Optuna, pruned on the per-epoch score, resumable
from the SQLite study without repeating a finished trial."""

import json
import shutil

import optuna
import pytest
from click.testing import CliRunner

from nlu_deploy import artifacts
from nlu_deploy.cli import main
from nlu_deploy.config import FinetuneConfig, SearchConfig
from nlu_deploy.errors import NluDeployError
from nlu_deploy.training.search import STUDY_FILE, STUDY_NAME, search, search_dir

# The tiny encoder learns the demo intents at lr 5e-3 (above the space's range, so these are
# queued by hand; Optuna warns and uses them) and nothing at 1e-7.
GOOD = [
    {"lr": 5e-3, "epochs": 4, "warmup_ratio": 0.0, "weight_decay": 0.01},
    {"lr": 4e-3, "epochs": 4, "warmup_ratio": 0.1, "weight_decay": 0.0},
]
BAD = {"lr": 1e-7, "epochs": 4, "warmup_ratio": 0.0, "weight_decay": 0.0}
LATE = {"lr": 4e-3, "epochs": 4, "warmup_ratio": 0.1, "weight_decay": 0.001}


class Killed(Exception):
    """Stands for the process dying mid-trial."""


def tiny_config(tiny_encoder, tiny_train_csv, output, **changes):
    return FinetuneConfig(
        **{
            "output": output,
            "model": str(tiny_encoder),
            "train": tiny_train_csv,
            "batch_size": 8,
            "max_length": 32,
            "seed": 7,
            **changes,
        }
    )


@pytest.mark.filterwarnings("ignore:Fixed parameter")
def test_search_prunes_reports_and_resumes_without_repeating_a_finished_trial(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "tuned"
    study_dir = search_dir(output)
    study_dir.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{study_dir / STUDY_FILE}", study_name=STUDY_NAME, direction="maximize"
    )
    for params in (*GOOD, BAD, LATE):
        study.enqueue_trial(params)
    searched = SearchConfig(trials=4, fixed=("batch_size",))

    def die_in_fourth_trial(number, step):
        if number == 3 and step == 5:
            raise Killed

    with pytest.raises(Killed):
        search(
            tiny_config(tiny_encoder, tiny_train_csv, output, resume=True),
            searched,
            show_progress=False,
            on_trial_step=die_in_fourth_trial,
        )
    assert not output.exists()  # nothing that looks finished
    states = [
        t.state.name
        for t in optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{study_dir / STUDY_FILE}").trials
    ]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "RUNNING"]

    result = search(tiny_config(tiny_encoder, tiny_train_csv, output, resume=True), searched, show_progress=False)
    report = json.loads((output / "search_report.json").read_text())
    assert [t["state"] for t in report["trials"]] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    assert report["trials"][4]["params"] == report["trials"][3]["params"]  # the interrupted trial, run again
    assert sum(t["params"]["lr"] == GOOD[0]["lr"] for t in report["trials"]) == 1  # never repeated
    pruned = report["trials"][2]
    assert len(pruned["epoch_scores"]) < BAD["epochs"]  # stopped before its last epoch
    best = max((t for t in report["trials"] if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert result.best_trial == best["number"] and report["best_value"] == best["value"]
    # the output is the best trial's checkpoint, with the report and the plot
    metrics = artifacts.read_json(output / artifacts.METRICS)
    assert metrics["best"]["accuracy"] == pytest.approx(best["value"])
    assert artifacts.read_manifest(output)["options"]["lr"] == best["params"]["lr"]
    assert "| trial | state | lr |" in (output / "search_report.md").read_text()
    assert (output / "search.png").stat().st_size > 10_000
    assert sorted(p.name for p in study_dir.iterdir()) == ["best", "search.log", STUDY_FILE]

    with pytest.raises(NluDeployError, match="used other options or data"):
        search(
            tiny_config(tiny_encoder, tiny_train_csv, output, resume=True, max_length=24), searched, show_progress=False
        )
    shutil.copytree(study_dir, search_dir(tmp_path / "elsewhere"))  # a study already there, no --resume
    with pytest.raises(NluDeployError, match="pass --resume to continue it or --overwrite"):
        search(tiny_config(tiny_encoder, tiny_train_csv, tmp_path / "elsewhere"), searched, show_progress=False)


def test_options_given_on_the_command_line_are_not_searched(tmp_path, tiny_encoder, tiny_train_csv):
    output = tmp_path / "tuned"
    result = CliRunner().invoke(
        main,
        [
            "finetune",
            "--model",
            str(tiny_encoder),
            "--train",
            str(tiny_train_csv),
            "--max-length",
            "32",
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--lr",
            "5e-3",
            "--search",
            "2",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((output / "search_report.json").read_text())
    assert set(report["searched"]) == {"warmup_ratio", "weight_decay"}
    assert report["fixed"]["lr"] == 5e-3 and report["fixed"]["epochs"] == 2 and report["fixed"]["batch_size"] == 8
    assert all(set(t["params"]) == {"warmup_ratio", "weight_decay"} for t in report["trials"])
    assert "Best of 2 trials" in result.output

    bad = CliRunner().invoke(main, ["finetune", "--search-time", "5", "--output", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--search-time needs --search N" in bad.output


@pytest.mark.filterwarnings("ignore:Fixed parameter")
def test_the_time_limit_stops_a_trial_keeps_the_best_finished_one_and_resume_reruns_it(
    tmp_path, tiny_encoder, tiny_train_csv, monkeypatch
):
    import time as real_time

    import nlu_deploy.training.search as search_module

    class Clock:  # the search's clock, moved an hour on when the second trial reaches step 3
        offset = 0.0

        @staticmethod
        def monotonic():
            return real_time.monotonic() + Clock.offset

    def jump(number, step):
        if number == 1 and step == 3:
            Clock.offset = 3600.0

    monkeypatch.setattr(search_module, "time", Clock)
    output = tmp_path / "timed"
    study_dir = search_dir(output)
    study_dir.mkdir()
    study = optuna.create_study(
        storage=f"sqlite:///{study_dir / STUDY_FILE}", study_name=STUDY_NAME, direction="maximize"
    )
    for params in GOOD:
        study.enqueue_trial(params)
    limited = SearchConfig(trials=5, minutes=30, fixed=("batch_size",))
    search(
        tiny_config(tiny_encoder, tiny_train_csv, output, resume=True), limited, show_progress=False, on_trial_step=jump
    )
    report = json.loads((output / "search_report.json").read_text())
    assert [t["state"] for t in report["trials"]] == ["COMPLETE", "FAIL"]  # nothing started after the limit
    assert report["best_trial"] == 0
    assert "stopped by the --search-time limit" in (study_dir / "search.log").read_text()

    monkeypatch.setattr(search_module, "time", real_time)
    search(
        tiny_config(tiny_encoder, tiny_train_csv, output, resume=True),
        SearchConfig(trials=2, fixed=("batch_size",)),
        show_progress=False,
    )
    report = json.loads((output / "search_report.json").read_text())
    assert [t["state"] for t in report["trials"]] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert report["trials"][2]["params"] == report["trials"][1]["params"] == GOOD[1]
