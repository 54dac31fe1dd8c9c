"""`finetune --search N`: N real fine-tunes chosen by Optuna, the best one kept.

Each trial is a whole `finetune` with options drawn from SEARCH_SPACE by a TPE sampler, scored on
the held-out split by the task's primary score (the one that picks the best epoch). After every
epoch the trial reports that score and a median pruner stops trials that trail the median of
earlier trials at the same epoch. Options the user gave are never searched.

Everything lives beside the output in `OUTPUT.search/`: the SQLite study (`study.db`), a log and
the best trial's checkpoint so far. An interrupted search (Ctrl-C, SIGTERM, a killed machine)
continues with --resume: finished and pruned trials are kept, an unfinished one is run again
with the same options. `--search-time` caps the wall time; the trial running at the deadline is
stopped and the best finished trial is the output. The output is that trial's checkpoint plus
search_report.md / .json (every trial: options, score per epoch, time, pruned or not) and
search.png (score against trial, and which options mattered).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.config import SEARCH_SPACE, FinetuneConfig, SearchConfig
from nlu_deploy.errors import ConfigError, NluDeployError
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.progress import ProgressLog
from nlu_deploy.reports import markdown_table
from nlu_deploy.tasks import get_task
from nlu_deploy.training import checkpointing
from nlu_deploy.training.distributed import any_across, barrier, from_main, init_distributed, shutdown
from nlu_deploy.training.loop import finetune

STUDY_FILE = "study.db"
LOG_FILE = "search.log"
BEST_DIR = "best"
TRIAL_FILE = "trial.json"  # in BEST_DIR: which trial it holds, and its score
REPORT_JSON, REPORT_MD, REPORT_PLOT = "search_report.json", "search_report.md", "search.png"
STUDY_NAME = "nlu-deploy"


class SearchTimeUp(Exception):
    """The --search-time deadline passed during a trial."""


def search_dir(output: Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.name}.search")


@dataclass
class SearchResult:
    output: Path
    best_trial: int
    best_value: float
    best_params: dict
    trials: list[dict]


def searched_options(config: FinetuneConfig, search: SearchConfig) -> list[str]:
    task = get_task(config.task)
    return [name for name in (*_COMMON, *task.searched_options) if name not in search.fixed]


_COMMON = tuple(name for name in SEARCH_SPACE if name != "slot_loss_weight")  # every task's


def draw(trial, names: list[str]) -> dict:
    params = {}
    for name in names:
        kind, *bounds = SEARCH_SPACE[name]
        if kind == "log":
            params[name] = trial.suggest_float(name, bounds[0], bounds[1], log=True)
        elif kind == "float":
            params[name] = trial.suggest_float(name, bounds[0], bounds[1])
        elif kind == "int":
            params[name] = trial.suggest_int(name, bounds[0], bounds[1])
        else:
            params[name] = trial.suggest_categorical(name, list(bounds[0]))
    return params


def search(
    config: FinetuneConfig,
    search: SearchConfig,
    show_progress: bool = True,
    on_trial_step=None,
    distillation=None,
    final_directory: Path | None = None,
) -> SearchResult | None:
    """Run (or continue, with config.resume) the search; write the best trial to config.output.
    `on_trial_step(trial_number, global_step)` is called after every optimizer step (tests use it
    to interrupt a search). With a `distillation` (distill.py) every trial trains a student.
    Under torchrun the trials run one after another, each with every process (DDP): the main
    process alone holds the study and the files, and tells the others each trial's options and
    whether to prune or stop. It returns the result; the other processes return None.
    `final_directory`: where OUTPUT.search/ will be once a caller that stages it (run) is done; a
    shared study records the best checkpoint's path there, where `search-result` will find it."""

    names = searched_options(config, search)
    if not names:
        raise ConfigError(
            "every searched option (lr, batch size, epochs, warm-up, weight decay) was given; "
            "there is nothing left to search."
        )
    context = init_distributed(config.device)  # joined once; every trial's finetune reuses the group
    main = context.is_main
    directory = search_dir(config.output)
    kept = Kept(best_dir(directory, search), best_dir(final_directory or directory, search))
    deadline = time.monotonic() + 60 * search.minutes if search.minutes else None
    study = log = None
    with storage_errors(search.storage) as connection, _no_empty_folder(directory):
        if main:
            study, log = _open_study(config, search, names, directory, show_progress)
            connection.opened = True
        runner = _TrialRunner(
            config, search, context, study, log, directory, kept, deadline, show_progress, on_trial_step, distillation
        )
        while True:
            order = trial = None
            if main:
                trial, order = _next_trial(study, search, names, deadline, log)
            order = from_main(context, order)  # None: stop
            if order is None or not runner.run(trial, *order, search.trials):
                break
        found = _write_output(study, _report_facts(config, search, names), kept.path, config.output) if main else None
    shutdown(context)
    return found


