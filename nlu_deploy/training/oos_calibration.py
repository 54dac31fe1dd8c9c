"""finetune's side of out-of-scope rejection: which rows train, and the threshold calibrated on
held-out data once the best epoch is known (the rule itself is in rejection.py).

- `--oos-label L --oos-training class` (default): out-of-scope rows train as one more class;
  the model rejects when that class wins or its in-scope confidence is below the threshold.
- `--oos-training calibration`: out-of-scope rows are left out of training and only set the
  threshold, for data whose out-of-scope examples are too few or too varied to learn.
- `--oos-recall R` (default 0.8): the threshold rejects at least R of the held-out out-of-scope
  rows at the least cost in in-scope accuracy (rejection.calibrate says why a target).
- `--oos-validation FILE`: out-of-scope texts (no label needed) that join the held-out split
  for calibration; with no `--oos-label` the rule answers `out_of_scope`.
The rule is written into the checkpoint's config.json, so every later stage applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.data.tables import read_texts
from nlu_deploy.errors import ConfigError, DataError
from nlu_deploy.evaluation.plots import plot_rejection_tradeoff
from nlu_deploy.portable.rejection import CONFIG_KEY, calibrate, cross_fitted
from nlu_deploy.tasks import Task, torch_backend

DEFAULT_LABEL = "out_of_scope"
OOS_PLOT = "out_of_scope.png"  # in the checkpoint: in-scope accuracy against out-of-scope recall


@dataclass
class OutOfScopePlan:
    label: str
    training: str  # class | calibration
    target_recall: float  # --oos-recall
    extra_texts: list[str] = field(default_factory=list)  # from --oos-validation
    removed_from_training: int = 0


def plan_out_of_scope(config: FinetuneConfig, task: Task, train, validation):
    """(plan or None, train, validation): checks made before any training starts."""
    if not (config.oos_label or config.oos_validation):
        return None, train, validation
    label = config.oos_label or DEFAULT_LABEL
    # with no out-of-scope label in the data there is nothing to learn as a class
    plan = OutOfScopePlan(label, config.oos_training if config.oos_label else "calibration", config.oos_recall)
    if config.oos_validation is not None:
        plan.extra_texts = read_texts(config.oos_validation)
        if not plan.extra_texts:
            raise DataError(f"{config.oos_validation} holds no out-of-scope texts.")
    in_training = sum(1 for value in task.intents_of(train) if value == label)
    if plan.training == "class" and not in_training:
        raise ConfigError(
            f"the training data has no {label!r} rows to learn as a class; pass "
            "--oos-training calibration to use out-of-scope examples for the threshold only."
        )
    if plan.training == "calibration":
        train, plan.removed_from_training = task.without_intent(train, label)
    if not any(value == label for value in task.intents_of(validation)) and not plan.extra_texts:
        raise DataError(
            f"the held-out data has no {label!r} rows to calibrate the rejection threshold on; "
            "give --validation data with some, or --oos-validation FILE with out-of-scope texts."
        )
    return plan, train, validation


def calibrate_checkpoint(directory: Path, task: Task, plan: OutOfScopePlan, validation, max_length: int) -> dict:
    """Calibrate on the held-out split (plus --oos-validation texts) with the saved best
    checkpoint, write the rule into its config.json, and return what metrics.json records."""
    from nlu_deploy.runtime.modeling import load_tokenizer

    model = task.load_model(directory)
    tokenizer = load_tokenizer(str(directory))
    backend = torch_backend(model, tokenizer, max_length)
    logits = task.infer(backend, task.examples(validation)).outputs[task.intent_output]
    if plan.extra_texts:
        extra = task.infer(backend, task.examples_from_texts(plan.extra_texts)).outputs[task.intent_output]
        logits = np.concatenate([logits, extra])
    labels = [*task.intents_of(validation), *[plan.label] * len(plan.extra_texts)]
    label2id = task.label2ids(model.config)[task.intent_head]
    gold = np.array([label2id.get(label, -1) for label in labels])
    is_oos = np.array([label == plan.label for label in labels], dtype=bool)
    oos_class = label2id.get(plan.label)  # None when out-of-scope rows were not trained as a class
    rule, candidates = calibrate(logits, gold, is_oos, plan.label, oos_class, plan.target_recall)
    config = artifacts.read_model_config(directory)
    config[CONFIG_KEY] = rule.to_json()
    artifacts.write_json(directory / artifacts.MODEL_CONFIG, config)
    calibration = {
        "rule": rule.to_json(),
        "training": plan.training,
        "candidates": candidates,
        "in_scope_rows": int((~is_oos).sum()),
        "out_of_scope_rows": int(is_oos.sum()),
        "out_of_scope_rows_left_out_of_training": plan.removed_from_training,
        # the rule's scores on rows it was not calibrated on (2-fold): the estimate for new data
        "cross_fitted": cross_fitted(logits, gold, is_oos, plan.label, oos_class, plan.target_recall),
    }
    plot_rejection_tradeoff(calibration, directory / OOS_PLOT)
    return calibration


def describe_rule(calibration: dict) -> str:
    rule = calibration["rule"]
    chosen = next(row for row in calibration["candidates"] if row["score"] == rule["score"])
    return (
        f"out-of-scope rule: {rule['label']!r} when {rule['score']} < {rule['threshold']:.4g}"
        f"{' or the class wins' if rule['oos_class'] is not None else ''}; on "
        f"{calibration['in_scope_rows']} in-scope and {calibration['out_of_scope_rows']} out-of-scope held-out "
        f"rows: in-scope accuracy {100 * chosen['in_scope_accuracy']:.2f}%, out-of-scope recall "
        f"{100 * chosen['oos_recall']:.2f}%, precision {100 * chosen['oos_precision']:.2f}%, "
        f"AUROC {chosen['oos_auroc']:.4f}; cross-fitted (calibrated on other rows): in-scope accuracy "
        f"{100 * calibration['cross_fitted']['in_scope_accuracy']:.2f}%, out-of-scope recall "
        f"{100 * calibration['cross_fitted']['oos_recall']:.2f}%"
    )
