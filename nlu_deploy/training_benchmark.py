"""Our training loop against the Hugging Face Trainer: same model, data, hyper-parameters,
dynamic padding and hardware; training samples/s and the final validation score (accuracy,
or entity F1 for a slot tagger) for both."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.metrics import DISPLAY_NAMES, accuracy, entity_scores
from nlu_deploy.modeling import load_for_training, load_tokenizer, pick_device, resolve_model_source
from nlu_deploy.reports import markdown_table
from nlu_deploy.tagging import IGNORED
from nlu_deploy.train import (PRIMARY_METRIC, collator, finetune, label_set, labelled_rows, load_finetune_data,
                              seed_everything)


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
        rows = [[r.loop, f"{r.train_seconds:.1f}", f"{r.samples_per_second:.1f}",
                 f"{100 * r.final_validation_score:.2f}"] for r in self.runs]
        ratio = ours.samples_per_second / trainer.samples_per_second
        return (f"Training on {self.device} ({self.precision}, compile {'on' if self.compiled else 'off'}), "
                f"{self.options['epochs']} epochs, batch {self.options['batch_size']}, lr {self.options['lr']}.\n\n"
                + markdown_table(["loop", "train seconds", "samples/s", f"final validation {self.metric} %"], rows)
                + f"\n\nnlu-deploy / Trainer throughput: {ratio:.2f}x\n")


def compare_with_trainer(config: FinetuneConfig) -> TrainingComparison:
    primary = PRIMARY_METRIC[config.task]
    with tempfile.TemporaryDirectory(prefix="nlu-deploy-train-bench-") as scratch:
        ours = finetune(replace(config, output=Path(scratch) / "ours", checkpoint_every=0), show_progress=False)
        metrics = artifacts.read_json(Path(scratch) / "ours" / artifacts.METRICS)
        seconds = sum(epoch["seconds"] for epoch in ours.epochs)
        ours_run = TrainingRun("nlu-deploy", seconds, metrics["train_examples"] * config.epochs / seconds,
                               ours.epochs[-1][f"validation_{primary}"])
        trainer_run = _train_with_trainer(config, Path(scratch) / "trainer", ours.compiled)
    precision = metrics["amp"]
    options = {k: v for k, v in asdict(config).items() if k in ("epochs", "batch_size", "lr", "max_length", "seed")}
    return TrainingComparison(ours.device, precision, ours.compiled, options, [ours_run, trainer_run],
                              DISPLAY_NAMES[primary])


def _train_with_trainer(config: FinetuneConfig, output: Path, compiled: bool) -> TrainingRun:
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    train_data, validation_data = load_finetune_data(config)
    labels = label_set(train_data)
    label2id = {label: i for i, label in enumerate(labels)}
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    device = pick_device(config.device)

    def rows(data):
        return labelled_rows(tokenizer, data, label2id, config.max_length)[0]

    seed_everything(config.seed)
    model = load_for_training(source, labels, task=config.task)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    arguments = TrainingArguments(
        output_dir=str(output), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2, learning_rate=config.lr,
        num_train_epochs=config.epochs, warmup_ratio=config.warmup_ratio, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, lr_scheduler_type="linear", optim="adamw_torch", seed=config.seed,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        bf16=bf16, fp16=device.type == "cuda" and not bf16, torch_compile=compiled,
        use_cpu=device.type == "cpu", dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=rows(train_data),
                      data_collator=collator(tokenizer, train_data, 8 if compiled else None))
    trainer.remove_callback(PrinterCallback)  # it prints the metrics dict to stdout
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    output = trainer.predict(rows(validation_data))
    best, gold = np.asarray(output.predictions).argmax(-1), np.asarray(output.label_ids)
    if config.task == "token-classification":  # per sentence, the words' first sub-words
        tag = lambda ids: [labels[int(i)] for i in ids]  # noqa: E731
        score = entity_scores([tag(g[g != IGNORED]) for g in gold],
                              [tag(b[g != IGNORED]) for b, g in zip(best, gold)])["entity_f1"]
    else:
        score = accuracy(gold, best)
    return TrainingRun("transformers.Trainer", seconds, len(train_data) * config.epochs / seconds, score)
