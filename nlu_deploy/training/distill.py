"""`nlu-deploy distill`: a shallower student of a fine-tuned teacher, for any task.

Compute in these encoders grows with depth, so a student with K of the teacher's N layers runs
about N/K times faster before quantization, and int8 multiplies on top of that. The student
starts as the teacher with K evenly spaced layers kept (the same tokenizer, embeddings and
heads), then trains in finetune's own loop (progress, best epoch, resume, DDP, compile) on

    loss = alpha * T^2 * KL(teacher / T || student / T) + (1 - alpha) * hard-label loss

(Hinton et al. 2015; T^2 keeps the soft term's gradients the same size at every temperature),
over the teacher's training data and, optionally, unlabeled texts that only the teacher's soft
targets train. Matched rows: one per text, and for word tasks one per word (first sub-words).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import DistillConfig, FinetuneConfig
from nlu_deploy.data.tables import SUPPORTED_SUFFIXES, read_records, read_text, text_lines
from nlu_deploy.errors import ConfigError, DataError, ModelError
from nlu_deploy.runtime.model_families import family_of
from nlu_deploy.tasks import Task, task_of
from nlu_deploy.training.loop import finetune

_PATH_OPTIONS = ("output", "train", "validation", "oos_validation")  # FinetuneConfig fields holding paths


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """The top layer of each of `keep` equal blocks of the teacher's layers: 6 -> 3 keeps 1, 3, 5;
    6 -> 2 keeps 2, 5. The last layer always stays, since the heads were trained on its output."""
    if not 0 < keep < total:
        raise ConfigError(f"a student keeps between 1 and {total - 1} of the teacher's {total} layers, not {keep}.")
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def _layer_list(model, total: int):
    """(parent module, attribute name) of the encoder's list of `total` layers."""
    import torch

    found = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == total
    ]
    if len(found) != 1:
        raise ModelError(f"cannot find the encoder's {total} layers in this {type(model).__name__}.")
    parent, _, attribute = found[0].rpartition(".")
    return (model.get_submodule(parent) if parent else model), attribute


def student_from_teacher(teacher, kept: list[int]):
    """A copy of the teacher with only the `kept` layers (renumbered 0..K-1), its config saying so."""
    import torch

    total = teacher.config.num_hidden_layers
    student = copy.deepcopy(teacher)
    parent, attribute = _layer_list(student, total)
    layers = getattr(parent, attribute)
    setattr(parent, attribute, torch.nn.ModuleList([layers[i] for i in kept]))
    for new_index, layer in enumerate(getattr(parent, attribute)):
        for module in layer.modules():  # attention caches address layers by index
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    student.config.num_hidden_layers = len(kept)
    layer_types = getattr(student.config, "layer_types", None)  # per-layer attention kinds (Qwen2, ...)
    if isinstance(layer_types, list) and len(layer_types) == total:
        student.config.layer_types = [layer_types[i] for i in kept]
    student.requires_grad_(True)  # whatever the teacher's were set to
    return student.train()


def soft_target_loss(student_logits, teacher_logits, temperature: float):
    """T^2 * KL(teacher || student) at temperature T, averaged over rows (0 for no rows)."""
    import torch.nn.functional as F

    if not len(student_logits):
        return student_logits.sum() * 0.0
    student_log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_p, teacher_log_p, reduction="sum", log_target=True) / len(student_logits)
    return kl * temperature**2


