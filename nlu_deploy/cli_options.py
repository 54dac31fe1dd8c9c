"""The options the commands share, each default read from the config it fills, so that a
default has one home (config.py) and `--help` shows it."""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
from pathlib import Path

import click

from nlu_deploy.config import (
    DEVICE_CHOICES,
    OOS_TRAINING_CHOICES,
    POOLING_CHOICES,
    PRECISION_CHOICES,
    BulkPredictConfig,
    FinetuneConfig,
)
from nlu_deploy.stopping import Stopped, dies_with_this_process
from nlu_deploy.task_specs import TASKS


def default_of(config_class, field_name: str):
    """The default a config dataclass gives `field_name`."""
    return next(f.default for f in dataclasses.fields(config_class) if f.name == field_name)


def shape_list(values: tuple[int, ...]) -> str:
    """(1, 8, 32) -> "1,8,32": a tuple default as the text the option reads."""
    return ",".join(str(value) for value in values)


def apply(options: list):
    """A decorator applying a list of click options in the order they are listed."""

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def given_options(ctx: click.Context, prefix: str = "") -> list[str]:
    """The options of the running command the user typed (not defaults), whose names start with prefix."""
    from click.core import ParameterSource

    return [
        parameter.opts[0]
        for parameter in ctx.command.params
        if isinstance(parameter, click.Option)
        and parameter.name.startswith(prefix)
        and ctx.get_parameter_source(parameter.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ]


def _positive_list(value: str | None, convert, kind: str, example: str) -> tuple | None:
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    if not any(parts):
        raise click.BadParameter(f"expected comma-separated {kind} such as {example}, got {value!r}.")
    if not all(parts):  # "1,,2" or "1,2,": a value lost in typing, not one to skip silently
        raise click.BadParameter(f"{value!r} has an empty item; expected comma-separated {kind} such as {example}.")
    try:
        numbers = tuple(convert(part) for part in parts)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated {kind} such as {example}, got {value!r}.") from None
    if not all(math.isfinite(n) for n in numbers) or min(numbers) <= 0:
        raise click.BadParameter(f"expected positive finite numbers, got {value!r}.")
    return numbers


def count_list(ctx, param, value: str) -> tuple[int, ...]:
    """Comma-separated whole numbers, 0 allowed (0: the runtime's default)."""
    parts = [part.strip() for part in value.split(",")]
    if not all(part.isdigit() for part in parts):
        raise click.BadParameter(f"expected comma-separated whole numbers such as 0,1,2, got {value!r}.")
    return tuple(int(part) for part in parts)


def choice_list(choices: tuple[str, ...]):
    """A callback for comma-separated values, each one of `choices`."""

    def parse(ctx, param, value: str) -> tuple[str, ...]:
        parts = tuple(part.strip() for part in value.split(","))
        wrong = [part for part in parts if part not in choices]
        if wrong:
            raise click.BadParameter(f"{', '.join(map(repr, wrong))}: expected comma-separated {', '.join(choices)}.")
        return parts

    return parse


def int_list(ctx, param, value: str | None) -> tuple[int, ...] | None:
    return _positive_list(value, int, "integers", "1,8,32")


def float_list(ctx, param, value: str | None) -> tuple[float, ...] | None:
    return _positive_list(value, float, "numbers", "10,50,100")


# How a training runs, for finetune, distill, run and bench-training alike.
PROCESS_OPTIONS = [
    click.option(
        "--compile/--no-compile",
        "compile_flag",
        default=None,
        help="torch.compile the model. Default: off: on an H200 it paid off only after ~16 epochs "
        "of SNIPS for MiniLM, never for a BERT-base shape (docs/gpus.md).",
    ),
    click.option(
        "--device", type=click.Choice(DEVICE_CHOICES), default=default_of(FinetuneConfig, "device"), show_default=True
    ),
    click.option(
        "--precision",
        type=click.Choice(PRECISION_CHOICES),
        default=default_of(FinetuneConfig, "precision"),
        show_default=True,
        help="Autocast dtype. auto: fp32 on every device (on an H200, bf16 "
        "autocast trained intent-length batches 22-33% slower).",
    ),
    click.option("--seed", type=int, default=default_of(FinetuneConfig, "seed"), show_default=True),
]

# predict --output: a file of answers, in chunks, here or on Ray. Options after --output only
# apply with it (predict refuses them without it).
BULK_PREDICT_OPTIONS = [
    click.option(
        "--text-column",
        default=default_of(BulkPredictConfig, "text_column"),
        show_default=True,
        help="The column of --file that holds the texts (.csv, .tsv, .jsonl, .parquet).",
    ),
    click.option(
        "--output",
        default=None,
        metavar="FILE",
        help="Write the answers to FILE (.jsonl or .parquet), in input order, in chunks; resumable.",
    ),
    click.option("--id-column", default=None, help='Carry this column of --file into each answer as "id".'),
    click.option(
        "--chunk-rows",
        "rows_per_chunk",
        type=int,
        default=default_of(BulkPredictConfig, "rows_per_chunk"),
        show_default=True,
        help="Rows read, answered and kept at a time: the memory, the unit of resuming and of a Ray task.",
    ),
    click.option(
        "--batch-size",
        type=int,
        default=default_of(BulkPredictConfig, "batch_size"),
        show_default=True,
        help="Texts per model call, grouped by token length within a chunk.",
    ),
    click.option("--overwrite", is_flag=True, help="Replace FILE, and start over instead of going on."),
    click.option(
        "--ray",
        "ray_address",
        default=None,
        metavar="ADDRESS",
        help="Answer on a Ray cluster: auto, an address (ray://head:10001), or local (a Ray instance "
        'here). Needs pip install "ray[data]".',
    ),
    click.option(
        "--ray-actors", type=int, default=None, help="Ray actors (each loads the model once). Default: one per 2 CPUs."
    ),
]

# Controls of a long run that can be interrupted: finetune and distill.
RUN_CONTROL_OPTIONS = [
    click.option(
        "--checkpoint-every",
        type=int,
        default=default_of(FinetuneConfig, "checkpoint_every"),
        show_default=True,
        help="Save the training state every N optimizer steps (0: at epoch ends only). "
        "Ctrl-C or SIGTERM also save it before stopping.",
    ),
    click.option("--resume", is_flag=True, help="Continue the interrupted run that was writing to OUTPUT."),
    click.option(
        "--nproc",
        type=int,
        default=1,
        show_default=True,
        help="Train with N processes on this machine (launches torchrun; DDP, gloo on CPU, NCCL on CUDA).",
    ),
]

# The data, model and recipe of a fine-tune: finetune, run and bench-training.
FINETUNE_OPTIONS = [
    click.option(
        "--model",
        default=None,
        metavar="NAME_OR_DIR",
        help="Encoder to fine-tune: a local directory or Hugging Face name. "
        "Default: the packaged sentence-transformers/all-MiniLM-L6-v2.",
    ),
    click.option(
        "--train",
        type=click.Path(path_type=Path),
        default=None,
        help="Training data (CSV, TSV, JSON, JSONL, Parquet; for tagging also CoNLL .conll/.iob/.bio). "
        "Default: the built-in demo data.",
    ),
    click.option(
        "--validation",
        type=click.Path(path_type=Path),
        default=None,
        help="Validation data. Default: a seeded 10% of --train (stratified by intent).",
    ),
    click.option(
        "--task",
        type=click.Choice(TASKS),
        default=default_of(FinetuneConfig, "task"),
        show_default=True,
        help="text-classification: one intent per text. token-classification: BIO slot/NER tags per "
        "word. joint: the intent and the slots of each text, from one model.",
    ),
    click.option(
        "--text-column",
        default=None,
        help="Column with the text (default 'text'), or for tagging and joint the list of words (default 'tokens').",
    ),
    click.option(
        "--label-column",
        default=None,
        help="Column with the intent (default 'label'), or for tagging and joint the list of tags (default 'tags').",
    ),
    click.option("--intent-column", default=None, help="joint: column with the intent (default 'intent')."),
    click.option(
        "--slot-loss-weight",
        type=float,
        default=default_of(FinetuneConfig, "slot_loss_weight"),
        show_default=True,
        help="joint: loss = intent cross-entropy + this * slot cross-entropy.",
    ),
    click.option(
        "--pooling",
        type=click.Choice(POOLING_CHOICES),
        default=default_of(FinetuneConfig, "pooling"),
        show_default=True,
        help="Intents: what the classification head reads. default: the model family's own head (BERT: "
        "the pooled first token). mean: the mean of the final hidden states over the text's "
        "tokens, the pooling sentence-transformers encoders such as the default MiniLM were "
        "trained with.",
    ),
    click.option(
        "--epochs",
        type=int,
        default=None,
        help="Default: 3, or more (up to 10) when the intents have few training examples each: "
        "enough for the model to see each intent about 800 times (docs/recipes.md).",
    ),
    click.option("--batch-size", type=int, default=None, help="Global batch size. Default: 16."),
    click.option(
        "--lr",
        type=float,
        default=None,
        help="Peak learning rate (AdamW). Default: 1e-4 for intents, 2e-4 for slots, 4e-4 for "
        "--task joint (docs/recipes.md).",
    ),
    click.option(
        "--warmup-ratio",
        type=float,
        default=default_of(FinetuneConfig, "warmup_ratio"),
        show_default=True,
        help="Share of the steps over which the learning rate rises linearly before it decays.",
    ),
    click.option(
        "--weight-decay",
        type=float,
        default=default_of(FinetuneConfig, "weight_decay"),
        show_default=True,
        help="AdamW weight decay (not on biases and LayerNorm weights).",
    ),
    click.option(
        "--label-smoothing",
        type=float,
        default=None,
        help="Train on targets with this share spread evenly over all labels, a regulariser for "
        "data the model fits to a near-zero training loss. Default: 0.1 for intents with "
        "--oos-label or --oos-validation (it makes rejection cheaper), otherwise 0.",
    ),
    click.option(
        "--average-weights",
        is_flag=True,
        help="Score each epoch on, and keep, a moving average of the weights over about the last "
        "10% of the steps rather than the last step's weights.",
    ),
    click.option(
        "--max-length",
        type=int,
        default=default_of(FinetuneConfig, "max_length"),
        show_default=True,
        help="Longer texts are truncated (and counted in metrics.json).",
    ),
    click.option(
        "--oos-label",
        default=None,
        help="Intents: the label of out-of-scope rows. The model learns to reject such texts, with a "
        "threshold calibrated on the held-out split and kept in config.json.",
    ),
    click.option(
        "--oos-training",
        type=click.Choice(OOS_TRAINING_CHOICES),
        default=default_of(FinetuneConfig, "oos_training"),
        show_default=True,
        help="class: out-of-scope rows also train as a class; calibration: they only set the threshold.",
    ),
    click.option(
        "--oos-recall",
        type=float,
        default=default_of(FinetuneConfig, "oos_recall"),
        show_default=True,
        help="The rejection threshold catches at least this share of held-out out-of-scope rows, "
        "losing as little in-scope accuracy as it can.",
    ),
    click.option(
        "--oos-validation",
        type=click.Path(path_type=Path),
        default=None,
        help="Out-of-scope texts (one per line, or a text column) to calibrate the threshold on, "
        "for data without an out-of-scope label.",
    ),
    click.option(
        "--allow-pickle",
        is_flag=True,
        help="Allow a base model with pickle (.bin) weights. Unpickling can run code: trust the source.",
    ),
    click.option("--trust-remote-code", is_flag=True, help="Run model code shipped with a hub model."),
    *PROCESS_OPTIONS,
]
finetune_options = apply(FINETUNE_OPTIONS)


search_options = [
    click.option(
        "--search",
        "search_trials",
        type=int,
        default=None,
        metavar="N",
        help="Run N fine-tunes with Optuna-chosen lr, batch size, epochs, warm-up and weight decay "
        "(and slot-loss weight for joint) and keep the best on the held-out split. Options you give "
        "are not searched. Trials live in OUTPUT.search/ (resume with --resume).",
    ),
    click.option(
        "--search-time",
        type=float,
        default=None,
        metavar="MINUTES",
        help="Stop the search after this many minutes, keeping the best finished trial.",
    ),
    click.option(
        "--study-storage",
        default=None,
        metavar="URL",
        help="Share the search with other workers (processes or machines running the same command): a "
        "database URL (postgresql://, mysql://, sqlite:///PATH). N then counts the whole study's trials; "
        "each worker keeps its own checkpoints (docs/search.md).",
    ),
    click.option("--study-name", default=None, help="The shared study's name. Default: nlu-deploy."),
]


with_search_options = apply(search_options)


def make_search_config(trials: int | None, minutes: float | None, storage: str | None = None,
                       study_name: str | None = None):  # fmt: skip
    """The search, with the options the user set on the command line left out of it."""
    from nlu_deploy.config import SEARCH_SPACE, SearchConfig

    if trials is None:
        given = [name for name, value in (("--search-time", minutes), ("--study-storage", storage),
                                           ("--study-name", study_name)) if value is not None]  # fmt: skip
        if given:
            raise click.UsageError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --search N.")
        return None
    context = click.get_current_context()
    fixed = tuple(
        name
        for name in SEARCH_SPACE
        if context.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
    )
    return SearchConfig(trials=trials, minutes=minutes, fixed=fixed, storage=storage, study_name=study_name)


def echo_search_result(found) -> None:
    options = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in found.best_params.items())
    click.echo(
        f"Best of {len(found.trials)} trials: trial {found.best_trial + 1}, validation score "
        f"{100 * found.best_value:.2f}% with {options}. Checkpoint and search_report.md: {found.output}"
    )


