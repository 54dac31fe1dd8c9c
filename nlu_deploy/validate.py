"""Parity: score the PyTorch checkpoint and every ONNX file on the same labelled data, and
gate on how many points of the task's score each ONNX variant may lose: accuracy for
intents, entity F1 for slot filling / NER."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import ValidateConfig
from nlu_deploy.data import check_known_labels, load_labelled_texts
from nlu_deploy.metrics import classification_scores, entity_scores
from nlu_deploy.modeling import checkpoint_task, load_checkpoint, load_tokenizer
from nlu_deploy.reports import markdown_table, percent, signed_points
from nlu_deploy.runtime import OnnxTextClassifier, TorchTextClassifier
from nlu_deploy.tagged_data import check_known_tags, load_tagged_sentences
from nlu_deploy.tagging import onnx_tagger, torch_tagger


@dataclass
class VariantScore:
    variant: str
    file: str
    accuracy: float
    macro_f1: float
    delta_points: float  # accuracy minus PyTorch's, in percentage points
    max_abs_logit_diff: float
    agreement: float  # share of examples where the predicted label equals PyTorch's
    passed: bool

    @property
    def score(self) -> float:
        return self.accuracy


class GatedReport:
    """What both reports share: every variant passed the gate or not, and saving as JSON."""

    variants: list

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.variants)

    @property
    def failures(self) -> list:
        return [v for v in self.variants if not v.passed]

    def to_json(self) -> dict:
        raise NotImplementedError

    def write_json(self, path: Path) -> None:
        artifacts.write_json(Path(path), self.to_json())


@dataclass
class ValidationReport(GatedReport):
    data: str
    examples: int
    truncated: int
    max_score_drop: float
    pytorch_accuracy: float
    pytorch_macro_f1: float
    variants: list[VariantScore]
    metric_name = "accuracy"

    @property
    def pytorch_score(self) -> float:
        return self.pytorch_accuracy

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def to_markdown(self) -> str:
        rows = [["pytorch", "(checkpoint)", percent(self.pytorch_accuracy), percent(self.pytorch_macro_f1),
                 "", "", "", ""]]
        rows += [[v.variant, v.file, percent(v.accuracy), percent(v.macro_f1), signed_points(v.delta_points),
                  f"{v.max_abs_logit_diff:.2e}", percent(v.agreement), "pass" if v.passed else "FAIL"]
                 for v in self.variants]
        table = markdown_table(["variant", "file", "accuracy %", "macro-F1 %", "delta (points)",
                                "max abs logit diff", "agreement %", f"gate (max drop {self.max_score_drop})"],
                               rows)
        note = f" ({self.truncated} truncated to the model's max length)" if self.truncated else ""
        return f"Validation on {self.data}: {self.examples} examples{note}.\n\n{table}\n"


def default_columns(model_dir: Path) -> tuple[str, str]:
    """The text and label columns the checkpoint was trained with, else text / label."""
    options = artifacts.read_manifest(model_dir).get("options", {})
    return options.get("text_column", "text"), options.get("label_column", "label")


def validate(config: ValidateConfig) -> ValidationReport | TaggingValidationReport:
    if checkpoint_task(Path(config.model_dir)) == "token-classification":
        return validate_tagging(config)
    model_dir, onnx_dir = Path(config.model_dir), Path(config.onnx_dir)
    onnx_files = artifacts.onnx_files(onnx_dir)
    model = load_checkpoint(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    trained_text, trained_label = default_columns(model_dir)
    data = load_labelled_texts(config.data, config.text_column or trained_text,
                               config.label_column or trained_label)
    label2id = {label: int(i) for label, i in model.config.label2id.items()}
    check_known_labels(data, label2id)
    gold = np.array([label2id[label] for label in data.labels])
    max_length = config.max_length or tokenizer.model_max_length

    torch_model = TorchTextClassifier(model, tokenizer, max_length)
    reference = torch_model.logits(data.texts, config.batch_size)
    reference_pred = reference.argmax(-1)
    reference_scores = classification_scores(gold, reference_pred)

    variants = []
    for path in onnx_files:
        onnx_model = OnnxTextClassifier(path, tokenizer, model.config.id2label, max_length)
        logits = onnx_model.logits(data.texts, config.batch_size)
        predicted = logits.argmax(-1)
        scores = classification_scores(gold, predicted)
        delta = 100 * (scores["accuracy"] - reference_scores["accuracy"])
        variants.append(VariantScore(
            variant=artifacts.variant_name(path), file=path.name, accuracy=scores["accuracy"],
            macro_f1=scores["macro_f1"], delta_points=delta,
            max_abs_logit_diff=float(np.abs(logits - reference).max()),
            agreement=float((predicted == reference_pred).mean()),
            passed=-delta <= config.max_score_drop + 1e-9,
        ))
    return ValidationReport(str(config.data), len(data), torch_model.last_truncated, config.max_score_drop,
                            reference_scores["accuracy"], reference_scores["macro_f1"], variants)


@dataclass
class TagVariantScore:
    variant: str
    file: str
    entity_f1: float
    entity_precision: float
    entity_recall: float
    tag_accuracy: float
    delta_points: float  # entity F1 minus PyTorch's, in points
    max_abs_logit_diff: float  # over the words' first sub-words
    tag_agreement: float  # share of words tagged as PyTorch tags them
    per_type_f1: dict[str, float]
    passed: bool

    @property
    def score(self) -> float:
        return self.entity_f1


@dataclass
class TaggingValidationReport(GatedReport):
    data: str
    examples: int
    windowed: int  # sentences longer than the model's max length, tagged in overlapping windows
    max_score_drop: float
    pytorch: dict  # entity_f1, entity_precision, entity_recall, tag_accuracy, entities, per_type
    variants: list[TagVariantScore]
    metric_name = "entity F1"

    @property
    def pytorch_score(self) -> float:
        return self.pytorch["entity_f1"]

    def to_json(self) -> dict:
        return {**asdict(self), "task": "token-classification", "passed": self.passed}

    def to_markdown(self) -> str:
        p = self.pytorch
        rows = [["pytorch", "(checkpoint)", percent(p["entity_f1"]), percent(p["entity_precision"]),
                 percent(p["entity_recall"]), percent(p["tag_accuracy"]), "", "", "", ""]]
        rows += [[v.variant, v.file, percent(v.entity_f1), percent(v.entity_precision), percent(v.entity_recall),
                  percent(v.tag_accuracy), signed_points(v.delta_points), f"{v.max_abs_logit_diff:.2e}",
                  percent(v.tag_agreement), "pass" if v.passed else "FAIL"] for v in self.variants]
        table = markdown_table(["variant", "file", "entity F1 %", "precision %", "recall %", "tag accuracy %",
                                "delta F1 (points)", "max abs logit diff", "tag agreement %",
                                f"gate (max drop {self.max_score_drop})"], rows)
        types = sorted(p["per_type"])
        per_type = markdown_table(
            ["entity type", "gold", "pytorch F1 %", *[f"{v.variant} F1 %" for v in self.variants]],
            [[kind, p["per_type"][kind]["support"], percent(p["per_type"][kind]["f1"]),
              *[percent(v.per_type_f1.get(kind, 0.0)) for v in self.variants]] for kind in types])
        note = ""
        if self.windowed:
            note = (f" {self.windowed} sentences were longer than the model's max length and were tagged "
                    "whole, in overlapping windows.")
        return (f"Validation on {self.data}: {self.examples} sentences, {p['entities']} gold entities "
                f"(exact-span matching, conlleval rules).{note}\n\n{table}\n\nPer entity type:\n\n{per_type}\n")


def validate_tagging(config: ValidateConfig) -> TaggingValidationReport:
    model_dir, onnx_dir = Path(config.model_dir), Path(config.onnx_dir)
    onnx_files = artifacts.onnx_files(onnx_dir)
    model = load_checkpoint(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    trained_words, trained_tags = default_columns(model_dir)
    data = load_tagged_sentences(config.data, config.text_column or trained_words, config.label_column or trained_tags)
    check_known_tags(data, model.config.label2id)
    max_length = config.max_length or tokenizer.model_max_length

    reference_tagger = torch_tagger(model, tokenizer, max_length)
    reference = reference_tagger.word_logits(data.words, config.batch_size)
    reference_tags = [reference_tagger.tags_from_logits(x) for x in reference]
    reference_scores = entity_scores(data.tags, reference_tags)
    windowed = reference_tagger.last_windowed
    reference_flat = np.concatenate(reference)
    words = len(reference_flat)

    variants = []
    for path in onnx_files:
        tagger = onnx_tagger(path, tokenizer, model.config.id2label, max_length)
        logits = tagger.word_logits(data.words, config.batch_size)
        tags = [tagger.tags_from_logits(x) for x in logits]
        scores = entity_scores(data.tags, tags)
        delta = 100 * (scores["entity_f1"] - reference_scores["entity_f1"])
        agreement = sum(a == b for ours, theirs in zip(tags, reference_tags) for a, b in zip(ours, theirs))
        variants.append(TagVariantScore(
            variant=artifacts.variant_name(path), file=path.name, entity_f1=scores["entity_f1"],
            entity_precision=scores["entity_precision"], entity_recall=scores["entity_recall"],
            tag_accuracy=scores["tag_accuracy"], delta_points=delta,
            max_abs_logit_diff=float(np.nanmax(np.abs(np.concatenate(logits) - reference_flat))),
            tag_agreement=agreement / words if words else 1.0,
            per_type_f1={kind: s["f1"] for kind, s in scores["per_type"].items()},
            passed=-delta <= config.max_score_drop + 1e-9,
        ))
    return TaggingValidationReport(str(config.data), len(data), windowed, config.max_score_drop,
                                   reference_scores, variants)
