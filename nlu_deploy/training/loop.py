"""Fine-tuning: a plain PyTorch loop that reads top to bottom.

batch -> forward (autocast on CUDA) -> loss -> backward -> clip -> step -> schedule -> log,
with an evaluation at the end of every epoch and the best epoch's weights kept.
"""

from __future__ import annotations

import gc
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.training import checkpointing
from nlu_deploy.training.batching import BatchesWithoutSingletons, compile_without_duck_sizing
from nlu_deploy.config import FinetuneConfig, default_epochs
from nlu_deploy.data.tables import write_jsonl
from nlu_deploy.training.distributed import DistributedContext, any_across, gather_arrays, init_distributed, shutdown, sum_across
from nlu_deploy.errors import ConfigError, NluDeployError
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.runtime.modeling import check_model_family, load_tokenizer, pick_device, resolve_model_source
from nlu_deploy.training.oos_calibration import calibrate_checkpoint, describe_rule, plan_out_of_scope
from nlu_deploy.progress import ProgressLog
from nlu_deploy.tasks import Task, get_task, label_maps
from nlu_deploy.training.weight_averaging import averaged_model


PROGRESS_LOG = "progress.log"  # in the training state directory while training
LOSS_READ_EVERY = 20  # optimizer steps between reads of the device-side loss (progress lines, bar)


@dataclass
class FinetuneResult:
    output: Path
    best_epoch: int
    best_scores: dict[str, float]
    epochs: list[dict]
    device: str
    compiled: bool


def load_finetune_data(config: FinetuneConfig, task: Task):
    """(train, validation): the training data checked strictly (it defines the label sets);
    the validation data only read, since labels it has and train lacks are scored as errors."""
    data = task.demo() if config.train is None else task.read(config.train, config.columns)
    task.label_sets(data)  # refuses data a model cannot learn from before anything is split or trained
    if config.validation is not None:
        return data, task.read(config.validation, config.columns)
    return task.holdout(data, config.validation_fraction, config.split_seed)


def resolve_epochs(config: FinetuneConfig, task: Task, train_data) -> FinetuneConfig:
    """The config with its epochs set: the user's, or the task's default for this data (fewer
    examples per intent, more epochs; see config.default_epochs)."""
    if config.epochs is not None:
        return config
    return replace(config, epochs=default_epochs(task.examples_per_label(train_data)))


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(task: Task, tokenizer, data, label_ids: dict[str, dict[str, int]], batch_size: int,
                max_length: int, shuffle: bool, seed: int, pad_multiple: int | None,
                dist: DistributedContext = DistributedContext()):
    """Dynamic padding: each batch is padded to its own longest row, not to max_length, and
    never holds a single row (see batching.py).
    Under torchrun each process gets its share: a DistributedSampler (reshuffled every epoch
    with set_epoch) for training, a plain slice for evaluation (no padded duplicates).
    Returns the loader and what truncation cut (sentences; for word tasks, gold entities)."""
    import torch

    rows, truncation = task.rows(tokenizer, data, label_ids, max_length)
    if not shuffle:  # evaluation: similar lengths together, less padding
        rows.sort(key=lambda row: len(row["input_ids"]))
        rows = rows[dist.rank::dist.world_size]
    generator = torch.Generator().manual_seed(seed)
    if shuffle and dist.enabled:
        sampler = torch.utils.data.DistributedSampler(rows, num_replicas=dist.world_size, rank=dist.rank,
                                                      shuffle=True, seed=seed)
    elif shuffle:
        sampler = torch.utils.data.RandomSampler(rows, generator=generator)
    else:
        sampler = torch.utils.data.SequentialSampler(rows)
    # The loader's generator is the sampler's: resume saves and restores it to repeat an epoch's order.
    loader = torch.utils.data.DataLoader(rows, batch_sampler=BatchesWithoutSingletons(sampler, batch_size),
                                         collate_fn=task.collator(tokenizer, pad_multiple), generator=generator)
    return loader, truncation


