"""What a fine-tune decides before it trains: the data and its label sets, the encoder and its
tokenizer, the processes and the device, the run's fingerprint, and whether it resumes. Every
check that can refuse a run happens here, before minutes of training."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig, default_epochs
from nlu_deploy.data.tables import check_label_names
from nlu_deploy.errors import ConfigError, NluDeployError
from nlu_deploy.runtime.model_families import fit_tokenizer
from nlu_deploy.runtime.modeling import (
    check_model_family,
    check_vocabulary_fits,
    load_tokenizer,
    pick_device,
    resolve_model_source,
)
from nlu_deploy.tasks import Task, get_task, label_maps
from nlu_deploy.training import checkpointing
from nlu_deploy.training.distributed import DistributedContext, init_distributed
from nlu_deploy.training.oos_calibration import plan_out_of_scope


@dataclass
class RunPlan:
    """Read-only for the loop and the output writer."""

    config: FinetuneConfig  # with its epochs resolved
    task: Task
    train_data: Any
    validation_data: Any
    rows_data: Any  # what trains: the training data, plus unlabeled texts for a student
    out_of_scope: Any  # the rejection plan, or None
    label_sets: dict[str, list[str]]
    label2ids: dict[str, dict[str, int]]
    validation_ids: dict[str, dict[str, int]]
    id2labels: dict[str, dict[int, str]]
    unseen: dict  # head -> validation labels the training data lacks (scored as errors)
    source: str  # the encoder: a local directory or a hub name
    tokenizer: Any
    dist: DistributedContext
    device: Any
    per_process_batch: int
    state_dir: Path
    data_description: dict
    run_fingerprint: str
    resuming: bool
    use_compile: bool


def load_finetune_data(config: FinetuneConfig, task: Task):
    """(train, validation): the training data checked strictly (it defines the label sets);
    the validation data only read, since labels it has and train lacks are scored as errors."""
    data = task.demo() if config.train is None else task.read(config.train, config.columns)
    # refuses data a model cannot learn from before anything is split or trained
    check_label_names(task.label_sets(data), str(config.train or "the demo data"))
    if config.validation is not None:
        return data, task.read(config.validation, config.columns)
    return task.holdout(data, config.validation_fraction, config.split_seed)


def resolve_epochs(config: FinetuneConfig, task: Task, train_data) -> FinetuneConfig:
    """The config with its epochs set: the user's, or the task's default for this data (fewer
    examples per intent, more epochs; see config.default_epochs)."""
    if config.epochs is not None:
        return config
    return replace(config, epochs=default_epochs(task.examples_per_label(train_data)))


def plan_run(config: FinetuneConfig, distillation=None) -> RunPlan:
    import torch

    task = get_task(config.task).with_label_smoothing(config.label_smoothing)
    train_data, validation_data = load_finetune_data(config, task)
    out_of_scope, train_data, validation_data = plan_out_of_scope(config, task, train_data, validation_data)
    config = resolve_epochs(config, task, train_data)  # before the fingerprint and the manifest record it
    label_sets = distillation.label_sets(task, train_data) if distillation else task.label_sets(train_data)
    label2ids = label_maps(label_sets)
    validation_ids = task.label_ids_for(validation_data, label2ids)
    source = resolve_model_source(config.model)
    model_config = check_model_family(source, config.trust_remote_code)  # before the tokenizer: a clear sentence first
    tokenizer = load_tokenizer(source, config.trust_remote_code)
    if model_config:
        check_vocabulary_fits(tokenizer, model_config, source)  # before minutes of training, not at export
        fit_tokenizer(tokenizer, model_config)  # the family's pad token and word reading, saved with the checkpoint
    tokenizer.model_max_length = config.max_length  # downstream stages read it from here
    dist = init_distributed(config.device)
    device = pick_device(config.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if config.batch_size % dist.world_size:
        raise ConfigError(
            f"batch size {config.batch_size} must be divisible by the {dist.world_size} processes "
            "(it is the global batch, split evenly between them)."
        )
    state_dir = checkpointing.training_state_dir(config.output)
    data_description = {
        "train": _describe(config.train, train_data),
        "validation": _describe(config.validation, validation_data),
    }
    run_fingerprint = checkpointing.fingerprint(
        {
            **{k: v for k, v in asdict(config).items() if k not in ("overwrite", "resume", "checkpoint_every")},
            "distillation": distillation.describe() if distillation else None,
        },
        {name: part.get("sha256", part["source"]) for name, part in data_description.items()},
    )
    return RunPlan(
        config=config,
        task=task,
        train_data=train_data,
        validation_data=validation_data,
        # A student also reads unlabeled texts, whose labels never train (ids below UNSEEN_BASE).
        rows_data=distillation.training_data(task, train_data) if distillation else train_data,
        out_of_scope=out_of_scope,
        label_sets=label_sets,
        label2ids=label2ids,
        validation_ids=validation_ids,
        id2labels={head: {i: label for label, i in ids.items()} for head, ids in validation_ids.items()},
        unseen=_unseen(task, validation_data, label2ids, out_of_scope),
        source=source,
        tokenizer=tokenizer,
        dist=dist,
        device=device,
        per_process_batch=config.batch_size // dist.world_size,
        state_dir=state_dir,
        data_description=data_description,
        run_fingerprint=run_fingerprint,
        resuming=_refuse_clobbering(config, state_dir),
        # auto is off on every device. Compiling costs ~90 s before the first MiniLM step on CPU
        # and gains ~10% a step there. On an H200 (2026-12-01) it cost 30 s for MiniLM and 50 s
        # for a BERT-base shape: MiniLM's steps then ran 1.4x faster (it pays off after ~200k
        # samples, some 16 SNIPS epochs), BERT-base's no faster than eager fp32 (docs/gpus.md).
        use_compile=config.compile == "on",
    )


def _unseen(task: Task, validation_data, label2ids, out_of_scope) -> dict:
    """Validation labels the training data lacks, scored as errors, counted and reported
    (out-of-scope rows kept for calibration only are expected there)."""
    unseen = task.unseen(validation_data, label2ids)
    if out_of_scope:
        unseen = {head: found.without(out_of_scope.label) for head, found in unseen.items()}
    return {head: found for head, found in unseen.items() if found.rows}


def _refuse_clobbering(config: FinetuneConfig, state_dir: Path) -> bool:
    """Check before hours of training, not after, that no unfinished run is in the way, and decide
    whether this run resumes: only when asked to and a saved state exists. A state folder
    without one (a run killed before its first save, or by a full disk while saving) holds
    nothing to continue, so the run starts over and says so, whether --resume was given or not."""
    output = Path(config.output)  # that it may be written, finetune() checked with artifacts.check_output
    resumable = (state_dir / checkpointing.STATE_FILE).is_file()
    if resumable and not config.resume and not config.overwrite:
        raise NluDeployError(
            f"an interrupted run's state is in {state_dir}; pass --resume to continue it or --overwrite to start over."
        )
    if state_dir.exists() and not resumable and not config.overwrite:
        print(
            f"note: {state_dir} holds no saved training state (its run stopped before the first save); "
            "starting from the beginning.",
            file=sys.stderr,
        )
    elif config.resume and not resumable:
        print(
            f"note: there is no interrupted run to resume for {output}; starting from the beginning.", file=sys.stderr
        )
    return config.resume and resumable


def check_max_length(max_length: int, model_config) -> None:
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise ConfigError(f"max length {max_length} is beyond this model's limit of {limit} positions.")


def _describe(path: Path | None, data) -> dict:
    described = {"source": data.source, "rows": len(data)}
    if path is not None:
        described["sha256"] = artifacts.file_sha256(path)
    return described
