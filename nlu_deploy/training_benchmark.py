"""Our training loop against the Hugging Face Trainer: same model, data, hyper-parameters,
dynamic padding and hardware; training samples/s and final validation accuracy for both."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.data import label_list
from nlu_deploy.errors import ConfigError
from nlu_deploy.metrics import accuracy
from nlu_deploy.modeling import load_for_training, load_tokenizer, pick_device, resolve_model_source
from nlu_deploy.reports import markdown_table
from nlu_deploy.runtime import encode
from nlu_deploy.train import finetune, load_finetune_data, seed_everything


@dataclass
class TrainingRun:
    loop: str
    train_seconds: float  # optimizer steps only; evaluation excluded for both loops
    samples_per_second: float
    final_validation_accuracy: float


@dataclass
class TrainingComparison:
    device: str
    precision: str
    compiled: bool
    options: dict
    runs: list[TrainingRun]

    def to_json(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        ours, trainer = self.runs
        rows = [[r.loop, f"{r.train_seconds:.1f}", f"{r.samples_per_second:.1f}",
                 f"{100 * r.final_validation_accuracy:.2f}"] for r in self.runs]
        ratio = ours.samples_per_second / trainer.samples_per_second
        return (f"Training on {self.device} ({self.precision}, compile {'on' if self.compiled else 'off'}), "
                f"{self.options['epochs']} epochs, batch {self.options['batch_size']}, lr {self.options['lr']}.\n\n"
                + markdown_table(["loop", "train seconds", "samples/s", "final validation accuracy %"], rows)
                + f"\n\nnlu-deploy / Trainer throughput: {ratio:.2f}x\n")


def compare_with_trainer(config: FinetuneConfig) -> TrainingComparison:
    if config.task != "text-classification":
        raise ConfigError("bench-training compares the intent recipe only; it does not train slot taggers yet.")
    with tempfile.TemporaryDirectory(prefix="nlu-deploy-train-bench-") as scratch:
        ours = finetune(replace(config, output=Path(scratch) / "ours", checkpoint_every=0), show_progress=False)
        metrics = artifacts.read_json(Path(scratch) / "ours" / artifacts.METRICS)
        seconds = sum(epoch["seconds"] for epoch in ours.epochs)
        ours_run = TrainingRun("nlu-deploy", seconds, metrics["train_examples"] * config.epochs / seconds,
                               ours.epochs[-1]["validation_accuracy"])
        trainer_run = _train_with_trainer(config, Path(scratch) / "trainer", ours.compiled)
    precision = metrics["amp"]
    options = {k: v for k, v in asdict(config).items() if k in ("epochs", "batch_size", "lr", "max_length", "seed")}
    return TrainingComparison(ours.device, precision, ours.compiled, options, [ours_run, trainer_run])


def _train_with_trainer(config: FinetuneConfig, output: Path, compiled: bool) -> TrainingRun:
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

    train_data, validation_data = load_finetune_data(config)
    labels = label_list(train_data)
    label2id = {label: i for i, label in enumerate(labels)}
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    device = pick_device(config.device)

    def rows(data):
        encoded = encode(tokenizer, data.texts, config.max_length)
        return [dict(f, labels=label2id[y]) for f, y in zip(encoded.features, data.labels)]

    seed_everything(config.seed)
    model = load_for_training(source, labels)
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
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if compiled else None)
    trainer = Trainer(model=model, args=arguments, train_dataset=rows(train_data), data_collator=collator)
    trainer.remove_callback(PrinterCallback)  # it prints the metrics dict to stdout
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predictions = trainer.predict(rows(validation_data)).predictions
    gold = np.array([label2id[y] for y in validation_data.labels])
    return TrainingRun("transformers.Trainer", seconds, len(train_data) * config.epochs / seconds,
                       accuracy(gold, np.asarray(predictions).argmax(-1)))