@dataclass(frozen=True)
class Kept:
    """Where this worker keeps its best checkpoint, and the path the study records for it (the
    same, unless a caller moves the folder afterwards)."""

    path: Path
    recorded: Path


def best_dir(directory: Path, search: SearchConfig) -> Path:
    """best/ for a search's own study; best-STUDY/ for a shared one, so that a worker folder reused
    for another study never replaces a checkpoint the first study records as its best."""
    if search.storage is None:
        return directory / BEST_DIR
    return directory / f"{BEST_DIR}-{re.sub(r'[^A-Za-z0-9_.-]', '_', search.study_name or STUDY_NAME)}"


@contextlib.contextmanager
def _no_empty_folder(directory: Path):
    """A search that fails before its first trial (a database that cannot be reached) leaves no
    empty OUTPUT.search/ behind."""
    existed = directory.exists()
    try:
        yield
    except BaseException:
        if not existed and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        raise


def _next_trial(study, search: SearchConfig, names: list[str], deadline, log):
    """(the trial, (its number, its options, its position)), or (None, None) to stop: at the
    deadline, or once the study holds N trials, counting those other workers are running."""
    import optuna

    if deadline and time.monotonic() >= deadline:
        log.line("search: the --search-time limit is reached; no new trial starts.")
        return None, None
    with warnings.catch_warnings():  # fail_stale_trials is marked experimental
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and not counted
    if search.storage is not None:
        _fail_trials_that_never_beat(study, 3 * search.heartbeat_seconds, log)
    counted = _counted(study)
    if counted >= search.trials:
        log.line(f"search: the study holds {counted} of {search.trials} trials; no new trial starts.")
        return None, None
    with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(); we beat ourselves
        warnings.simplefilter("ignore")
        trial = study.ask()
    return trial, (trial.number, draw(trial, names), counted + 1)


def _fail_trials_that_never_beat(study, grace_seconds: float, log) -> None:
    """Optuna judges a trial stale by its last heartbeat, and a trial without one is never stale:
    a worker killed between asking for a trial and its first beat left it RUNNING, and counted,
    for good. Our workers mark a trial with `worker` right after its first beat; a RUNNING trial
    without the mark, older than the grace period, lost its worker before it began."""
    import datetime

    import optuna

    storage = study._storage  # noqa: SLF001 - Optuna exposes no public way to fail another worker's trial
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        started = trial.datetime_start
        if "worker" not in trial.user_attrs and started and (now - started).total_seconds() > grace_seconds:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # it just ended after all
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
                log.line(f"trial {trial.number + 1}: its worker died before the trial began; failed, not counted.")


