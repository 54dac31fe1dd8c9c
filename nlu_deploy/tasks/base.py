"""What every task gives the stages. A stage (train, export, validate, the quantization search,
bench, predict, run) holds a `Task` and calls it; it never asks which task it runs.

A task owns: reading and checking its data, its label sets, turning data into training rows
and batches, its model and loss, its metrics (which one picks the best epoch, which ones gate
`validate`), its ONNX export and outputs, turning outputs into predictions and reports.

Labels a model never had. Training data is checked strictly (it defines the label sets), but
real evaluation sets hold a few labels or tags the training data never had. Those rows are
kept and scored as errors: in training rows they get ids below UNSEEN_BASE (never predicted,
masked out of the loss), and at inference their gold strings simply never match a prediction.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlu_deploy.portable.rejection import METRICS as REJECTION_METRICS
from nlu_deploy.runtime.word_tagger import IGNORED  # cross-entropy's ignore_index: positions that carry no label

UNSEEN_BASE = -1000  # ids -1000, -1001, ...: labels the model never had (scored as errors)


@dataclass
class Unseen:
    """Labels (or tags) in an evaluation set that the model was never trained on."""

    counts: dict[str, int] = field(default_factory=dict)  # label -> occurrences
    rows: int = 0  # examples holding at least one

    def describe(self, noun: str) -> str:
        if not self.rows:
            return ""
        shown = ", ".join(f"{label!r} ({n})" for label, n in sorted(self.counts.items())[:8])
        more = f" and {len(self.counts) - 8} more" if len(self.counts) > 8 else ""
        return f"{self.rows} example(s) hold {noun} the model was never trained on, scored as errors: {shown}{more}."

    def without(self, label: str) -> Unseen:
        """Less one label that is expected (out-of-scope rows); for one label per row."""
        counts = dict(self.counts)
        return Unseen(counts, self.rows - counts.pop(label, 0))


def count_unseen(label_rows: list[list[str]], known) -> Unseen:
    known = set(known)
    counts: Counter = Counter()
    rows = 0
    for labels in label_rows:
        missing = [label for label in labels if label not in known]
        counts.update(missing)
        rows += bool(missing)
    return Unseen(dict(counts), rows)


def extended_label2id(known: dict[str, int], seen) -> dict[str, int]:
    """`known` plus an id below UNSEEN_BASE for every label seen only in evaluation data."""
    ids = {label: int(i) for label, i in known.items()}
    for k, label in enumerate(sorted(set(seen) - set(ids))):
        ids[label] = UNSEEN_BASE - k
    return ids


def label_maps(label_sets: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Per head, label -> id in the label set's (sorted) order: the ids a new model gets."""
    return {head: {label: i for i, label in enumerate(labels)} for head, labels in label_sets.items()}


def trainable(labels):
    """Label ids for the loss: unseen labels (negative ids) are masked out."""
    return labels.masked_fill(labels < 0, IGNORED)


