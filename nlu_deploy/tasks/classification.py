"""Intent classification: one label per text, read from the first token (or the pooled output)
by a Hugging Face sequence-classification head. Scored on accuracy (which picks the best epoch
and gates `validate`) and macro-F1.

A model with an out-of-scope rule (rejection.py; in config.json once finetune calibrated it)
is the same task with that rule: its predictions say the out-of-scope label when the rule
rejects, and it is scored and gated on in-scope accuracy, out-of-scope recall and precision
and AUROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlu_deploy.data.demo import demo_labelled_texts
from nlu_deploy.data.tables import LabelledTexts, label_list, load_labelled_texts, stratified_holdout
from nlu_deploy.metrics import classification_scores
from nlu_deploy.portable.rejection import RejectionRule, rejection_scores
from nlu_deploy.runtime.modeling import checkpoint_architectures, load_for_training, load_hf_checkpoint
from nlu_deploy.runtime.sessions import TextClassifier
from nlu_deploy.task_specs import SPECS
from nlu_deploy.tasks.base import (
    UNLABELED,
    Inference,
    Task,
    Unseen,
    count_unseen,
    extended_label2id,
    masked_cross_entropy,
)

LABELS = "labels"  # the one head's name in label maps


class ClassificationTask(Task):
    name = "text-classification"
    columns = SPECS["text-classification"].columns
    primary_metric = "accuracy"
    gated_metrics = ("accuracy",)
    prediction_keys = ("gold", "predicted")
    report_metrics = ("accuracy", "macro_f1")  # columns of the validation table
    triton_words = False  # the Triton tokenizer reads whole texts
    triton_postprocess = "postprocess_model.py"
    triton_results = [("LABEL", "TYPE_STRING"), ("SCORE", "TYPE_FP32")]
    optimum_task = "text-classification"
    intent_head = LABELS
    intent_output = "logits"
    reported_besides_intent = ("macro_f1",)
    answer_fields = ("text", "label", "score")

    def intents_of(self, data: LabelledTexts) -> list[str]:
        return data.labels

    def read(self, path: Path, columns: tuple[str, ...]) -> LabelledTexts:
        return load_labelled_texts(path, columns[0], columns[1])

    def demo(self) -> LabelledTexts:
        return demo_labelled_texts()

    def holdout(self, data: LabelledTexts, fraction: float, seed: int):
        return stratified_holdout(data, fraction, seed)

    def label_sets(self, data: LabelledTexts) -> dict[str, list[str]]:
        return {LABELS: label_list(data)}

    def unseen(self, data: LabelledTexts, label2ids) -> dict[str, Unseen]:
        expected = {self.rejection.label} if self.rejection else set()  # answered by the rule, not a class
        return {LABELS: count_unseen([[label] for label in data.labels], {*label2ids[LABELS], *expected})}

    def examples(self, data: LabelledTexts) -> list[str]:
        return data.texts

    def examples_from_texts(self, texts: list[str]) -> list[str]:
        return texts

    def to_records(self, data: LabelledTexts, columns: tuple[str, ...]) -> list[dict]:
        return data.to_records(columns[0], columns[1])

    def unlabeled(self, texts: list[str]) -> LabelledTexts:
        return LabelledTexts(list(texts), [UNLABELED] * len(texts), "unlabeled texts")

    def concatenated(self, first: LabelledTexts, second: LabelledTexts) -> LabelledTexts:
        return LabelledTexts(
            first.texts + second.texts, first.labels + second.labels, f"{first.source} + {second.source}"
        )

    def new_model(self, source, label_sets, allow_pickle, trust_remote_code, options):
        if options.get("pooling", "default") == "default":
            return load_for_training(
                source, label_sets[LABELS], allow_pickle, trust_remote_code, self.name, options.get("pad_token_id")
            )
        from nlu_deploy.tasks.own_model import new_own_model
        from nlu_deploy.tasks.pooled_model import MeanPoolingClassifier

        return new_own_model(
            lambda: MeanPoolingClassifier.for_training(source, label_sets[LABELS], trust_remote_code),
            source,
            allow_pickle,
        )

    def load_model(self, directory: Path):
        from nlu_deploy.tasks.own_model import load_own_model
        from nlu_deploy.tasks.pooled_model import ARCHITECTURE, MeanPoolingClassifier

        if ARCHITECTURE not in checkpoint_architectures(directory):
            return load_hf_checkpoint(directory, self.name)
        return load_own_model(MeanPoolingClassifier, directory)

    def export_onnx(self, model_dir: Path, model, tokenizer, out: Path, opset: int | None) -> None:
        from nlu_deploy.tasks.pooled_model import MeanPoolingClassifier

        if not isinstance(model, MeanPoolingClassifier):  # Hugging Face's own heads: Optimum knows them
            return super().export_onnx(model_dir, model, tokenizer, out, opset)
        from nlu_deploy.tasks.own_model import export_own_model

        export_own_model(model, tokenizer, out, opset, {"logits": {0: "batch_size"}})

    def label2ids(self, model_config) -> dict[str, dict[str, int]]:
        return {LABELS: {label: int(i) for label, i in model_config.label2id.items()}}

    def label_ids_for(self, data: LabelledTexts, label2ids):
        return {LABELS: extended_label2id(label2ids[LABELS], data.labels)}

    def rows(self, tokenizer, data: LabelledTexts, label_ids, max_length: int):
        from nlu_deploy.runtime.sessions import encode

        ids = label_ids[LABELS]
        encoded = encode(tokenizer, data.texts, max_length)
        rows = [dict(features, labels=ids[label]) for features, label in zip(encoded.features, data.labels)]
        return rows, {"sentences": encoded.truncated}

    def collator(self, tokenizer, pad_multiple):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple, return_tensors="pt")

    def loss(self, model, batch: dict):
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
        return masked_cross_entropy(outputs.logits, batch["labels"], self.label_smoothing), outputs

    def distillation_logits(self, outputs, batch: dict) -> list:
        return [outputs.logits]

    def batch_predictions(self, outputs, batch, first_row):
        return {"gold": batch["labels"].cpu().numpy(), "predicted": outputs.logits.argmax(-1).cpu().numpy()}

    def score_predictions(self, gathered, id2labels) -> dict:
        return classification_scores(gathered["gold"], gathered["predicted"])

    def infer(self, backend: TextClassifier, examples: list[str], batch_size: int = 64) -> Inference:
        logits = backend.logits(examples, batch_size)
        return Inference({"logits": logits}, truncated=backend.last_truncated)

    def score(self, data: LabelledTexts, outputs, model_config) -> dict:
        ids = extended_label2id(self.label2ids(model_config)[LABELS], data.labels)
        gold = np.array([ids[label] for label in data.labels])
        scores = classification_scores(gold, outputs["logits"].argmax(-1))
        if self.rejection is not None:
            is_oos = np.array([label == self.rejection.label for label in data.labels], dtype=bool)
            scores.update(rejection_scores(outputs["logits"], gold, is_oos, self.rejection))
        return scores

    def predictor(self, backend: TextClassifier):
        """predict(texts) -> (label, score) per text."""
        return RejectingClassifier(backend, self.rejection) if self.rejection else backend

    def prediction_json(self, text: str, prediction) -> dict:
        label, score = prediction
        return {"text": text, "label": label, "score": round(score, 6)}

    def prediction_line(self, text: str, prediction) -> str:
        label, score = prediction
        return f"{label}\t{score:.4f}\t{text}"

    def training_summary(self, scores: dict) -> str:
        return f"accuracy {100 * scores['accuracy']:.2f}%, macro-F1 {100 * scores['macro_f1']:.2f}%"


class RejectingClassifier:
    """A classifier that answers the rule's out-of-scope label when the rule rejects a text,
    with 1 - the best in-scope probability as its score."""

    def __init__(self, backend: TextClassifier, rule: RejectionRule):
        self.backend, self.rule = backend, rule

    def __getattr__(self, name):  # max_length, last_truncated, tokenizer...: the backend's
        return getattr(self.backend, name)

    def predict(self, texts: list[str], batch_size: int = 64) -> list[tuple[str, float]]:
        return self.rule.answers(self.backend.logits(texts, batch_size), self.backend.id2label)


TASK = ClassificationTask()
