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

import shutil
import time
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
    config: FinetuneConfig, search: SearchConfig, show_progress: bool = True, on_trial_step=None, distillation=None
) -> SearchResult | None:
    """Run (or continue, with config.resume) the search; write the best trial to config.output.
    `on_trial_step(trial_number, global_step)` is called after every optimizer step (tests use it
    to interrupt a search). With a `distillation` (distill.py) every trial trains a student.
    Under torchrun the trials run one after another, each with every process (DDP): the main
    process alone holds the study and the files, and tells the others each trial's options and
    whether to prune or stop. It returns the result; the other processes return None."""

    names = searched_options(config, search)
    if not names:
        raise ConfigError(
            "every searched option (lr, batch size, epochs, warm-up, weight decay) was given; "
            "there is nothing left to search."
        )
    context = init_distributed(config.device)  # joined once; every trial's finetune reuses the group
    main = context.is_main
    directory = search_dir(config.output)
    deadline = time.monotonic() + 60 * search.minutes if search.minutes else None
    study = log = None
    first = None
    if main:
        study, log, first = _open_study(config, search, names, directory, show_progress)
    first = from_main(context, first)
    runner = _TrialRunner(config, context, study, log, directory, deadline, show_progress, on_trial_step, distillation)
    for position in range(first, search.trials + 1):
        order = None
        if main and not (deadline and time.monotonic() >= deadline):
            trial = study.ask()
            order = (trial.number, draw(trial, names))
        elif main:
            log.line("search: the --search-time limit is reached; no new trial starts.")
        order = from_main(context, order)  # None: stop
        if order is None or not runner.run(trial if main else None, *order, position, search.trials):
            break
    found = _write_output(study, config, search, names, directory) if main else None
    shutdown(context)
    return found