def _counted(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


class _TrialRunner:
    """One trial: a fine-tune with the drawn options, reporting each epoch to the study (which
    may prune it) and stopping at the --search-time deadline. Every process runs it; only the
    main one talks to the study and writes files."""

    def __init__(
        self, config, search, context, study, log, directory, kept, deadline, show_progress, on_trial_step, distillation
    ):
        self.config, self.context, self.study, self.log, self.directory = config, context, study, log, directory
        self.kept = kept
        self.deadline, self.show_progress, self.on_trial_step = deadline, show_progress, on_trial_step
        self.distillation, self.heartbeat = distillation, search.heartbeat_seconds
        self.metric = get_task(config.task).primary_metric
        self.trial, self.last_beat = None, 0.0

    def beat(self) -> None:
        """Tell a shared study this trial is alive; one silent for three beats is failed."""
        storage = getattr(self.study, "_storage", None)
        if self.trial is not None and hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval():
            if time.monotonic() - self.last_beat >= self.heartbeat:
                storage.record_heartbeat(self.trial._trial_id)  # noqa: SLF001 - Optuna's ask/tell has no public beat
                self.last_beat = time.monotonic()

    def run(self, trial, number: int, params: dict, position: int, trials: int) -> bool:
        """False when the search must stop (the deadline came mid-trial)."""
        import gc

        import optuna

        main, context, study, log = self.context.is_main, self.context, self.study, self.log
        trial_dir = self.directory / f"trial-{number}"
        self.trial, self.last_beat = trial, 0.0
        if main:  # the beat first: a trial marked with its worker has a heartbeat (_fail_trials_that_never_beat)
            self.beat()
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if main:
            shown = ", ".join(f"{k} {_shown(v)}" for k, v in params.items())
            log.line(f"trial {number + 1} ({position} of {trials}): {shown}")
        started = time.monotonic()
        reported: list[int] = []
        try:
            result = finetune(
                replace(self.config, **params, output=trial_dir, overwrite=True, resume=False),
                self.show_progress,
                on_step=lambda step: self._on_step(number, step),
                on_epoch=lambda epoch, scores: self._on_epoch(trial, epoch, scores, reported),
                distillation=self.distillation,
            )
        except optuna.TrialPruned:
            gc.collect()  # the trial's DDP wrapper goes while the process group is still there
            if main:
                trial.set_user_attr("seconds", time.monotonic() - started)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                _remove_trial(trial_dir)
                log.line(f"trial {number + 1}: pruned after epoch {reported[-1]} ({_best_line(study)})")
            barrier(context)
            return True
        except SearchTimeUp:
            gc.collect()
            if main:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(params)  # the next --resume starts with it
                _remove_trial(trial_dir)
                log.line(f"trial {number + 1}: stopped by the --search-time limit; --resume runs it again.")
            return False
        except BaseException:  # a signal, a database gone: the trial's folders are of no further use
            if main:
                _remove_trial(trial_dir)
            raise
        if main:
            _record_finished(study, trial, result, self.metric, started, trial_dir, self.kept)
            left = f", {max(0, (self.deadline - time.monotonic()) / 60):.0f} min left" if self.deadline else ""
            log.line(
                f"trial {number + 1}: validation {DISPLAY_NAMES[self.metric]} {result.best_scores[self.metric]:.4f} "
                f"({_best_line(study)}{left})"
            )
        barrier(context)  # the next trial starts once the main process has filed this one
        return True

    def _on_step(self, number: int, step: int) -> None:
        if self.context.is_main:
            self.beat()
        if self.on_trial_step:
            self.on_trial_step(number, step)
        # every process stops at the same step (the main one's clock decides)
        late = self.context.is_main and self.deadline is not None and time.monotonic() >= self.deadline
        if self.deadline and any_across(self.context, late):
            raise SearchTimeUp

    def _on_epoch(self, trial, epoch: int, scores: dict, reported: list[int]) -> None:
        import optuna

        reported.append(epoch)
        prune = False
        if self.context.is_main:
            trial.report(scores[self.metric], epoch)
            prune = trial.should_prune()
        if from_main(self.context, prune):
            raise optuna.TrialPruned


def _open_study(config: FinetuneConfig, search: SearchConfig, names: list[str], directory: Path, show_progress: bool):
    """(the study, the search log): the study created, or reopened with its interrupted trials
    queued to run again (a study of its own) or joined (a shared one)."""
    import optuna

    shared = search.storage is not None
    _refuse_clobbering(config, directory, shared)
    if config.overwrite and not config.resume and directory.exists():
        _start_over(directory, shared)
    directory.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A few random trials before TPE models the space; pruning starts once two trials have finished.
    # A shared study's workers seed their samplers apart, or they would all draw the same options.
    seed = config.seed + (os.getpid() if shared else 0)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, search.trials // 3)))
    study = optuna.create_study(
        storage=study_storage(search, directory),
        study_name=search.study_name or STUDY_NAME,
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    _check_same_search(study, config, names, shared)
    if "report" not in study.user_attrs:  # what `search-result` needs to write the report
        study.set_user_attr("report", _report_facts(config, search, names))
    log = ProgressLog(directory / LOG_FILE, show_progress)
    if not shared:  # a shared study's running trials may be other workers' (heartbeats tell the dead ones)
        _rerun_interrupted(study, directory, log)
    done = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    if shared:
        log.line(f"search: worker {socket.gethostname()}:{os.getpid()} joins study {study.study_name!r} at "
                 f"{redacted(search.storage)}")  # fmt: skip
    metric = get_task(config.task).primary_metric
    log.line(
        f"search: {search.trials} trials of {config.task} over {', '.join(names)}, scored on validation "
        f"{DISPLAY_NAMES[metric]}; {len(done)} already finished"
        + (f", {search.minutes:g} minutes at most" if search.minutes else "")
    )
    return study, log


def _start_over(directory: Path, shared: bool) -> None:
    """--overwrite: a search of its own starts from an empty folder. A shared study's worker keeps
    its best-STUDY/ checkpoints, which studies record as their best (search-result reads them);
    only the leftovers of its unfinished trials go."""
    if not shared:
        shutil.rmtree(directory)
        return
    for leftover in [*directory.glob("trial-*"), *directory.glob(".trial-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _record_finished(study, trial, result, metric: str, started: float, trial_dir: Path, kept_best: Kept) -> None:
    """Tell the study a finished trial's score; keep its checkpoint only if it is the best so far."""
    trial.set_user_attr("seconds", time.monotonic() - started)
    trial.set_user_attr("scores", {k: v for k, v in result.best_scores.items() if k != "per_type"})
    trial.set_user_attr("best_epoch", result.best_epoch)
    value = result.best_scores[metric]
    kept = kept_best.path
    previous_best = None
    if (kept / TRIAL_FILE).exists():  # searches from before 2026-12-01 recorded only the trial's number
        recorded = artifacts.read_json(kept / TRIAL_FILE)
        previous_best = recorded.get("value", study.trials[recorded["trial"]].value)
    if previous_best is None or value > previous_best:  # this worker's best so far: its checkpoint stays
        shutil.rmtree(kept, ignore_errors=True)
        trial_dir.rename(kept)
        artifacts.write_json(kept / TRIAL_FILE, {"trial": trial.number, "value": value})
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("checkpoint", str(kept_best.recorded.resolve()))
    else:
        _remove_trial(trial_dir)
    study.tell(trial, value)


def _report_facts(config: FinetuneConfig, search: SearchConfig, names: list[str]) -> dict:
    """What the report says about the search itself; kept in the study, so that
    `search-result` can write the report without the command that started it."""
    task = get_task(config.task)
    return {
        "task": config.task,
        "metric": task.primary_metric,
        "trials_asked": search.trials,
        "minutes": search.minutes,
        "searched": {n: SEARCH_SPACE[n] for n in names},
        "fixed": {n: getattr(config, n) for n in (*_COMMON, *task.searched_options) if n not in names},
        "study": redacted(search.storage) if search.storage else str(search_dir(config.output) / STUDY_FILE),
        "study_name": search.study_name or STUDY_NAME,
    }


def _write_output(study, facts: dict, kept: Path | None, output: Path, overwrite: bool = True) -> SearchResult:
    """The best trial's checkpoint with the report over every trial of the study, into output.
    `kept`: this worker's best checkpoint (None for search-result, which ran no trial)."""
    if _best_value(study) is None:
        where = f" (see {kept.parent / LOG_FILE})" if kept else ""
        raise NluDeployError(
            f"no trial of the search finished{where}; give it more time (--search-time) or continue it with --resume."
        )
    best = study.best_trial
    checkpoint = _best_checkpoint(best, kept, facts)
    trials = [_trial_record(t) for t in study.trials if t.state.is_finished()]  # not the queued ones
    report = {
        **{k: v for k, v in facts.items() if k not in ("study", "study_name")},
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
        "importances": _importances(study),
        "trials": trials,
        "study": facts["study"],
        "workers": sorted({t.user_attrs["host"] for t in study.trials if "host" in t.user_attrs}),
    }
    from nlu_deploy.evaluation.plots import plot_search

    with artifacts.staged_output(output, overwrite=overwrite) as out:
        for item in checkpoint.iterdir():
            if item.name != TRIAL_FILE:
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
        artifacts.write_json(out / REPORT_JSON, report)
        (out / REPORT_MD).write_text(search_markdown(report), encoding="utf-8")
        plot_search(report, out / REPORT_PLOT)
        manifest = artifacts.read_manifest(out)
        manifest["options"]["output"] = str(output)
        manifest["search"] = {"trials": len(trials), "best_trial": best.number, "study": facts["study"]}
        artifacts.write_json(out / artifacts.MANIFEST, manifest)
    return SearchResult(Path(output), best.number, best.value, best.params, trials)


def _best_checkpoint(best, kept: Path | None, facts: dict) -> Path:
    """Where the best trial's checkpoint is, read from this machine: the path its worker
    recorded (a shared filesystem, or this worker), else this worker's own best."""
    candidates = [Path(best.user_attrs["checkpoint"])] if best.user_attrs.get("checkpoint") else []
    if kept is not None:
        candidates.append(kept)
    for path in candidates:
        if (path / TRIAL_FILE).is_file() and artifacts.read_json(path / TRIAL_FILE).get("trial") == best.number:
            return path
    host, path = best.user_attrs.get("host", "another machine"), best.user_attrs.get("checkpoint", "?")
    if host == socket.gethostname():
        raise NluDeployError(
            f"the best trial ({best.number + 1}) ran on this machine, but its checkpoint {path} is no longer there "
            "(its folder was removed or moved); the study cannot give its best model any more."
        )
    raise NluDeployError(
        f"the best trial ({best.number + 1}) ran on {host}, whose checkpoint {path} this machine cannot read: run "
        f"`nlu-deploy search-result --study-storage URL --study-name {facts['study_name']} --output DIR` there, or "
        "on a machine that shares that filesystem."
    )


def search_result(storage: str, study_name: str | None, output: Path, overwrite: bool = False) -> SearchResult:
    """The report over every trial of a shared study, and the best trial's checkpoint, into
    output: what a worker writes when it stops, for whoever runs it once the study is done. An
    output holding files is replaced only with `overwrite`, and only once the new one is complete."""
    import optuna

    artifacts.check_output(output, overwrite)  # before the database is asked anything
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name or STUDY_NAME
    with storage_errors(storage):
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise NluDeployError(f"{redacted(storage)} holds no study named {name!r}.") from None
        facts = study.user_attrs.get("report")
        if facts is None:
            raise NluDeployError(f"study {name!r} was not made by `nlu-deploy ... --search`.")
        return _write_output(study, facts, None, output, overwrite)


@dataclass
class _Connection:
    opened: bool = False  # the study was opened: a failed connection now means the database went away


@contextlib.contextmanager
def storage_errors(storage: str | None):
    """A database that cannot be reached, or goes away mid-search, is one sentence."""
    connection = _Connection()
    try:
        yield connection
    except ImportError as exc:
        if storage is None:
            raise
        raise NluDeployError(
            f"no database driver for {redacted(storage)} ({exc}): for postgresql:// install psycopg "
            "(pip install -e '.[postgres]'); for MySQL, PyMySQL and a mysql+pymysql:// URL."
        ) from None
    except Exception as exc:  # SQLAlchemy and Optuna raise many types; only theirs are translated
        module = type(exc).__module__.split(".")[0]
        if storage is None or module not in ("sqlalchemy", "optuna", "psycopg", "psycopg2", "pymysql"):
            raise
        lost = _lost_connection(exc) if connection.opened else None
        if lost is not None:
            raise NluDeployError(
                f"the study storage {redacted(storage)} went away ({lost[:200]}); this worker stopped. Start the "
                "database again and rerun the same command: the trial it was running is failed by the next "
                "worker that finds its heartbeat silent, and is not counted."
            ) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NluDeployError(f"the study storage {redacted(storage)} cannot be used ({reason[:200]}).") from None


def _lost_connection(exc: BaseException) -> str | None:
    """The reason, when an error comes down to a database connection that failed (Optuna wraps a
    failed commit as "invalid data ... exceeding max length", whatever the cause): the DB-API's
    OperationalError or InterfaceError anywhere in the chain of causes."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in ("OperationalError", "InterfaceError"):
            text = " ".join(str(getattr(exc, "orig", None) or exc).split())
            return text.split("[SQL:")[0].strip() or type(exc).__name__
        exc = exc.__cause__ or exc.__context__
    return None


def search_markdown(report: dict) -> str:
    metric = DISPLAY_NAMES[report["metric"]]
    names = list(report["searched"])
    rows = []
    for t in report["trials"]:
        epochs = " / ".join(f"{100 * v:.2f}" for _, v in sorted(t["epoch_scores"].items(), key=lambda kv: int(kv[0])))
        rows.append(
            [
                t["number"] + 1,
                t["state"].lower() + (" (best)" if t["number"] == report["best_trial"] else ""),
                *[_shown(t["params"].get(n)) for n in names],
                "" if t["value"] is None else f"{100 * t['value']:.2f}",
                epochs,
                "" if t["seconds"] is None else f"{t['seconds']:.0f}",
            ]
        )
    table = markdown_table(["trial", "state", *names, f"{metric} %", f"{metric} % per epoch", "seconds"], rows)
    importances = (
        ", ".join(f"{k} {v:.2f}" for k, v in report["importances"].items())
        or "not computed (it needs two finished trials that differ)"
    )
    fixed = ", ".join(f"{k} {_shown(v)}" for k, v in report["fixed"].items()) or "none"
    return (
        f"# Hyperparameter search: {report['task']}\n\nBest: trial {report['best_trial'] + 1}, validation "
        f"{metric} {100 * report['best_value']:.2f}% with "
        + ", ".join(f"{k} {_shown(v)}" for k, v in report["best_params"].items())
        + f".\n\nFixed (given by the user or not searched for this task): {fixed}.\n\n{table}\n\n"
        f"Parameter importances (Optuna's default evaluator, PED-ANOVA in Optuna 5: how much each option's value separates the best trials from the rest): {importances}.\n"
    )


def _trial_record(trial) -> dict:
    seconds = trial.user_attrs.get("seconds")
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "value": trial.value,
        "epoch_scores": {str(k): v for k, v in trial.intermediate_values.items()},
        "scores": trial.user_attrs.get("scores"),
        "best_epoch": trial.user_attrs.get("best_epoch"),
        "seconds": seconds,
        "worker": trial.user_attrs.get("worker"),  # host:pid, for a study several workers share
    }


def _importances(study) -> dict[str, float]:
    """Optuna's importances, or {} where it cannot tell (too few trials, or no variation: it then
    warns and returns equal shares, which would read as a finding)."""
    import warnings

    import optuna

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            return {}
    if any("will be equal" in str(w.message) for w in caught):
        return {}
    return {k: float(v) for k, v in importances.items()}


def _best_value(study) -> float | None:
    values = [t.value for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    return max(values) if values else None


def _best_line(study) -> str:
    best = _best_value(study)
    if best is None:
        return "no finished trial yet"
    return f"best so far {best:.4f}, trial {study.best_trial.number + 1}"


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _remove_trial(trial_dir: Path) -> None:
    shutil.rmtree(trial_dir, ignore_errors=True)
    shutil.rmtree(checkpointing.training_state_dir(trial_dir), ignore_errors=True)


def _rerun_interrupted(study, directory: Path, log: ProgressLog) -> None:
    """Trials left running by a killed search are marked failed and queued again, same options."""
    import optuna

    storage = study._storage  # noqa: SLF001 - Optuna exposes no public way to fail a stale trial
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
            _remove_trial(directory / f"trial-{trial.number}")
            study.enqueue_trial(trial.params)
            log.line(f"trial {trial.number + 1} was interrupted; it runs again with the same options.")


def _check_same_search(study, config: FinetuneConfig, names: list[str], shared: bool = False) -> None:
    """A study continues only with the same data and options (bar the searched ones). Workers of a
    shared study may read the data from other paths and use other devices; not other data."""
    per_worker = (
        "output",
        "resume",
        "overwrite",
        "checkpoint_every",
        *(("train", "validation", "device") if shared else ()),
    )
    facts = {k: str(v) for k, v in asdict(config).items() if k not in (*names, *per_worker)}
    for part in ("train", "validation"):
        path = getattr(config, part)
        if path is not None and Path(path).is_file():
            facts[f"{part}_sha256"] = artifacts.file_sha256(Path(path))
    facts["searched"] = ",".join(names)
    recorded = study.user_attrs.get("options")
    if recorded is None:
        study.set_user_attr("options", facts)
    elif recorded != facts:
        changed = sorted(k for k in {*recorded, *facts} if recorded.get(k) != facts.get(k))
        where = f"study {study.study_name!r}" if shared else f"the search in {search_dir(config.output)}"
        raise NluDeployError(
            f"{where} used other options or data ({', '.join(changed)}); run it with those, or "
            f"{'choose another --study-name' if shared else 'pass --overwrite to start a new one'}."
        )


def study_storage(search: SearchConfig, directory: Path):
    """The study's storage: this search's own SQLite file, or the shared database, with
    heartbeats so that a killed worker's trial is failed and not counted."""
    import optuna

    if search.storage is None:
        return f"sqlite:///{directory / STUDY_FILE}"
    beat = search.heartbeat_seconds
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():  # Optuna marks heartbeats experimental
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(search.storage, heartbeat_interval=beat, grace_period=3 * beat)
        except Exception as exc:  # noqa: BLE001 - only the table-creation race is retried
            # Workers started together (a Slurm array) all create Optuna's tables in an empty
            # database; all but one lose that race with an integrity error, and then find them.
            lost_race = "IntegrityError" in type(exc).__name__ or "UniqueViolation" in str(exc)
            if not lost_race or attempt == attempts:
                raise
            time.sleep(0.5 + random.random())


def redacted(url: str) -> str:
    """A storage URL without its password, for logs and messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _refuse_clobbering(config: FinetuneConfig, directory: Path, shared: bool = False) -> None:
    output = Path(config.output)  # a resumed search replaces the output it wrote before
    if output.is_dir() and any(output.iterdir()) and not config.overwrite and not config.resume:
        raise NluDeployError(f"{output} already exists and is not empty; pass --overwrite to replace it.")
    if shared:  # the study lives in the database; this worker's folder holds only its checkpoints
        return
    if config.resume and not (directory / STUDY_FILE).exists():
        raise NluDeployError(f"there is no search to resume in {directory}.")
    if (directory / STUDY_FILE).exists() and not config.resume and not config.overwrite:
        raise NluDeployError(
            f"a search's trials are in {directory}; pass --resume to continue it or --overwrite to start over."
        )
