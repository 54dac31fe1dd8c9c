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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.errors import ConfigError, NluDeployError
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.progress import ProgressLog
from nlu_deploy.tasks import Task
from nlu_deploy.training import checkpointing
from nlu_deploy.training.batching import BatchesWithoutSingletons, compile_without_duck_sizing
from nlu_deploy.training.distributed import DistributedContext, any_across, gather_arrays, shutdown, sum_across
from nlu_deploy.training.output import PROGRESS_LOG, write_checkpoint
from nlu_deploy.training.plan import RunPlan, check_max_length, plan_run
from nlu_deploy.training.weight_averaging import averaged_model

LOSS_READ_EVERY = 20  # optimizer steps between reads of the device-side loss (progress lines, bar)


@dataclass
class FinetuneResult:
    output: Path
    best_epoch: int
    best_scores: dict[str, float]
    epochs: list[dict]
    device: str
    compiled: bool


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(
    task: Task,
    tokenizer,
    data,
    label_ids: dict[str, dict[str, int]],
    batch_size: int,
    max_length: int,
    shuffle: bool,
    seed: int,
    pad_multiple: int | None,
    dist: DistributedContext = DistributedContext(),
):
    """Dynamic padding: each batch is padded to its own longest row, not to max_length, and
    never holds a single row (see batching.py).
    Under torchrun each process gets its share: a DistributedSampler (reshuffled every epoch
    with set_epoch) for training, a plain slice for evaluation (no padded duplicates).
    Returns the loader and what truncation cut (sentences; for word tasks, gold entities)."""
    import torch

    rows, truncation = task.rows(tokenizer, data, label_ids, max_length)
    if not shuffle:  # evaluation: similar lengths together, less padding
        rows.sort(key=lambda row: len(row["input_ids"]))
        rows = rows[dist.rank :: dist.world_size]
    generator = torch.Generator().manual_seed(seed)
    if shuffle and dist.enabled:
        sampler = torch.utils.data.DistributedSampler(
            rows, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed
        )
    elif shuffle:
        sampler = torch.utils.data.RandomSampler(rows, generator=generator)
    else:
        sampler = torch.utils.data.SequentialSampler(rows)
    # The loader's generator is the sampler's: resume saves and restores it to repeat an epoch's order.
    loader = torch.utils.data.DataLoader(
        rows,
        batch_sampler=BatchesWithoutSingletons(sampler, batch_size),
        collate_fn=task.collator(tokenizer, pad_multiple),
        generator=generator,
    )
    return loader, truncation


def evaluate(
    task: Task,
    model,
    loader,
    device,
    amp_dtype,
    id2labels: dict[str, dict[int, str]],
    dist: DistributedContext = DistributedContext(),
) -> dict:
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
    gathered = {
        key: gather_arrays(dist, np.concatenate(parts[key]) if key in parts else empty) for key in task.prediction_keys
    }
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


def finetune(
    config: FinetuneConfig, show_progress: bool = True, on_step=None, distillation=None, on_epoch=None
) -> FinetuneResult:
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
    plan = plan_run(config, distillation)
    state = TrainingState.build(plan, distillation, show_progress)
    with checkpointing.StopOnSignal() as stop, compile_without_duck_sizing():
        while state.progress["epoch"] <= plan.config.epochs:
            _train_one_epoch(plan, state, stop, on_step)
            scores = _end_epoch(plan, state)
            if on_epoch:
                on_epoch(state.progress["epoch"] - 1, scores)
    # Free the DDP wrapper now, while the process group is still registered. Its Reducer holds
    # the group; freed after destroy_process_group, it would destroy the gloo group with the GIL
    # held while gloo's worker thread waits for the GIL: a deadlock seen in the two-process tests.
    state.forward = None
    gc.collect()
    progress = state.progress
    result = FinetuneResult(
        plan.config.output,
        progress["best_epoch"],
        progress["best_scores"],
        progress["history"],
        plan.device.type,
        plan.use_compile,
    )
    if plan.dist.is_main:  # the main process writes the one output
        whole_split = None
        if distillation:  # every held-out row, not this process's share
            whole_split, _ = make_loader(
                plan.task,
                plan.tokenizer,
                plan.validation_data,
                plan.validation_ids,
                plan.per_process_batch * 2,
                plan.config.max_length,
                False,
                plan.config.seed,
                None,
            )
        write_checkpoint(plan, progress, state.facts, state.log, distillation, whole_split)
        shutil.rmtree(plan.state_dir)  # the run is complete: nothing left to resume
    shutdown(plan.dist)
    return result