class _TrialRunner:
    """One trial: a fine-tune with the drawn options, reporting each epoch to the study (which
    may prune it) and stopping at the --search-time deadline. Every process runs it; only the
    main one talks to the study and writes files."""

    def __init__(self, config, context, study, log, directory, deadline, show_progress, on_trial_step, distillation):
        self.config, self.context, self.study, self.log, self.directory = config, context, study, log, directory
        self.deadline, self.show_progress, self.on_trial_step = deadline, show_progress, on_trial_step
        self.distillation = distillation
        self.metric = get_task(config.task).primary_metric

    def run(self, trial, number: int, params: dict, position: int, trials: int) -> bool:
        """False when the search must stop (the deadline came mid-trial)."""
        import gc

        import optuna

        main, context, study, log = self.context.is_main, self.context, self.study, self.log
        trial_dir = self.directory / f"trial-{number}"
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
        if main:
            _record_finished(study, trial, result, self.metric, started, trial_dir, self.directory)
            left = f", {max(0, (self.deadline - time.monotonic()) / 60):.0f} min left" if self.deadline else ""
            log.line(
                f"trial {number + 1}: validation {DISPLAY_NAMES[self.metric]} {result.best_scores[self.metric]:.4f} "
                f"({_best_line(study)}{left})"
            )
        barrier(context)  # the next trial starts once the main process has filed this one
        return True

    def _on_step(self, number: int, step: int) -> None:
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
    """(the study, the search log, the position of the first trial to run): the study created,
    or reopened with its interrupted trials queued to run again."""
    import optuna

    _refuse_clobbering(config, directory)
    if config.overwrite and not config.resume and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A few random trials before TPE models the space; pruning starts once two trials have finished.
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=min(10, max(2, search.trials // 3)))
    study = optuna.create_study(
        storage=f"sqlite:///{directory / STUDY_FILE}",
        study_name=STUDY_NAME,
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    _check_same_search(study, config, names)
    log = ProgressLog(directory / LOG_FILE, show_progress)
    _rerun_interrupted(study, directory, log)
    done = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    metric = get_task(config.task).primary_metric
    log.line(
        f"search: {search.trials} trials of {config.task} over {', '.join(names)}, scored on validation "
        f"{DISPLAY_NAMES[metric]}; {len(done)} already finished"
        + (f", {search.minutes:g} minutes at most" if search.minutes else "")
    )
    return study, log, len(done) + 1


def _record_finished(study, trial, result, metric: str, started: float, trial_dir: Path, directory: Path) -> None:
    """Tell the study a finished trial's score; keep its checkpoint only if it is the best so far."""
    trial.set_user_attr("seconds", time.monotonic() - started)
    trial.set_user_attr("scores", {k: v for k, v in result.best_scores.items() if k != "per_type"})
    trial.set_user_attr("best_epoch", result.best_epoch)
    value = result.best_scores[metric]
    previous_best = _best_value(study)
    study.tell(trial, value)
    if previous_best is None or value > previous_best:
        shutil.rmtree(directory / BEST_DIR, ignore_errors=True)
        trial_dir.rename(directory / BEST_DIR)
        artifacts.write_json(directory / BEST_DIR / "trial.json", {"trial": trial.number})
    else:
        _remove_trial(trial_dir)


def _write_output(study, config: FinetuneConfig, search: SearchConfig, names: list[str], directory: Path):
    best_value = _best_value(study)
    if best_value is None:
        raise NluDeployError(
            f"no trial of the search finished (see {directory / LOG_FILE}); give it more time "
            "(--search-time) or continue it with --resume."
        )
    best = study.best_trial
    trials = [_trial_record(t) for t in study.trials if t.state.is_finished()]  # not the queued ones
    importances = _importances(study)
    report = {
        "task": config.task,
        "metric": get_task(config.task).primary_metric,
        "trials_asked": search.trials,
        "minutes": search.minutes,
        "searched": {n: SEARCH_SPACE[n] for n in names},
        "fixed": {n: getattr(config, n) for n in (*_COMMON, *get_task(config.task).searched_options) if n not in names},
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": best.params,
        "importances": importances,
        "trials": trials,
        "study": str(directory / STUDY_FILE),
    }
    from nlu_deploy.evaluation.plots import plot_search

    with artifacts.staged_output(config.output, overwrite=True) as out:
        for item in (directory / BEST_DIR).iterdir():
            if item.name != "trial.json":
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
        artifacts.write_json(out / REPORT_JSON, report)
        (out / REPORT_MD).write_text(search_markdown(report), encoding="utf-8")
        plot_search(report, out / REPORT_PLOT)
        manifest = artifacts.read_manifest(out)
        manifest["options"]["output"] = str(config.output)
        manifest["search"] = {"trials": len(trials), "best_trial": best.number, "study": str(directory / STUDY_FILE)}
        artifacts.write_json(out / artifacts.MANIFEST, manifest)
    return SearchResult(config.output, best.number, best.value, best.params, trials)


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


def _check_same_search(study, config: FinetuneConfig, names: list[str]) -> None:
    """A study continues only with the same data and options (bar the searched ones)."""
    facts = {
        k: str(v)
        for k, v in asdict(config).items()
        if k not in (*names, "output", "resume", "overwrite", "checkpoint_every")
    }
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
        raise NluDeployError(
            f"the search in {search_dir(config.output)} used other options or data "
            f"({', '.join(changed)}); run it with those, or pass --overwrite to start a new one."
        )


def _refuse_clobbering(config: FinetuneConfig, directory: Path) -> None:
    output = Path(config.output)  # a resumed search replaces the output it wrote before
    if output.is_dir() and any(output.iterdir()) and not config.overwrite and not config.resume:
        raise NluDeployError(f"{output} already exists and is not empty; pass --overwrite to replace it.")
    if config.resume and not (directory / STUDY_FILE).exists():
        raise NluDeployError(f"there is no search to resume in {directory}.")
    if (directory / STUDY_FILE).exists() and not config.resume and not config.overwrite:
        raise NluDeployError(
            f"a search's trials are in {directory}; pass --resume to continue it or --overwrite to start over."
        )
