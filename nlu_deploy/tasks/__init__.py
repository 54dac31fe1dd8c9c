"""The task registry: a task name -> the object that owns everything that differs between tasks
(see base.py). A new task is one module here and one line in TASKS.

A checkpoint or ONNX directory says which task made it in its config.json: a joint model by
its architecture, a tagger by its ForTokenClassification head, anything else is a classifier.
"""

from __future__ import annotations

from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.portable import rejection
from nlu_deploy.runtime.runtime_variants import RuntimeVariant
from nlu_deploy.runtime.sessions import OnnxTextClassifier, TorchTextClassifier
from nlu_deploy.tasks import classification, joint, tagging
from nlu_deploy.tasks.base import Inference, Task, Unseen, flat_logits, label_maps

TASKS: dict[str, Task] = {task.name: task for task in (classification.TASK, tagging.TASK, joint.TASK)}

__all__ = [
    "TASKS",
    "Inference",
    "Task",
    "Unseen",
    "flat_logits",
    "get_task",
    "label_maps",
    "load_checkpoint",
    "onnx_backend",
    "task_of",
    "torch_backend",
]


def get_task(name: str) -> Task:
    return TASKS[name]


def task_of(directory: Path) -> Task:
    """The task of a checkpoint or ONNX directory, from its config.json."""
    config = artifacts.read_model_config(directory, missing_ok=True)
    if not config:
        return classification.TASK  # loading the model reports what is wrong with the directory
    architectures = config.get("architectures") or []
    if config.get("nlu_task") == joint.TASK.name or "JointIntentSlotModel" in architectures:
        task = joint.TASK
    elif any(a.endswith("ForTokenClassification") for a in architectures):
        return tagging.TASK
    else:
        task = classification.TASK
    if config.get(rejection.CONFIG_KEY):  # calibrated by finetune --oos-label / --oos-validation
        return task.with_rejection(rejection.RejectionRule.from_json(config[rejection.CONFIG_KEY]))
    return task


def load_checkpoint(directory: Path):
    """Any task's fine-tuned checkpoint, in eval mode."""
    return task_of(directory).load_model(Path(directory))


def torch_backend(model, tokenizer, max_length: int, device: str = "cpu") -> TorchTextClassifier:
    return TorchTextClassifier(model, tokenizer, max_length, device)


def onnx_backend(
    path: Path | RuntimeVariant, tokenizer, config, max_length: int, provider: str = "cpu", threads: int | None = None
) -> OnnxTextClassifier:
    """An ONNX session with the label maps of `config` (a model config, or config.json's dict);
    for another runtime's variant (OpenVINO, AOTInductor), that runtime's session of its file."""
    read = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    session = path.session(threads) if isinstance(path, RuntimeVariant) else None
    return OnnxTextClassifier(
        getattr(path, "path", path), tokenizer, read("id2label"), max_length, provider, threads,
        read("intent_id2label"), session,
    )  # fmt: skip