@dataclass
class Distillation:
    """What finetune's loop needs to train a student rather than a fresh model."""

    teacher_dir: Path
    kept_layers: list[int]
    teacher_layers: int
    temperature: float
    alpha: float
    unlabeled_texts: list[str] = field(default_factory=list)
    _teacher: object = None

    @property
    def teacher(self):
        if self._teacher is None:
            self._teacher = task_of(self.teacher_dir).load_model(self.teacher_dir)
        return self._teacher

    def describe(self) -> dict:
        """For the manifest, metrics.json and the resume fingerprint."""
        return {
            "teacher": str(Path(self.teacher_dir).resolve()),
            "teacher_layers": self.teacher_layers,
            "kept_layers": self.kept_layers,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "unlabeled_texts": len(self.unlabeled_texts),
        }

    def label_sets(self, task: Task, train) -> dict[str, list[str]]:
        """The teacher's labels, in its id order: the student keeps the teacher's heads."""
        label2ids = task.label2ids(self.teacher.config)
        missing = {head: sorted(set(labels) - set(label2ids[head])) for head, labels in task.label_sets(train).items()}
        missing = {head: labels for head, labels in missing.items() if labels}
        if missing:
            shown = "; ".join(f"{head}: {', '.join(map(repr, labels[:5]))}" for head, labels in missing.items())
            raise DataError(
                f"the training data holds labels the teacher does not have ({shown}); a student keeps "
                "the teacher's heads, so it can only learn the teacher's labels."
            )
        return {head: sorted(ids, key=ids.get) for head, ids in label2ids.items()}

    def student(self):
        return student_from_teacher(self.teacher, self.kept_layers)

    def training_data(self, task: Task, train):
        """The labelled rows, plus the unlabeled texts (soft targets only)."""
        return task.concatenated(train, task.unlabeled(self.unlabeled_texts)) if self.unlabeled_texts else train

    def objective(self, task: Task, device):
        """loss(model, batch) -> (loss, outputs): the task's hard-label loss mixed with the soft targets."""
        import torch

        # The teacher stays eager: it only runs forward, without gradients, and an in-place
        # compiled copy would be carried into the fresh student that report() cuts from it.
        teacher = self.teacher.to(device).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)

        def loss(model, batch: dict):
            hard, outputs = task.loss(model, batch)
            with torch.no_grad():
                _, teacher_outputs = task.loss(teacher, batch)
            soft = sum(
                soft_target_loss(s, t, self.temperature)
                for s, t in zip(
                    task.distillation_logits(outputs, batch), task.distillation_logits(teacher_outputs, batch)
                )
            )
            return self.alpha * soft + (1 - self.alpha) * hard, outputs

        return loss

    def report(self, task: Task, student_dir: Path, loader, device) -> dict:
        """How far the student is from its teacher on the held-out rows, before (the teacher cut to
        K layers) and after distillation: the mean soft-target loss per matched row."""
        import torch

        teacher = self.teacher.to(device).eval()
        students = {
            "kl_to_teacher_before": self.student().to(device).eval(),
            "kl_to_teacher_after": task.load_model(student_dir).to(device).eval(),
        }
        facts = self.describe()
        for name, student in students.items():
            total, rows = 0.0, 0
            with torch.inference_mode():
                for batch in loader:
                    batch = {k: v.to(device) for k, v in batch.items()}
                    pairs = zip(
                        task.distillation_logits(task.loss(student, batch)[1], batch),
                        task.distillation_logits(task.loss(teacher, batch)[1], batch),
                    )
                    for s, t in pairs:
                        total += float(soft_target_loss(s, t, self.temperature)) * len(s)
                        rows += len(s)
            facts[name] = total / max(rows, 1)
        return facts


