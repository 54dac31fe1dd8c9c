"""Our training loop against the Hugging Face Trainer: same model, data, hyper-parameters,
dynamic padding and hardware; training samples/s and the final validation score (accuracy,
or entity F1 for a slot tagger) for both."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.errors import ConfigError
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.reports import markdown_table
from nlu_deploy.runtime.modeling import load_tokenizer, pick_device, resolve_model_source
from nlu_deploy.tasks import get_task, label_maps
from nlu_deploy.training.loop import autocast_dtype, evaluate, finetune, make_loader, seed_everything
from nlu_deploy.training.plan import load_finetune_data


@dataclass
class TrainingRun:
    loop: str
    train_seconds: float  # optimizer steps only; evaluation excluded for both loops
    samples_per_second: float
    final_validation_score: float  # the task's score: accuracy, or entity F1 for a slot tagger


@dataclass
class TrainingComparison:
    device: str
    precision: str
    compiled: bool
    options: dict
    runs: list[TrainingRun]
    metric: str = "accuracy"

    def to_json(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        ours, trainer = self.runs
        rows = [
            [r.loop, f"{r.train_seconds:.1f}", f"{r.samples_per_second:.1f}", f"{100 * r.final_validation_score:.2f}"]
            for r in self.runs
        ]
        ratio = ours.samples_per_second / trainer.samples_per_second
        return (
            f"Training on {self.device} ({self.precision}, compile {'on' if self.compiled else 'off'}), "
            f"{self.options['epochs']} epochs, batch {self.options['batch_size']}, lr {self.options['lr']}.\n\n"
            + markdown_table(["loop", "train seconds", "samples/s", f"final validation {self.metric} %"], rows)
            + f"\n\nnlu-deploy / Trainer throughput: {ratio:.2f}x\n"
        )


def compare_with_trainer(config: FinetuneConfig) -> TrainingComparison:
    if config.average_weights:  # the two loops would not train the same recipe
        raise ConfigError(
            "bench-training compares one recipe in two loops, and transformers.Trainer has no "
            "weight averaging; leave out --average-weights."
        )
    primary = get_task(config.task).primary_metric
    with tempfile.TemporaryDirectory(prefix="nlu-deploy-train-bench-") as scratch:
        ours = finetune(replace(config, output=Path(scratch) / "ours", checkpoint_every=0), show_progress=False)
        metrics = artifacts.read_json(Path(scratch) / "ours" / artifacts.METRICS)
        config = replace(config, epochs=len(ours.epochs))  # what our run resolved: the user's or the default
        seconds = sum(epoch["seconds"] for epoch in ours.epochs)
        ours_run = TrainingRun(
            "nlu-deploy",
            seconds,
            metrics["train_examples"] * config.epochs / seconds,
            ours.epochs[-1][f"validation_{primary}"],
        )
        trainer_run = _train_with_trainer(config, Path(scratch) / "trainer", ours.compiled)
    precision = metrics["amp"]
    options = {k: v for k, v in asdict(config).items() if k in ("epochs", "batch_size", "lr", "max_length", "seed")}
    return TrainingComparison(
        ours.device, precision, ours.compiled, options, [ours_run, trainer_run], DISPLAY_NAMES[primary]
    )


def _train_with_trainer(config: FinetuneConfig, output: Path, compiled: bool) -> TrainingRun:
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    task = get_task(config.task).with_label_smoothing(config.label_smoothing)  # the loss our loop trains on
    train_data, validation_data = load_finetune_data(config, task)
    label_sets = task.label_sets(train_data)
    label2ids = label_maps(label_sets)
    validation_ids = task.label_ids_for(validation_data, label2ids)
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    device = pick_device(config.device)

    seed_everything(config.seed)
    model = task.new_model(
        source,
        label_sets,
        config.allow_pickle,
        config.trust_remote_code,
        {"slot_loss_weight": config.slot_loss_weight, "pooling": config.pooling},
    )
    amp_dtype = autocast_dtype(config.precision, device)  # the same precision our loop ran in
    bf16 = amp_dtype == torch.bfloat16
    arguments = TrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        lr_scheduler_type="linear",
        optim="adamw_torch",
        seed=config.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        bf16=bf16,
        fp16=amp_dtype == torch.float16,
        torch_compile=compiled,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )

    class TaskLossTrainer(Trainer):
        """The task's loss (the same function our loop calls), so a joint model trains too."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = task.loss(model, inputs)
            return (loss, outputs) if return_outputs else loss

    rows = task.rows(tokenizer, train_data, label2ids, config.max_length)[0]
    trainer = TaskLossTrainer(
        model=model, args=arguments, train_dataset=rows, data_collator=task.collator(tokenizer, 8 if compiled else None)
    )
    trainer.remove_callback(PrinterCallback)  # it prints the metrics dict to stdout
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    # Scored by the same code that scores our loop's epochs.
    loader, _ = make_loader(
        task,
        tokenizer,
        validation_data,
        validation_ids,
        config.batch_size * 2,
        config.max_length,
        False,
        config.seed,
        None,
    )
    id2labels = {head: {i: label for label, i in ids.items()} for head, ids in validation_ids.items()}
    score = evaluate(task, model.to(device), loader, device, None, id2labels)[task.primary_metric]
    return TrainingRun("transformers.Trainer", seconds, len(train_data) * config.epochs / seconds, score)