def evaluate(task: Task, model, loader, device, amp_dtype, id2labels: dict[str, dict[int, str]],
             dist: DistributedContext = DistributedContext()) -> dict:
    """Scores on the whole validation set; under torchrun each process scores its slice and
    the predictions are gathered, so every process gets the same, exact figures. Every
    process takes the same collective calls (one per key the task returns), even with no batches."""
    import torch

    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    loss_sum, rows = 0.0, 0
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss, outputs = task.loss(model, batch)
            size = len(batch["input_ids"])
            loss_sum += loss.float().item() * size  # a batch whose every label is unseen adds 0
            # row ids unique across processes, so gathered word rows regroup into sentences
            for key, value in task.batch_predictions(outputs, batch, rows + dist.rank * 10**9).items():
                parts.setdefault(key, []).append(value)
            rows += size
    empty = np.zeros(0, dtype=np.int64)  # a process with no held-out rows (tiny data under torchrun)
    gathered = {key: gather_arrays(dist, np.concatenate(parts[key]) if key in parts else empty)
                for key in task.prediction_keys}
    scores = task.score_predictions(gathered, id2labels)
    scores["loss"] = sum_across(dist, loss_sum)[0] / max(1, sum_across(dist, rows)[0])
    return scores


def autocast_dtype(precision: str, device):
    """The autocast dtype, None for fp32. bf16 needs no loss scaling; fp16 gets a GradScaler.
    auto is fp32 on every device. On CPU, autocast is slower than fp32 for encoders this size on
    most server CPUs. On an H200 (2026-12-01, SNIPS batches of 32), eager bf16 ran 22% (MiniLM)
    and 33% (BERT-base shape) slower than eager fp32 at the same held-out accuracy: at intent and
    slot lengths the steps are launch-bound, and autocast adds cast kernels to every one."""
    import torch

    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 training needs CUDA; on CPU use fp32 (the default) or bf16.")
    if precision == "auto":
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def weight_decay_groups(model, weight_decay: float) -> list[dict]:
    """No decay on biases and LayerNorm weights, as in the BERT recipe."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainingDiverged(NluDeployError):
    """The loss or the weights stopped being finite numbers."""


# A share of cut training texts worth a warning: a few long outliers are normal, one in twenty
# means a --max-length that does not fit the data (--max-length 2 leaves nothing but [CLS] x).
TRUNCATION_WARNING_SHARE = 0.05


def finetune(config: FinetuneConfig, show_progress: bool = True, on_step=None, distillation=None,
             on_epoch=None) -> FinetuneResult:
    """Train, keep the best epoch, write the checkpoint directory. `on_step(global_step)` is
    called after every optimizer step (progress hooks; tests use it to interrupt a run), and
    `on_epoch(epoch, scores)` after every evaluation (the search prunes poor trials there).
    With a `distillation` (distill.py) the model is the teacher's shallower student, trained on
    the teacher's soft targets as well as the labels, and the output's manifest names the teacher.
    The output (and the training state beside it) is locked for the whole run: a second run on
    it is refused at once. Under torchrun the first process holds the lock for all."""
    artifacts.check_output(config.output, config.overwrite)
    if os.environ.get("RANK", "0") != "0":
        return _finetune(config, show_progress, on_step, distillation, on_epoch)
    with artifacts.output_lock(config.output):
        return _finetune(config, show_progress, on_step, distillation, on_epoch)


def _finetune(config: FinetuneConfig, show_progress: bool, on_step, distillation, on_epoch) -> FinetuneResult:
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    task = get_task(config.task).with_label_smoothing(config.label_smoothing)
    train_data, validation_data = load_finetune_data(config, task)
    out_of_scope, train_data, validation_data = plan_out_of_scope(config, task, train_data, validation_data)
    config = resolve_epochs(config, task, train_data)  # before the fingerprint and the manifest record it
    label_sets = distillation.label_sets(task, train_data) if distillation else task.label_sets(train_data)
    label2ids = label_maps(label_sets)
    # Validation labels the training data lacks are scored as errors, counted and reported
    # (out-of-scope rows kept for calibration only are expected there).
    unseen = task.unseen(validation_data, label2ids)
    if out_of_scope:
        unseen = {head: found.without(out_of_scope.label) for head, found in unseen.items()}
    unseen = {head: found for head, found in unseen.items() if found.rows}
    primary = task.primary_metric
    source = resolve_model_source(config.model)
    check_model_family(source, config.trust_remote_code)  # before the tokenizer: a clear sentence first
    tokenizer = load_tokenizer(source, config.trust_remote_code)
    tokenizer.model_max_length = config.max_length  # downstream stages read it from here
    dist = init_distributed(config.device)
    device = pick_device(config.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if config.batch_size % dist.world_size:
        raise ConfigError(f"batch size {config.batch_size} must be divisible by the {dist.world_size} processes "
                          "(it is the global batch, split evenly between them).")
    per_process_batch = config.batch_size // dist.world_size
    state_dir = checkpointing.training_state_dir(config.output)
    data_description = {"train": _describe(config.train, train_data),
                        "validation": _describe(config.validation, validation_data)}
    run_fingerprint = checkpointing.fingerprint(
        {**{k: v for k, v in asdict(config).items() if k not in ("overwrite", "resume", "checkpoint_every")},
         "distillation": distillation.describe() if distillation else None},
        {name: part.get("sha256", part["source"]) for name, part in data_description.items()})
    resuming = _refuse_clobbering(config, state_dir)

    seed_everything(config.seed)
    if distillation:
        model = distillation.student().to(device)
    else:
        model = task.new_model(source, label_sets, config.allow_pickle, config.trust_remote_code,
                               {"slot_loss_weight": config.slot_loss_weight, "pooling": config.pooling}).to(device)
    _check_max_length(config.max_length, model.config)
    amp_dtype = autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    # auto is off on every device. Compiling costs ~90 s before the first MiniLM step on CPU
    # and gains ~10% a step there. On an H200 (2026-12-01) it cost 30 s for MiniLM and 50 s for
    # a BERT-base shape: MiniLM's steps then ran 1.4x faster (it pays off after ~200k samples,
    # some 16 SNIPS epochs), BERT-base's no faster than eager fp32 (docs/gpus.md).
    use_compile = config.compile == "on"
    pad_multiple = 8 if use_compile else None  # tensor-core friendly lengths; shapes stay dynamic (batching.py)

    validation_ids = task.label_ids_for(validation_data, label2ids)
    id2labels = {head: {i: label for label, i in ids.items()} for head, ids in validation_ids.items()}
    # A student also reads unlabeled texts, whose labels never train (ids below UNSEEN_BASE).
    rows_data = distillation.training_data(task, train_data) if distillation else train_data
    train_loader, truncated_train = make_loader(task, tokenizer, rows_data, task.label_ids_for(rows_data, label2ids),
                                                per_process_batch, config.max_length, True, config.seed,
                                                pad_multiple, dist)
    validation_loader, truncated_validation = make_loader(
        task, tokenizer, validation_data, validation_ids, per_process_batch * 2, config.max_length, False,
        config.seed, pad_multiple, dist)

    optimizer = torch.optim.AdamW(weight_decay_groups(model, config.weight_decay), lr=config.lr)
    total_steps = config.epochs * len(train_loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    # --average-weights: epochs are scored, and the best saved, on the weights' moving average
    averaged = averaged_model(model, total_steps) if config.average_weights else None

    # Everything the loop needs to continue exactly where it stopped.
    progress = {"epoch": 1, "batches_done": 0, "seen": 0, "loss_sum": 0.0, "seconds": 0.0, "global_step": 0,
                "history": [], "best_epoch": 0, "best_scores": {}, "best_key": [-1.0, 0.0]}
    if resuming:
        state = checkpointing.load_training_state(state_dir, run_fingerprint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if averaged is not None:
            averaged.load_state_dict(state["averaged"])
        progress = state["progress"]
        checkpointing.restore_rng(state)
        train_loader.generator.set_state(state["epoch_generator"])
    elif state_dir.exists() and dist.is_main:
        shutil.rmtree(state_dir)
    if use_compile:
        model.compile(dynamic=True)  # in place: state_dict keys stay clean for saving
    loss_of = distillation.objective(task, device) if distillation else task.loss
    # Under torchrun, DDP averages gradients across processes; `model` stays the bare module
    # for evaluation and saving.
    forward = model
    if dist.enabled:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    terminal = show_progress and dist.is_main  # a tqdm bar; otherwise timed plain lines
    log = ProgressLog(state_dir / PROGRESS_LOG, terminal, enabled=dist.is_main)
    if distillation:
        facts = distillation.describe()
        log.line(f"distilling {facts['teacher']}: layers {facts['kept_layers']} of {facts['teacher_layers']}, "
                 f"temperature {facts['temperature']}, alpha {facts['alpha']}, "
                 f"{facts['unlabeled_texts']} unlabeled texts")
    log.line(f"training {task.name}: {len(train_data)} examples, {len(validation_data)} held out, "
             f"{config.epochs} epochs of {len(train_loader)} steps, batch {config.batch_size}, lr {config.lr}, "
             f"{device.type}{', compiled' if use_compile else ''}{'' if averaged is None else ', weights averaged'}")
    cut = truncated_train["sentences"]
    if cut >= TRUNCATION_WARNING_SHARE * len(rows_data):  # counted in metrics.json either way
        log.line(f"warning: {cut} of {len(rows_data)} training texts ({cut / len(rows_data):.0%}) are longer than "
                 f"--max-length {config.max_length} tokens and are cut there: the model never reads the rest.")
    for head, found in unseen.items():
        log.line(f"note: validation data: {found.describe(head)}")
    # The loss stays on the device and is read every LOSS_READ_EVERY steps: reading it every
    # step (loss.item()) makes the host wait for the GPU, which stalls a compiled CUDA loop.
    # float64: the sum over hundreds of steps stays exact enough for resumed runs to match
    pending_loss = torch.zeros((), dtype=torch.float64, device=device)  # sum of loss x batch size since the last read
    pending = {"seen": 0, "from_step": progress["global_step"] + 1}

    def read_loss() -> float:
        """Move the device-side loss sum into progress; the mean loss since the last read. A
        non-finite sum means a step diverged: stop before anything from after it is saved."""
        value = pending_loss.item()
        if not math.isfinite(value):
            diverged(f"the loss became {value}", pending["from_step"])
        pending_loss.zero_()
        progress["loss_sum"] += value
        mean = value / pending["seen"] if pending["seen"] else float("nan")
        pending.update(seen=0, from_step=progress["global_step"] + 1)
        return mean

    def diverged(what: str, from_step: int) -> None:
        if dist.is_main:
            shutil.rmtree(state_dir, ignore_errors=True)  # resuming the same run would diverge again
        raise TrainingDiverged(
            f"training diverged in epoch {progress['epoch']}: {what} between steps {from_step} and "
            f"{progress['global_step']}. Nothing was saved; lower --lr (it was {config.lr}) or check the data.")

    def save_state(generator_state) -> None:
        read_loss()  # the saved state holds every step's loss
        if dist.is_main:
            checkpointing.save_training_state(state_dir, model, optimizer, scheduler, scaler, progress,
                                              generator_state, run_fingerprint, averaged)

    with checkpointing.StopOnSignal() as stop, compile_without_duck_sizing():
        while progress["epoch"] <= config.epochs:
            epoch = progress["epoch"]
            epoch_generator = train_loader.generator.get_state()  # fixes this epoch's shuffle order
            if dist.enabled:
                train_loader.batch_sampler.sampler.set_epoch(epoch)  # a new shuffle every epoch, the same on every process
            model.train()
            started = time.perf_counter() - progress["seconds"]
            bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", disable=not terminal,
                       unit="batch", leave=False, initial=progress["batches_done"])
            for index, batch in enumerate(bar):
                if index < progress["batches_done"]:  # resumed mid-epoch: these are done
                    continue
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, _ = loss_of(forward, batch)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if averaged is not None:
                    averaged.update_parameters(model)

                batch_size = len(batch["input_ids"])
                progress["batches_done"] += 1
                progress["global_step"] += 1
                progress["seen"] += batch_size
                pending_loss += loss.detach().double() * batch_size
                pending["seen"] += batch_size
                if progress["global_step"] % LOSS_READ_EVERY == 0 and (terminal or log.due()):
                    rate = progress["seen"] / (time.perf_counter() - started)
                    mean_loss = read_loss()
                    bar.set_postfix(loss=f"{mean_loss:.3f}", samples_s=f"{rate:.0f}")
                    log.periodic(f"epoch {epoch}/{config.epochs} step {index + 1}/{len(train_loader)}: "
                                 f"loss {mean_loss:.4f}, {rate:.0f} samples/s")
                if on_step:
                    on_step(progress["global_step"])
                every = config.checkpoint_every
                stopping = any_across(dist, bool(stop.requested))  # all processes stop at the same step
                if stopping or (every and progress["global_step"] % every == 0):
                    progress["seconds"] = time.perf_counter() - started
                    save_state(epoch_generator)
                    if stopping:
                        raise checkpointing.TrainingInterrupted(
                            f"training stopped by {stop.requested or 'a signal'} at epoch {epoch}, step "
                            f"{progress['global_step']}; its state is saved in {state_dir}. Run the same "
                            "command with --resume to continue.")
            seconds = time.perf_counter() - started
            read_loss()
            # the last step's update can break the weights without a loss showing it yet
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                diverged("the weights became non-finite", progress["global_step"])
            seen, loss_sum = sum_across(dist, progress["seen"], progress["loss_sum"])  # all processes' share
            kept = model if averaged is None else averaged.module  # the weights that are scored and saved
            scores = evaluate(task, kept, validation_loader, device, amp_dtype, id2labels, dist)
            progress["history"].append({"epoch": epoch, "train_loss": loss_sum / seen,
                                        "validation_loss": scores.pop("loss"),
                                        **{f"validation_{k}": v for k, v in scores.items() if k != "per_type"},
                                        "samples_per_second": seen / seconds, "seconds": seconds})
            log.line(f"epoch {epoch}/{config.epochs}: train loss {loss_sum / seen:.4f}, validation "
                     f"{DISPLAY_NAMES[primary]} {scores[primary]:.4f}, {seen / seconds:.0f} samples/s, "
                     f"{seconds:.0f} s")
            # Best = highest task score, ties broken by lower validation loss (a surer model).
            key = [scores[primary], -progress["history"][-1]["validation_loss"]]
            if key > progress["best_key"]:
                progress.update(best_epoch=epoch, best_scores=scores, best_key=key)
                if dist.is_main:
                    kept.save_pretrained(state_dir / checkpointing.BEST_DIR, safe_serialization=True)
            progress.update(epoch=epoch + 1, batches_done=0, seen=0, loss_sum=0.0, seconds=0.0)
            save_state(train_loader.generator.get_state())
            if on_epoch:
                on_epoch(epoch, scores)

    # Free the DDP wrapper now, while the process group is still registered. Its Reducer holds
    # the group; freed after destroy_process_group, it would destroy the gloo group with the GIL
    # held while gloo's worker thread waits for the GIL: a deadlock seen in the two-process tests.
    del forward
    gc.collect()
    history, best_epoch, best_scores = progress["history"], progress["best_epoch"], progress["best_scores"]
    result = FinetuneResult(config.output, best_epoch, best_scores, history, device.type, use_compile)
    if not dist.is_main:  # the main process writes the one output
        shutdown(dist)
        return result
    with artifacts.staged_output(config.output, config.overwrite) as out:
        for weights_file in (state_dir / checkpointing.BEST_DIR).iterdir():  # eager weights, best epoch
            shutil.copy2(weights_file, out / weights_file.name)
        tokenizer.save_pretrained(out)
        extra_metrics = {}
        if out_of_scope:  # the threshold, from the best epoch's model on held-out data
            extra_metrics["out_of_scope"] = calibrate_checkpoint(out, task, out_of_scope, validation_data,
                                                               config.max_length)
            log.line(describe_rule(extra_metrics["out_of_scope"]))
        if distillation:  # the student's distance to its teacher on held-out rows, before and after
            whole_split, _ = make_loader(task, tokenizer, validation_data, validation_ids, per_process_batch * 2,
                                         config.max_length, False, config.seed, None)  # every row, not this process's share
            extra_metrics["distillation"] = distillation.report(task, out, whole_split, device)
        if (state_dir / PROGRESS_LOG).exists():
            shutil.copy2(state_dir / PROGRESS_LOG, out / artifacts.TRAINING_LOG)
        write_jsonl(task.to_records(validation_data, config.columns), out / artifacts.VALIDATION_SPLIT)
        # A seeded sample of the training texts, for static-quantization calibration in export.
        sample = random.Random(config.seed).sample(range(len(train_data)), min(1024, len(train_data)))
        write_jsonl([{config.text_column: train_data.texts[i]} for i in sorted(sample)],
                    out / artifacts.CALIBRATION_SAMPLE)
        metrics = {"task": config.task, "primary_metric": primary, "best_epoch": best_epoch, "best": best_scores,
                   "epochs": history, "processes": dist.world_size,
                   "train_examples": len(train_data), "validation_examples": len(validation_data),
                   **task.data_facts(train_data, validation_data, truncated_train, truncated_validation),
                   "unseen_in_validation": {head: {"rows": u.rows, "labels": u.counts} for head, u in unseen.items()},
                   "device": device.type, "compiled": use_compile,
                   "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32", **extra_metrics}
        artifacts.write_json(out / artifacts.METRICS, metrics)
        extra = {"distillation": distillation.describe()} if distillation else {}
        artifacts.write_manifest(out, "distill" if distillation else "finetune", asdict(config),
                                 parent=Path(source) if Path(source).exists() else None,
                                 model_source=source, labels=label_sets, data=data_description, **extra)
    shutil.rmtree(state_dir)  # the run is complete: nothing left to resume
    shutdown(dist)
    return result


def _refuse_clobbering(config: FinetuneConfig, state_dir: Path) -> bool:
    """Check before hours of training, not after, that the output may be written, and decide
    whether this run resumes: only when asked to and a saved state exists. A state folder
    without one (a run killed before its first save, or by a full disk while saving) holds
    nothing to continue, so the run starts over and says so, whether --resume was given or not."""
    output = Path(config.output)
    if output.is_dir() and any(output.iterdir()) and not config.overwrite:
        raise NluDeployError(f"{output} already exists and is not empty; pass --overwrite to replace it.")
    resumable = (state_dir / checkpointing.STATE_FILE).is_file()
    if resumable and not config.resume and not config.overwrite:
        raise NluDeployError(f"an interrupted run's state is in {state_dir}; pass --resume to continue it "
                             "or --overwrite to start over.")
    if state_dir.exists() and not resumable and not config.overwrite:
        print(f"note: {state_dir} holds no saved training state (its run stopped before the first save); "
              "starting from the beginning.", file=sys.stderr)
    elif config.resume and not resumable:
        print(f"note: there is no interrupted run to resume for {output}; starting from the beginning.",
              file=sys.stderr)
    return config.resume and resumable


def _check_max_length(max_length: int, model_config) -> None:
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise ConfigError(f"max length {max_length} is beyond this model's limit of {limit} positions.")


def _describe(path: Path | None, data) -> dict:
    described = {"source": data.source, "rows": len(data)}
    if path is not None:
        described["sha256"] = artifacts.file_sha256(path)
    return described