def read_unlabeled(path: Path, column: str) -> list[str]:
    """One text per line, or a column of a data file (a list of words is joined by spaces)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    if path.suffix.lower() in SUPPORTED_SUFFIXES:
        records = read_records(path)
        if not records or column not in records[0]:
            raise DataError(f"{path} has no {column!r} column (pass --unlabeled-column).")
        texts = [
            " ".join(map(str, value)) if isinstance(value, list | np.ndarray) else str(value)
            for value in (record[column] for record in records)
        ]
    else:
        texts = text_lines(read_text(path))
    texts = [text.strip() for text in texts if text and text.strip()]
    if not texts:
        raise DataError(f"{path} holds no text.")
    return texts


def teacher_finetune_config(config: DistillConfig) -> FinetuneConfig:
    """The teacher's own finetune options with the student's overrides: by default the same data,
    columns, split and recipe, so the student never trains on the teacher's held-out rows."""
    teacher = Path(config.teacher)
    manifest = artifacts.read_manifest(teacher) if teacher.is_dir() else {}
    if manifest.get("stage") not in ("finetune", "distill"):
        raise ModelError(
            f"{teacher} is not a checkpoint written by `nlu-deploy finetune` (or distill); a teacher "
            "must be one, so that its data, split and labels are known."
        )
    known = {f.name for f in fields(FinetuneConfig)}
    options = {key: value for key, value in manifest["options"].items() if key in known}
    for key in _PATH_OPTIONS:
        if options.get(key) is not None:
            options[key] = Path(options[key])
    if config.train is None:
        _check_teacher_data(teacher, manifest, options)
    if config.train is not None:
        overrides = {"train": config.train, "validation": config.validation, "holdout_seed": None}
    else:  # the teacher's split, whatever seed the student trains with
        overrides = {"holdout_seed": FinetuneConfig(**options).split_seed}
    for key in ("text_column", "label_column", "intent_column", "batch_size", "lr"):
        if getattr(config, key) is not None:
            overrides[key] = getattr(config, key)
    return replace(
        FinetuneConfig(**options),
        **overrides,
        output=config.output,
        model=str(teacher),
        epochs=config.epochs,
        seed=config.seed,
        device=config.device,
        compile=config.compile,
        precision=config.precision,
        checkpoint_every=config.checkpoint_every,
        resume=config.resume,
        overwrite=config.overwrite,
        allow_pickle=False,
        trust_remote_code=False,
    )


def _check_teacher_data(teacher: Path, manifest: dict, options: dict) -> None:
    """The teacher's data files must still be the ones it was trained on, or the split moves."""
    recorded = manifest.get("data", {})
    for part in ("train", "validation"):
        path = options.get(part)
        if path is None:
            continue
        if not path.is_file():
            raise DataError(
                f"the teacher {teacher} was trained on {path}, which is not there any more; pass --train "
                "(and --validation) to distil on data you have."
            )
        expected = recorded.get(part, {}).get("sha256")
        if expected and artifacts.file_sha256(path) != expected:
            raise DataError(
                f"{path} has changed since the teacher {teacher} was trained on it, so its held-out split "
                "cannot be rebuilt; pass --train (and --validation) to distil on it as it is now."
            )


def distill(config: DistillConfig, show_progress: bool = True, on_step=None, search=None):
    """Train the student; writes a normal checkpoint directory whose manifest names the teacher.
    With a SearchConfig the student is the best of a hyperparameter search (search.py), and the
    result is that search's."""
    teacher = Path(config.teacher)
    finetune_config = teacher_finetune_config(config)
    teacher_layers = _teacher_layers(teacher)
    distillation = Distillation(
        teacher_dir=teacher,
        kept_layers=evenly_spaced_layers(teacher_layers, config.layers),
        teacher_layers=teacher_layers,
        temperature=config.temperature,
        alpha=config.alpha,
        unlabeled_texts=read_unlabeled(config.unlabeled, config.unlabeled_column) if config.unlabeled else [],
    )
    if search is not None:
        from nlu_deploy.training.search import search as run_search

        return run_search(finetune_config, search, show_progress, distillation=distillation)
    return finetune(finetune_config, show_progress, on_step, distillation=distillation)


def _teacher_layers(teacher: Path) -> int:
    config = artifacts.read_model_config(teacher)
    family = family_of(config)
    if family.layers_fixed:
        raise ModelError(f"{teacher} is a {family.name} model, whose layers cannot be dropped: {family.layers_fixed}.")
    layers = config.get("num_hidden_layers") or config.get("n_layers") or config.get("n_layer")  # GPT-2: n_layer
    if not layers:
        raise ModelError(f"{teacher}/config.json does not say how many layers the teacher has.")
    return int(layers)
