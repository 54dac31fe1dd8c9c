"""Several workers on one Optuna study in a real PostgreSQL (pgserver: no root, no Docker): the
study counts every worker's trials, a killed worker's trial is failed and not counted, and
`search-result` writes the report over all trials with the best checkpoint."""

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from nlu_deploy import artifacts
from nlu_deploy.cli import main
from nlu_deploy.config import FinetuneConfig, SearchConfig
from nlu_deploy.errors import NluDeployError
from nlu_deploy.training.search import search

pgserver = pytest.importorskip("pgserver")

TINY = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--seed", "5"]
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def worker(tiny_encoder, tiny_train_csv, url, name, output, trials):
    command = [sys.executable, "-m", "nlu_deploy", "finetune", "--model", str(tiny_encoder), "--train",
               str(tiny_train_csv), *TINY, "--search", str(trials), "--study-storage", url, "--study-name", name,
               "--output", str(output)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_workers_share_one_study_and_search_result_writes_its_best(
    tmp_path, database, tiny_encoder, tiny_train_csv
):
    workers = [worker(tiny_encoder, tiny_train_csv, database, "shared", tmp_path / f"w{i}", 4) for i in (1, 2)]
    outcomes = [w.communicate(timeout=600) for w in workers]
    for w, (_, stderr) in zip(workers, outcomes):
        assert w.returncode == 0, stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=database)
    counted = study.get_trials(states=COUNTED)
    # N counts the whole study; two workers asking at the same instant may each start the last one
    assert 4 <= len(counted) <= 5
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both workers ran trials
    # every epoch's score reached the study from both workers: the pruner judges each trial against all
    reporting = {t.user_attrs["worker"] for t in study.trials if t.intermediate_values}
    assert len(reporting) == 2
    best = study.best_trial
    assert best.user_attrs["checkpoint"].startswith(str(tmp_path))
    for i in (1, 2):  # each worker's output: the study's best so far, and a report over every trial
        report = artifacts.read_json(tmp_path / f"w{i}" / "search_report.json")
        assert report["trials_asked"] == 4 and report["study"].startswith("postgresql://")

    result = CliRunner().invoke(main, ["search-result", "--study-storage", database, "--study-name", "shared",
                                       "--output", str(tmp_path / "result")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = artifacts.read_json(tmp_path / "result" / "search_report.json")
    assert report["best_trial"] == best.number and report["best_value"] == best.value
    assert len(report["trials"]) == len([t for t in study.trials if t.state.is_finished()])
    assert (tmp_path / "result" / "model.safetensors").exists()
    assert artifacts.read_json(tmp_path / "result" / "metrics.json")["best"]["accuracy"] == best.value


def test_a_killed_workers_trial_is_failed_and_not_counted(tmp_path, database, tiny_encoder, tiny_train_csv):
    killed = worker(tiny_encoder, tiny_train_csv, database, "killed", tmp_path / "killed", 2)
    deadline = time.monotonic() + 120
    running = []
    while not running and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="killed", storage=database)
        except KeyError:  # not created yet
            continue
        running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert running, "the worker never started a trial"
    os.kill(killed.pid, signal.SIGKILL)  # mid-trial: no cleanup, its trial stays RUNNING
    killed.wait()
    time.sleep(4)  # three of the next worker's 1 s heartbeats: the killed trial is stale

    config = FinetuneConfig(output=tmp_path / "rescuer", model=str(tiny_encoder), train=tiny_train_csv, epochs=1,
                            batch_size=8, max_length=32, seed=5)  # fmt: skip
    fixed = ("batch_size", "epochs")  # what the worker's command line gave, as the CLI records it
    shared = SearchConfig(trials=2, fixed=fixed, storage=database, study_name="killed", heartbeat_seconds=1)
    found = search(config, shared, show_progress=False)
    study = optuna.load_study(study_name="killed", storage=database)
    assert study.trials[running[0].number].state == optuna.trial.TrialState.FAIL
    assert len(study.get_trials(states=COUNTED)) == 2  # the failed trial did not count: two more ran
    assert found.best_trial != running[0].number


def test_a_storage_that_cannot_be_reached_is_one_sentence(tmp_path, tiny_encoder, tiny_train_csv):
    url = f"postgresql://postgres:secret@/postgres?host={tmp_path}/no-server"
    result = CliRunner().invoke(main, ["finetune", "--model", str(tiny_encoder), "--train", str(tiny_train_csv),
                                       *TINY, "--search", "2", "--study-storage", url, "--output",
                                       str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "the study storage postgresql://postgres:***@" in result.output and "cannot be used" in result.output
    assert "secret" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.search").exists()  # no empty folder either


def test_a_shared_study_refuses_other_data(tmp_path, database, tiny_encoder, tiny_train_csv, tiny_dev_csv):
    config = FinetuneConfig(output=tmp_path / "a", model=str(tiny_encoder), train=tiny_train_csv, epochs=1,
                            batch_size=8, max_length=32)  # fmt: skip
    shared = SearchConfig(trials=1, storage=database, study_name="one-data")
    search(config, shared, show_progress=False)
    other = FinetuneConfig(output=tmp_path / "b", model=str(tiny_encoder), train=tiny_dev_csv, epochs=1,
                           batch_size=8, max_length=32)  # fmt: skip
    with pytest.raises(NluDeployError, match="study 'one-data' used other options or data"):
        search(other, shared, show_progress=False)


def test_a_database_url_without_its_driver_says_what_to_install(tmp_path, tiny_encoder, tiny_train_csv):
    pytest.importorskip("sqlalchemy")
    if __import__("importlib").util.find_spec("pymysql") is not None:
        pytest.skip("PyMySQL is installed here: the missing-driver path cannot be reached")
    url = "mysql+pymysql://nlu:secret@127.0.0.1:1/search"
    result = CliRunner().invoke(main, ["finetune", "--model", str(tiny_encoder), "--train", str(tiny_train_csv),
                                       *TINY, "--search", "2", "--study-storage", url, "--output",
                                       str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "no database driver for mysql+pymysql://nlu:***@" in result.output and "PyMySQL" in result.output
    assert "secret" not in result.output and "Traceback" not in result.output


def search_result_cli(database, name, output, *extra):
    return CliRunner().invoke(main, ["search-result", "--study-storage", database, "--study-name", name,
                                     "--output", str(output), *extra])  # fmt: skip


def test_a_worker_rerun_with_overwrite_keeps_the_checkpoint_the_study_records(
    tmp_path, database, tiny_encoder, tiny_train_csv
):
    config = FinetuneConfig(output=tmp_path / "w", model=str(tiny_encoder), train=tiny_train_csv, epochs=1,
                            batch_size=8, max_length=32, seed=5)  # fmt: skip
    shared = SearchConfig(trials=1, fixed=("batch_size", "epochs"), storage=database, study_name="rerun")
    search(config, shared, show_progress=False)
    recorded = Path(optuna.load_study(study_name="rerun", storage=database).best_trial.user_attrs["checkpoint"])
    assert recorded.name == "best-rerun" and (recorded / "model.safetensors").exists()
    # the same worker again with --overwrite, now for a second study: neither best is lost
    search(replace(config, overwrite=True), replace(shared, study_name="second"), show_progress=False)
    search(replace(config, overwrite=True), shared, show_progress=False)
    assert (recorded / "model.safetensors").exists() and (tmp_path / "w.search" / "best-second").is_dir()
    result = search_result_cli(database, "rerun", tmp_path / "result")
    assert result.exit_code == 0, result.output


def test_search_result_never_replaces_a_folder_without_overwrite(tmp_path, database, tiny_encoder, tiny_train_csv):
    config = FinetuneConfig(output=tmp_path / "w", model=str(tiny_encoder), train=tiny_train_csv, epochs=1,
                            batch_size=8, max_length=32, seed=5)  # fmt: skip
    search(config, SearchConfig(trials=1, storage=database, study_name="result-dir"), show_progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    refused = search_result_cli(database, "result-dir", mine)
    assert refused.exit_code == 1 and "already exists and is not empty; pass --overwrite" in refused.output
    assert (mine / "notes.txt").read_text() == "a user's file"
    replaced = search_result_cli(database, "result-dir", mine, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (mine / "model.safetensors").exists() and not (mine / "notes.txt").exists()
    # the same message when the best checkpoint is gone from this machine: not "another machine"
    shutil.rmtree(tmp_path / "w.search")
    gone = search_result_cli(database, "result-dir", tmp_path / "again")
    assert gone.exit_code == 1 and "ran on this machine, but its checkpoint" in gone.output
    assert not (tmp_path / "again").exists()


def test_a_database_that_goes_away_is_named_and_its_trial_is_failed_later(tmp_path, tiny_encoder, tiny_train_csv):
    server = pgserver.get_server(tmp_path / "postgres", cleanup_mode="stop")
    url = server.get_uri()
    command = [sys.executable, "-m", "nlu_deploy", "finetune", "--model", str(tiny_encoder), "--train",
               str(tiny_train_csv), "--epochs", "20", "--batch-size", "8", "--max-length", "32", "--search", "2",
               "--study-storage", url, "--study-name", "gone", "--output", str(tmp_path / "w")]  # fmt: skip
    worker_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in worker_process.stderr:  # mid-trial: its second epoch has begun
        if "epoch 1/20" in line:
            break
    server.cleanup()  # the database stops under the worker
    _, stderr = worker_process.communicate(timeout=120)
    assert worker_process.returncode == 1 and "Traceback" not in stderr
    assert "the study storage postgresql://postgres:***@" in stderr and "went away" in stderr
    assert "invalid data" not in stderr
    assert sorted(p.name for p in (tmp_path / "w.search").iterdir()) == ["search.log"]  # no dead trial's files

    server = pgserver.get_server(tmp_path / "postgres", cleanup_mode="stop")  # the database is back
    try:
        time.sleep(4)  # three of the next worker's 1 s heartbeats
        config = FinetuneConfig(output=tmp_path / "rescuer", model=str(tiny_encoder), train=tiny_train_csv,
                                epochs=20, batch_size=8, max_length=32)  # the worker's options  # fmt: skip
        search(config, SearchConfig(trials=2, fixed=("batch_size", "epochs"), storage=url, study_name="gone",
                                    heartbeat_seconds=1), show_progress=False)  # fmt: skip
        study = optuna.load_study(study_name="gone", storage=url)
        assert study.trials[0].state == optuna.trial.TrialState.FAIL
        assert len(study.get_trials(states=COUNTED)) == 2
    finally:
        server.cleanup()


def test_run_records_the_best_checkpoint_where_its_output_ends_up(tmp_path, database, tiny_encoder, tiny_train_csv):
    output = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--model", str(tiny_encoder), "--train", str(tiny_train_csv), *TINY,
                                       "--search", "1", "--study-storage", database, "--study-name", "run-study",
                                       "--recipe", "fixed",
                                       "--batch-sizes", "1", "--seq-lens", "8", "--min-seconds", "0",
                                       "--output", str(output)])  # fmt: skip
    assert result.exit_code == 0, result.output
    recorded = optuna.load_study(study_name="run-study", storage=database).best_trial.user_attrs["checkpoint"]
    assert recorded == str((output / "checkpoint.search" / "best-run-study").resolve())  # not the staging folder
    again = search_result_cli(database, "run-study", tmp_path / "result")
    assert again.exit_code == 0, again.output