def masked_cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean cross-entropy over the rows with a trainable label, 0 when none has one (a batch of
    unlabeled texts in distillation, or of labels the model never had); cross_entropy's own mean
    would be 0/0 there and turn every gradient into NaN. `label_smoothing` moves that share of
    each target onto all labels evenly (finetune --label-smoothing)."""
    import torch.nn.functional as F

    labels = trainable(labels)
    total = F.cross_entropy(
        logits.float(), labels, ignore_index=IGNORED, reduction="sum", label_smoothing=label_smoothing
    )
    return total / (labels != IGNORED).sum().clamp(min=1)


UNLABELED = "\x00unlabeled"  # the label of texts only a teacher labels (distillation): never trainable


@dataclass
class Inference:
    """What a model gave for a list of examples: per output, the rows that are scored."""

    outputs: dict[str, np.ndarray]
    windowed: int = 0  # long sentences tagged in overlapping windows
    truncated: int = 0  # texts cut at the model's max length


class Task:
    """The interface; classification.py, tagging.py and joint.py implement it."""

    name: str
    columns: tuple[str, ...]  # default data columns, in FinetuneConfig's column order
    primary_metric: str  # picks the best epoch
    gated_metrics: tuple[str, ...]  # validate and the quantization search gate on each
    prediction_keys: tuple[str, ...]  # the arrays batch_predictions returns (gathered under torchrun)
    report_metrics: tuple[str, ...]  # the scores validate's table shows
    triton_words: bool  # Triton: the tokenizer model splits whitespace words and outputs WORD_IDS
    triton_postprocess: str  # Triton: the post-processor's code, in nlu_deploy/triton_models
    triton_results: list[tuple[str, str]]  # Triton: the ensemble's outputs and their types
    optimum_task: str | None = None  # Optimum's task name, for tasks Optimum exports itself
    # Out-of-scope rejection, for tasks with an intent (classification, joint): the head and
    # output that hold the intent, and the RejectionRule (rejection.py) of a model calibrated with one.
    intent_head: str | None = None
    intent_output: str | None = None
    rejection = None
    # finetune --label-smoothing: the share of each training target spread over all labels
    label_smoothing = 0.0
    # FinetuneConfig options that only this task uses and `--search` tunes (search.py)
    searched_options: tuple[str, ...] = ()
    word_outputs: tuple[str, ...] = ()  # outputs with one row per word (the rest: one per example)
    answer_fields: tuple[str, ...]  # the keys of prediction_json's object, in order (bulk Parquet columns)

    # with a rule, the intent is gated on the rejection scores; these other scores stay
    gated_besides_intent: tuple[str, ...] = ()
    reported_besides_intent: tuple[str, ...] = ()

    def with_rejection(self, rule) -> Task:
        """This task for a model that answers rule.label when the rule rejects its intent: scored
        and gated on in-scope accuracy, out-of-scope recall, precision and AUROC."""
        task = copy.copy(self)
        task.rejection = rule
        task.primary_metric = "in_scope_accuracy"
        task.gated_metrics = (*REJECTION_METRICS, *self.gated_besides_intent)
        task.report_metrics = (*REJECTION_METRICS, *self.reported_besides_intent)
        return task

    def with_label_smoothing(self, share: float) -> Task:
        """This task, training on targets with `share` of each spread evenly over all labels."""
        task = copy.copy(self)
        task.label_smoothing = share
        return task

    def intents_of(self, data) -> list[str]:
        raise NotImplementedError

    def examples_per_label(self, data) -> float | None:
        """Training rows per intent label (rows only a teacher labels left out); None for a task
        without an intent. config.default_epochs turns it into the default number of epochs."""
        if self.intent_head is None:
            return None
        intents = [intent for intent in self.intents_of(data) if intent != UNLABELED]
        return len(intents) / max(1, len(set(intents)))

    def without_intent(self, data, label: str):
        """(data less the examples whose intent is `label`, how many there were)."""
        keep = [i for i, intent in enumerate(self.intents_of(data)) if intent != label]
        return data.subset(keep, data.source), len(self.intents_of(data)) - len(keep)

    # -- data -------------------------------------------------------------------------------
    def read(self, path: Path, columns: tuple[str, ...]) -> Any:
        """A data file, with the task's format checks but no label-set checks."""
        raise NotImplementedError

    def demo(self) -> Any:
        raise NotImplementedError

    def holdout(self, data, fraction: float, seed: int):
        raise NotImplementedError

    def label_sets(self, data) -> dict[str, list[str]]:
        """Each head's labels from training data; refuses data a model cannot learn from."""
        raise NotImplementedError

    def unseen(self, data, label2ids: dict[str, dict[str, int]]) -> dict[str, Unseen]:
        """Per head, the labels of `data` the model (label2ids) never had."""
        raise NotImplementedError

    def examples(self, data) -> list:
        """What the model reads: texts, or word lists."""
        raise NotImplementedError

    def examples_from_texts(self, texts: list[str]) -> list:
        raise NotImplementedError

    def to_records(self, data, columns: tuple[str, ...]) -> list[dict]:
        raise NotImplementedError

    def unlabeled(self, texts: list[str]):
        """Texts as this task's data, every label UNLABELED: rows that only a teacher's soft
        targets train (distillation); their hard-label loss is masked out."""
        raise NotImplementedError

    def concatenated(self, first, second):
        """Two data sets of this task as one (training rows; sources joined)."""
        raise NotImplementedError

    def data_facts(self, train, validation, truncated_train: dict, truncated_validation: dict) -> dict:
        """What reading and truncation changed, for metrics.json."""
        return {
            "truncated_train": truncated_train["sentences"],
            "truncated_validation": truncated_validation["sentences"],
        }

    # -- model ------------------------------------------------------------------------------
    def new_model(
        self, source: str, label_sets: dict[str, list[str]], allow_pickle: bool, trust_remote_code: bool, options: dict
    ):
        raise NotImplementedError

    def load_model(self, directory: Path):
        raise NotImplementedError

    def label2ids(self, model_config) -> dict[str, dict[str, int]]:
        """Per head, the model's label -> id map."""
        raise NotImplementedError

    # -- training ---------------------------------------------------------------------------
    def label_ids_for(self, data, label2ids: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """The model's label ids plus ids for the labels of `data` it never had (scored as errors)."""
        raise NotImplementedError

    def rows(self, tokenizer, data, label_ids: dict[str, dict[str, int]], max_length: int):
        """(rows, truncation counts): token ids with their label ids (from label_ids_for)."""
        raise NotImplementedError

    def collator(self, tokenizer, pad_multiple: int | None):
        raise NotImplementedError

    def loss(self, model, batch: dict):
        """Forward and loss; unseen labels masked out. Returns (loss, outputs)."""
        raise NotImplementedError

    def distillation_logits(self, outputs, batch: dict) -> list:
        """Per output, the logits rows a student matches to its teacher's: one per text, or one
        per word (first sub-words, where the labels sit, unlabeled rows included)."""
        raise NotImplementedError

    def batch_predictions(self, outputs, batch: dict, first_row: int) -> dict[str, np.ndarray]:
        """Arrays to gather across processes for scoring (gold and predicted ids)."""
        raise NotImplementedError

    def score_predictions(self, gathered: dict[str, np.ndarray], id2labels: dict[str, dict[int, str]]) -> dict:
        raise NotImplementedError

    # -- inference --------------------------------------------------------------------------
    def infer(self, backend, examples: list, batch_size: int = 64) -> Inference:
        """Per output, the logits rows that are scored (one per text, or per word)."""
        raise NotImplementedError

    def score(self, data, outputs: dict[str, np.ndarray], model_config) -> dict:
        raise NotImplementedError

    def resampled(self, data, outputs: dict[str, np.ndarray], indices: np.ndarray):
        """(data, outputs) of the examples at `indices`, repeats allowed: one paired-bootstrap draw."""
        chosen = data.subset([int(i) for i in indices], data.source)
        result = {}
        for name, rows in outputs.items():
            if name in self.word_outputs:  # one row per word: gather each chosen example's words
                bounds = np.cumsum([0, *(len(words) for words in data.words)])
                result[name] = np.concatenate([rows[:0], *(rows[bounds[i] : bounds[i + 1]] for i in indices)])
            else:
                result[name] = rows[indices]
        return chosen, result

    def agreement(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
        """Per output, the share of rows whose best label equals the reference's."""
        result = {}
        for name, logits in outputs.items():
            best = np.nan_to_num(logits, nan=-np.inf).argmax(-1)
            expected = np.nan_to_num(reference[name], nan=-np.inf).argmax(-1)
            result[name] = float((best == expected).mean()) if len(best) else 1.0
        return result

    def predictor(self, backend):
        """An object whose predict(texts) gives one prediction per text."""
        raise NotImplementedError

    def prediction_json(self, text: str, prediction) -> dict:
        raise NotImplementedError

    def prediction_line(self, text: str, prediction) -> str:
        raise NotImplementedError

    # -- export -----------------------------------------------------------------------------
    def export_onnx(self, model_dir: Path, model, tokenizer, out: Path, opset: int | None) -> None:
        """Write model.onnx, config.json and the tokenizer into `out`."""
        from optimum.exporters.onnx import main_export

        main_export(
            str(model_dir),
            out,
            task=self.optimum_task,
            opset=opset,
            do_validation=False,
            trust_remote_code=False,
            local_files_only=True,
            **dummy_shapes(model.config),
        )

    def training_summary(self, scores: dict) -> str:
        raise NotImplementedError


def dummy_shapes(model_config) -> dict[str, int]:
    """The exporter traces the model on dummy inputs of 16 tokens: a model with fewer positions
    (one made for --max-length 8) needs shorter ones. RoBERTa-like models start counting positions
    after the padding index, hence the margin of 2."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions < 18:
        return {"sequence_length": max(2, positions - 2)}
    return {}


def flat_logits(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Every output's rows side by side, for one error number (sensitivity, parity)."""
    return np.concatenate([np.nan_to_num(v, nan=0.0).reshape(-1) for v in outputs.values()])