class TrainingState:
    """What trains and what a resume restores: the model (and its moving average), optimizer,
    scheduler, scaler, loaders, and `progress`, the dict saved with them. It reads the loss the
    device sums, and stops the run when that loss or the weights stop being finite numbers."""

    def __init__(self, plan: RunPlan, model, optimizer, scheduler, scaler, averaged, loaders, facts, log):
        import torch

        self.plan, self.model, self.optimizer, self.scheduler = plan, model, optimizer, scheduler
        self.scaler, self.averaged, self.log, self.facts = scaler, averaged, log, facts
        self.train_loader, self.validation_loader = loaders
        self.forward = model  # DDP's wrapper under torchrun; `model` stays the bare module
        self.loss_of = None  # the task's loss, or a student's; build() sets it
        self.progress = {
            "epoch": 1, "batches_done": 0, "seen": 0, "loss_sum": 0.0, "seconds": 0.0, "global_step": 0,
            "history": [], "best_epoch": 0, "best_scores": {}, "best_key": [-1.0, 0.0],
        }  # fmt: skip
        # The loss stays on the device and is read every LOSS_READ_EVERY steps: reading it every
        # step (loss.item()) makes the host wait for the GPU, which stalls a compiled CUDA loop.
        # float64: the sum over hundreds of steps stays exact enough for resumed runs to match.
        self.pending_loss = torch.zeros((), dtype=torch.float64, device=plan.device)
        self.pending_seen, self.pending_from = 0, 1

    @classmethod
    def build(cls, plan: RunPlan, distillation, show_progress: bool) -> TrainingState:
        import torch
        from transformers import get_linear_schedule_with_warmup

        config, task = plan.config, plan.task
        seed_everything(config.seed)
        model = distillation.student() if distillation else task.new_model(
            plan.source, plan.label_sets, config.allow_pickle, config.trust_remote_code,
            {"slot_loss_weight": config.slot_loss_weight, "pooling": config.pooling,
             "pad_token_id": plan.tokenizer.pad_token_id},
        )  # fmt: skip
        model = model.to(plan.device)
        check_max_length(config.max_length, model.config)
        amp_dtype = autocast_dtype(config.precision, plan.device)
        pad_multiple = 8 if plan.use_compile else None  # tensor-core friendly lengths; shapes stay dynamic
        train_loader, truncated_train = make_loader(
            task, plan.tokenizer, plan.rows_data, task.label_ids_for(plan.rows_data, plan.label2ids),
            plan.per_process_batch, config.max_length, True, config.seed, pad_multiple, plan.dist,
        )  # fmt: skip
        validation_loader, truncated_validation = make_loader(
            task, plan.tokenizer, plan.validation_data, plan.validation_ids, plan.per_process_batch * 2,
            config.max_length, False, config.seed, pad_multiple, plan.dist,
        )  # fmt: skip
        optimizer = torch.optim.AdamW(weight_decay_groups(model, config.weight_decay), lr=config.lr)
        total_steps = config.epochs * len(train_loader)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
        # --average-weights: epochs are scored, and the best saved, on the weights' moving average
        averaged = averaged_model(model, total_steps) if config.average_weights else None
        terminal = show_progress and plan.dist.is_main  # a tqdm bar; otherwise timed plain lines
        facts = {"truncated_train": truncated_train, "truncated_validation": truncated_validation,
                 "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32", "amp_dtype": amp_dtype,
                 "terminal": terminal}  # fmt: skip
        state = cls(
            plan, model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
            averaged, (train_loader, validation_loader), facts, None,
        )  # fmt: skip
        state.restore_or_start()  # before the log: a fresh run clears the state folder the log writes into
        state.log = ProgressLog(plan.state_dir / PROGRESS_LOG, terminal, enabled=plan.dist.is_main)
        if plan.use_compile:
            model.compile(dynamic=True)  # in place: state_dict keys stay clean for saving
        if plan.dist.enabled:  # DDP averages gradients across processes
            device_ids = [plan.device.index] if plan.device.type == "cuda" else None
            state.forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        state.loss_of = distillation.objective(task, plan.device) if distillation else task.loss
        state.announce(distillation)
        return state

    def restore_or_start(self) -> None:
        plan = self.plan
        if plan.resuming:
            saved = checkpointing.load_training_state(plan.state_dir, plan.run_fingerprint)
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            if self.averaged is not None:
                self.averaged.load_state_dict(saved["averaged"])
            self.progress = saved["progress"]
            checkpointing.restore_rng(saved)
            self.train_loader.generator.set_state(saved["epoch_generator"])
        elif plan.state_dir.exists() and plan.dist.is_main:
            shutil.rmtree(plan.state_dir)
        self.pending_from = self.progress["global_step"] + 1

    def announce(self, distillation) -> None:
        plan, config, log = self.plan, self.plan.config, self.log
        if distillation:
            facts = distillation.describe()
            log.line(
                f"distilling {facts['teacher']}: layers {facts['kept_layers']} of {facts['teacher_layers']}, "
                f"temperature {facts['temperature']}, alpha {facts['alpha']}, "
                f"{facts['unlabeled_texts']} unlabeled texts"
            )
        log.line(
            f"training {plan.task.name}: {len(plan.train_data)} examples, {len(plan.validation_data)} held out, "
            f"{config.epochs} epochs of {len(self.train_loader)} steps, batch {config.batch_size}, lr {config.lr}, "
            f"{plan.device.type}{', compiled' if plan.use_compile else ''}"
            f"{'' if self.averaged is None else ', weights averaged'}"
        )
        cut, rows = self.facts["truncated_train"]["sentences"], len(plan.rows_data)
        if cut >= TRUNCATION_WARNING_SHARE * rows:  # counted in metrics.json either way
            log.line(
                f"warning: {cut} of {rows} training texts ({cut / rows:.0%}) are longer than "
                f"--max-length {config.max_length} tokens and are cut there: the model never reads the rest."
            )
        for head, found in plan.unseen.items():
            log.line(f"note: validation data: {found.describe(head)}")

    def add_loss(self, loss, batch_size: int) -> None:
        self.pending_loss += loss.detach().double() * batch_size
        self.pending_seen += batch_size

    def read_loss(self) -> float:
        """Move the device-side loss sum into progress; the mean loss since the last read. A
        non-finite sum means a step diverged: stop before anything from after it is saved."""
        value = self.pending_loss.item()
        if not math.isfinite(value):
            self.diverged(f"the loss became {value}", self.pending_from)
        self.pending_loss.zero_()
        self.progress["loss_sum"] += value
        mean = value / self.pending_seen if self.pending_seen else float("nan")
        self.pending_seen, self.pending_from = 0, self.progress["global_step"] + 1
        return mean

    def check_weights(self) -> None:
        """The last step's update can break the weights without a loss showing it yet."""
        import torch

        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self.diverged("the weights became non-finite", self.progress["global_step"])

    def diverged(self, what: str, from_step: int) -> None:
        plan = self.plan
        if plan.dist.is_main:
            shutil.rmtree(plan.state_dir, ignore_errors=True)  # resuming the same run would diverge again
        raise TrainingDiverged(
            f"training diverged in epoch {self.progress['epoch']}: {what} between steps {from_step} and "
            f"{self.progress['global_step']}. Nothing was saved; lower --lr (it was {plan.config.lr}) or check the data."
        )

    def save(self, generator_state) -> None:
        self.read_loss()  # the saved state holds every step's loss
        if self.plan.dist.is_main:
            checkpointing.save_training_state(
                self.plan.state_dir, self.model, self.optimizer, self.scheduler, self.scaler, self.progress,
                generator_state, self.plan.run_fingerprint, self.averaged,
            )  # fmt: skip