def make_finetune_config(output: Path, overwrite: bool, compile_flag: bool | None, **options) -> FinetuneConfig:
    compile_mode = {None: "auto", True: "on", False: "off"}[compile_flag]
    return FinetuneConfig(output=output, overwrite=overwrite, compile=compile_mode, **options)


def launch_torchrun(nproc: int, command_name: str = "finetune") -> int:
    """Re-run this very command under torchrun with `nproc` processes; return its exit status."""
    import subprocess

    argv = sys.argv[sys.argv.index(command_name) + 1 :]
    if "--nproc" in argv:
        index = argv.index("--nproc")
        del argv[index : index + 2]
    argv = [a for a in argv if not a.startswith("--nproc=")]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "nlu_deploy",
        command_name,
        *argv,
    ]
    click.echo(f"launching: {' '.join(command)}", err=True)
    # torchrun dies with this launcher, even a SIGKILLed one, and a stop signal is passed on to it:
    # it hands it to its workers, which save their training state and stop (--resume continues)
    process = subprocess.Popen(command, preexec_fn=dies_with_this_process())
    try:
        return process.wait()
    except Stopped as stop:
        process.send_signal(signal.Signals[stop.signal_name])
        return process.wait()


def labelled_directory(value: str) -> tuple[str, Path]:
    label, _, directory = value.rpartition("=")
    path = Path(directory)
    if not path.is_dir():
        raise click.BadParameter(f"{path} is not a directory.", param_hint="--also")
    return label or path.name, path


overwrite_option = click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists and is not empty.")
