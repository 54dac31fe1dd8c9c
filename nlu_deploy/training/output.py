"""The checkpoint directory a finished fine-tune writes, atomically: the best epoch's weights,
the tokenizer, the out-of-scope rule, metrics.json, the held-out split, a calibration sample
and the manifest. Only the main process calls it."""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict
from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.data.tables import write_jsonl
from nlu_deploy.training import checkpointing
from nlu_deploy.training.oos_calibration import calibrate_checkpoint, describe_rule
from nlu_deploy.training.plan import RunPlan

PROGRESS_LOG = "progress.log"  # in the training state directory while training
CALIBRATION_ROWS = 1024  # training texts kept for static-quantization calibration in export


def write_checkpoint(plan: RunPlan, progress: dict, facts: dict, log, distillation=None, whole_split=None) -> None:
    """`facts`: what the loop measured (truncation, autocast dtype); `whole_split`: every
    held-out row in one loader, for a student's distance to its teacher."""
    config, task = plan.config, plan.task
    with artifacts.staged_output(config.output, config.overwrite) as out:
        for weights_file in (plan.state_dir / checkpointing.BEST_DIR).iterdir():  # eager weights, best epoch
            shutil.copy2(weights_file, out / weights_file.name)
        plan.tokenizer.save_pretrained(out)
        extra_metrics = {}
        if plan.out_of_scope:  # the threshold, from the best epoch's model on held-out data
            extra_metrics["out_of_scope"] = calibrate_checkpoint(
                out, task, plan.out_of_scope, plan.validation_data, config.max_length
            )
            log.line(describe_rule(extra_metrics["out_of_scope"]))
        if distillation:  # the student's distance to its teacher on held-out rows, before and after
            extra_metrics["distillation"] = distillation.report(task, out, whole_split, plan.device)
        if (plan.state_dir / PROGRESS_LOG).exists():
            shutil.copy2(plan.state_dir / PROGRESS_LOG, out / artifacts.TRAINING_LOG)
        write_jsonl(task.to_records(plan.validation_data, config.columns), out / artifacts.VALIDATION_SPLIT)
        _write_calibration_sample(plan, out)
        artifacts.write_json(out / artifacts.METRICS, _metrics(plan, progress, facts, extra_metrics))
        extra = {"distillation": distillation.describe()} if distillation else {}
        artifacts.write_manifest(
            out,
            "distill" if distillation else "finetune",
            asdict(config),
            parent=Path(plan.source) if Path(plan.source).exists() else None,
            model_source=plan.source,
            labels=plan.label_sets,
            data=plan.data_description,
            **extra,
        )


def _write_calibration_sample(plan: RunPlan, out: Path) -> None:
    """A seeded sample of the training texts, for static-quantization calibration in export."""
    train = plan.train_data
    sample = random.Random(plan.config.seed).sample(range(len(train)), min(CALIBRATION_ROWS, len(train)))
    write_jsonl([{plan.config.text_column: train.texts[i]} for i in sorted(sample)], out / artifacts.CALIBRATION_SAMPLE)


def _metrics(plan: RunPlan, progress: dict, facts: dict, extra: dict) -> dict:
    return {
        "task": plan.config.task,
        "primary_metric": plan.task.primary_metric,
        "best_epoch": progress["best_epoch"],
        "best": progress["best_scores"],
        "epochs": progress["history"],
        "processes": plan.dist.world_size,
        "train_examples": len(plan.train_data),
        "validation_examples": len(plan.validation_data),
        **plan.task.data_facts(
            plan.train_data, plan.validation_data, facts["truncated_train"], facts["truncated_validation"]
        ),
        "unseen_in_validation": {head: {"rows": u.rows, "labels": u.counts} for head, u in plan.unseen.items()},
        "device": plan.device.type,
        "compiled": plan.use_compile,
        "amp": facts["amp"],
        **extra,
    }