def _train_one_epoch(plan: RunPlan, state: TrainingState, stop, on_step) -> None:
    """One pass over the training data: batch -> forward -> loss -> backward -> clip -> step ->
    schedule -> log, saving the state every --checkpoint-every steps and on a stop signal."""
    import torch
    from tqdm.auto import tqdm

    config, progress, amp_dtype = plan.config, state.progress, state.facts["amp_dtype"]
    epoch = progress["epoch"]
    epoch_generator = state.train_loader.generator.get_state()  # fixes this epoch's shuffle order
    if plan.dist.enabled:  # a new shuffle every epoch, the same on every process
        state.train_loader.batch_sampler.sampler.set_epoch(epoch)
    state.model.train()
    started = time.perf_counter() - progress["seconds"]
    bar = tqdm(
        state.train_loader, desc=f"epoch {epoch}/{config.epochs}", disable=not state.facts["terminal"],
        unit="batch", leave=False, initial=progress["batches_done"],
    )  # fmt: skip
    for index, batch in enumerate(bar):
        if index < progress["batches_done"]:  # resumed mid-epoch: these are done
            continue
        batch = {k: v.to(plan.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(plan.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss, _ = state.loss_of(state.forward, batch)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.max_grad_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        if state.averaged is not None:
            state.averaged.update_parameters(state.model)

        batch_size = len(batch["input_ids"])
        progress["batches_done"] += 1
        progress["global_step"] += 1
        progress["seen"] += batch_size
        state.add_loss(loss, batch_size)
        if progress["global_step"] % LOSS_READ_EVERY == 0 and (state.facts["terminal"] or state.log.due()):
            rate = progress["seen"] / (time.perf_counter() - started)
            mean_loss = state.read_loss()
            bar.set_postfix(loss=f"{mean_loss:.3f}", samples_s=f"{rate:.0f}")
            state.log.periodic(
                f"epoch {epoch}/{config.epochs} step {index + 1}/{len(state.train_loader)}: "
                f"loss {mean_loss:.4f}, {rate:.0f} samples/s"
            )
        if on_step:
            on_step(progress["global_step"])
        every = config.checkpoint_every
        stopping = any_across(plan.dist, bool(stop.requested))  # all processes stop at the same step
        if stopping or (every and progress["global_step"] % every == 0):
            progress["seconds"] = time.perf_counter() - started
            state.save(epoch_generator)
            if stopping:
                raise checkpointing.TrainingInterrupted(
                    f"training stopped by {stop.requested or 'a signal'} at epoch {epoch}, step "
                    f"{progress['global_step']}; its state is saved in {plan.state_dir}. Run the same "
                    "command with --resume to continue.",
                    stop.requested or "SIGINT",
                )
    progress["seconds"] = time.perf_counter() - started


def _end_epoch(plan: RunPlan, state: TrainingState) -> dict:
    """Score the epoch on the held-out split, keep it if it is the best so far, save the state."""
    progress, primary, epoch = state.progress, plan.task.primary_metric, state.progress["epoch"]
    seconds = progress["seconds"]
    state.read_loss()
    state.check_weights()
    seen, loss_sum = sum_across(plan.dist, progress["seen"], progress["loss_sum"])  # all processes' share
    kept = state.model if state.averaged is None else state.averaged.module  # the weights scored and saved
    scores = evaluate(
        plan.task, kept, state.validation_loader, plan.device, state.facts["amp_dtype"], plan.id2labels, plan.dist
    )
    progress["history"].append({
        "epoch": epoch, "train_loss": loss_sum / seen, "validation_loss": scores.pop("loss"),
        **{f"validation_{k}": v for k, v in scores.items() if k != "per_type"},
        "samples_per_second": seen / seconds, "seconds": seconds,
    })  # fmt: skip
    state.log.line(
        f"epoch {epoch}/{plan.config.epochs}: train loss {loss_sum / seen:.4f}, validation "
        f"{DISPLAY_NAMES[primary]} {scores[primary]:.4f}, {seen / seconds:.0f} samples/s, {seconds:.0f} s"
    )
    # Best = highest task score, ties broken by lower validation loss (a surer model).
    key = [scores[primary], -progress["history"][-1]["validation_loss"]]
    if key > progress["best_key"]:
        progress.update(best_epoch=epoch, best_scores=scores, best_key=key)
        if plan.dist.is_main:
            kept.save_pretrained(plan.state_dir / checkpointing.BEST_DIR, safe_serialization=True)
    progress.update(epoch=epoch + 1, batches_done=0, seen=0, loss_sum=0.0, seconds=0.0)
    state.save(state.train_loader.generator.get_state())
    return scores
