"""Parity: score the PyTorch checkpoint and every ONNX file on the same labelled data, and
gate on how many accuracy points each ONNX variant may lose."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import ValidateConfig
from nlu_deploy.data import check_known_labels, load_labelled_texts
from nlu_deploy.metrics import classification_scores
from nlu_deploy.modeling import load_checkpoint, load_tokenizer
from nlu_deploy.reports import markdown_table, percent, signed_points
from nlu_deploy.runtime import OnnxTextClassifier, TorchTextClassifier


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


@dataclass
class ValidationReport:
    data: str
    examples: int
    truncated: int
    max_score_drop: float
    pytorch_accuracy: float
    pytorch_macro_f1: float
    variants: list[VariantScore]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.variants)

    @property
    def failures(self) -> list[VariantScore]:
        return [v for v in self.variants if not v.passed]

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

    def write_json(self, path: Path) -> None:
        artifacts.write_json(Path(path), self.to_json())


def default_columns(model_dir: Path) -> tuple[str, str]:
    """The text and label columns the checkpoint was trained with, else text / label."""
    options = artifacts.read_manifest(model_dir).get("options", {})
    return options.get("text_column", "text"), options.get("label_column", "label")


def validate(config: ValidateConfig) -> ValidationReport:
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
