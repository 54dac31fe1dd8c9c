"""Fine-tuning: a plain PyTorch loop that reads top to bottom.

batch -> forward (autocast on CUDA) -> loss -> backward -> clip -> step -> schedule -> log,
with an evaluation at the end of every epoch and the best epoch's weights kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.data import LabelledTexts, check_known_labels, label_list, load_labelled_texts, stratified_holdout, write_jsonl
from nlu_deploy.demo import demo_labelled_texts
from nlu_deploy.metrics import classification_scores
from nlu_deploy.modeling import load_for_training, load_tokenizer, pick_device, resolve_model_source
from nlu_deploy.runtime import encode


@dataclass
class FinetuneResult:
    output: Path
    best_epoch: int
    best_scores: dict[str, float]
    epochs: list[dict]
    device: str
    compiled: bool


def load_finetune_data(config: FinetuneConfig) -> tuple[LabelledTexts, LabelledTexts]:
    if config.train is None:
        data = demo_labelled_texts()
    else:
        data = load_labelled_texts(config.train, config.text_column, config.label_column)
    if config.validation is not None:
        return data, load_labelled_texts(config.validation, config.text_column, config.label_column)
    return stratified_holdout(data, config.validation_fraction, config.seed)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(tokenizer, data: LabelledTexts, label2id: dict[str, int], batch_size: int,
                max_length: int, shuffle: bool, seed: int, pad_multiple: int | None):
    """Dynamic padding: each batch is padded to its own longest row, not to max_length."""
    import torch
    from transformers import DataCollatorWithPadding

    encoded = encode(tokenizer, data.texts, max_length)
    rows = [dict(features, labels=label2id[label]) for features, label in zip(encoded.features, data.labels)]
    if not shuffle:  # evaluation: similar lengths together, less padding
        rows.sort(key=lambda row: len(row["input_ids"]))
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple, return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=shuffle,
                                         collate_fn=collate, generator=generator)
    return loader, encoded.truncated


def evaluate(model, loader, device, amp_dtype) -> dict[str, float]:
    import torch

    model.eval()
    gold, predicted, loss_sum = [], [], 0.0
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                output = model(**batch)
            loss_sum += output.loss.float().item() * len(batch["labels"])
            predicted.append(output.logits.argmax(-1).cpu().numpy())
            gold.append(batch["labels"].cpu().numpy())
    scores = classification_scores(np.concatenate(gold), np.concatenate(predicted))
    scores["loss"] = loss_sum / len(loader.dataset)
    return scores


def weight_decay_groups(model, weight_decay: float) -> list[dict]:
    """No decay on biases and LayerNorm weights, as in the BERT recipe."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def finetune(config: FinetuneConfig, show_progress: bool = True) -> FinetuneResult:
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    train_data, validation_data = load_finetune_data(config)
    labels = label_list(train_data)
    check_known_labels(validation_data, labels)
    label2id = {label: i for i, label in enumerate(labels)}
    source = resolve_model_source(config.model)
    tokenizer = load_tokenizer(source)
    tokenizer.model_max_length = config.max_length  # downstream stages read it from here
    device = pick_device(config.device)

    seed_everything(config.seed)
    model = load_for_training(source, labels).to(device)
    # bf16 needs no loss scaling; older GPUs without it get fp16 with a GradScaler. CPU stays
    # fp32: CPU autocast is slower than fp32 for encoders this size on most server CPUs.
    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    # Compiling costs ~90 s before the first MiniLM step on CPU and gains ~10% a step there;
    # on CUDA it pays for itself within an epoch. Hence auto = on for CUDA only.
    use_compile = config.compile == "on" or (config.compile == "auto" and device.type == "cuda")
    pad_multiple = 8 if use_compile else None  # fewer distinct shapes -> fewer recompiles

    train_loader, truncated_train = make_loader(tokenizer, train_data, label2id, config.batch_size,
                                                config.max_length, True, config.seed, pad_multiple)
    validation_loader, truncated_validation = make_loader(
        tokenizer, validation_data, label2id, config.batch_size * 2, config.max_length, False,
        config.seed, pad_multiple)
    optimizer = torch.optim.AdamW(weight_decay_groups(model, config.weight_decay), lr=config.lr)
    total_steps = config.epochs * len(train_loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    if use_compile:
        model.compile(dynamic=True)  # in place: state_dict keys stay clean for saving

    history: list[dict] = []
    best_epoch, best_scores, best_key = 0, {}, (-1.0, 0.0)
    with artifacts.staged_output(config.output, config.overwrite) as out:
        for epoch in range(1, config.epochs + 1):
            model.train()
            started, seen, loss_sum = time.perf_counter(), 0, 0.0
            bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", disable=not show_progress,
                       unit="batch", leave=False)
            for batch in bar:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = model(**batch).loss
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()

                batch_size = len(batch["labels"])
                seen += batch_size
                loss_sum += loss.item() * batch_size
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                samples_s=f"{seen / (time.perf_counter() - started):.0f}")
            seconds = time.perf_counter() - started
            scores = evaluate(model, validation_loader, device, amp_dtype)
            history.append({"epoch": epoch, "train_loss": loss_sum / seen,
                            "validation_loss": scores.pop("loss"),
                            **{f"validation_{k}": v for k, v in scores.items()},
                            "samples_per_second": seen / seconds, "seconds": seconds})
            if show_progress:
                tqdm.write(f"epoch {epoch}: train loss {loss_sum / seen:.4f}, validation accuracy "
                           f"{scores['accuracy']:.4f}, {seen / seconds:.0f} samples/s")
            # Best = highest accuracy, ties broken by lower validation loss (a surer model).
            if (scores["accuracy"], -history[-1]["validation_loss"]) > best_key:
                best_epoch, best_scores = epoch, scores
                best_key = (scores["accuracy"], -history[-1]["validation_loss"])
                model.save_pretrained(out, safe_serialization=True)  # eager weights, best epoch only

        tokenizer.save_pretrained(out)
        write_jsonl(validation_data.to_records(config.text_column, config.label_column),
                    out / artifacts.VALIDATION_SPLIT)
        metrics = {"task": config.task, "best_epoch": best_epoch, "best": best_scores, "epochs": history,
                   "train_examples": len(train_data), "validation_examples": len(validation_data),
                   "truncated_train": truncated_train, "truncated_validation": truncated_validation,
                   "device": device.type, "compiled": use_compile,
                   "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32"}
        artifacts.write_json(out / artifacts.METRICS, metrics)
        artifacts.write_manifest(
            out, "finetune", asdict(config), parent=Path(source) if Path(source).exists() else None,
            model_source=source, labels=labels,
            data={"train": _describe(config.train, train_data),
                  "validation": _describe(config.validation, validation_data)},
        )
    return FinetuneResult(config.output, best_epoch, best_scores, history, device.type, use_compile)


def _describe(path: Path | None, data: LabelledTexts) -> dict:
    described = {"source": data.source, "rows": len(data)}
    if path is not None:
        described["sha256"] = artifacts.file_sha256(path)
    return described
