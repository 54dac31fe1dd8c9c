"""Several workers on one Optuna study in a real PostgreSQL (pgserver: no root, no Docker): the
study counts every worker's trials, a killed worker's trial is failed and not counted, and
`search-result` writes the report over all trials with the best checkpoint."""

import os
import signal
import subprocess
import sys
import time

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
    assert not (tmp_path / "out").exists()


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
