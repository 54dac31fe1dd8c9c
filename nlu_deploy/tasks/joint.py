"""Intent and slots from one model in one forward pass (`--task joint`).

Data: rows with a word list, a BIO tag list and an intent (`tokens` / `tags` / `intent` by
default, as in SNIPS), with the tagger's tag policy and messages. Model: joint_model.py. Loss:
intent cross-entropy + slot_loss_weight * slot cross-entropy. Scores: intent accuracy, entity F1
(overall and per type) and sentence exact match (intent and every tag right); the best epoch is
the one with the highest mean of intent accuracy and entity F1 (`joint_score`), and `validate`
and the quantization search gate on intent accuracy, entity F1 and exact match, each.
ONNX: one graph with two outputs, `intent_logits` [batch, intents] and `slot_logits`
[batch, sequence, tags].
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from nlu_deploy.data.demo import demo_tagged_sentences
from nlu_deploy.data.tagged import TaggedSentences, load_tagged_sentences, random_holdout, tag_list
from nlu_deploy.errors import DataError
from nlu_deploy.metrics import classification_scores, entity_scores
from nlu_deploy.portable.rejection import RejectionRule, rejection_scores
from nlu_deploy.runtime.sessions import softmax
from nlu_deploy.runtime.word_tagger import IGNORED, WordTagger
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
from nlu_deploy.tasks.tagging import (
    TAGS,
    WORD_KEYS,
    entities_text,
    flat_word_logits,
    sentences_from_words,
    split_by_sentence,
    tags_of,
    word_predictions,
    word_rows,
)
from nlu_deploy.tasks.tagging import TASK as TAGGING

INTENTS = "intents"
OUTPUTS = ("intent_logits", "slot_logits")


def intent_maps(model_config) -> tuple[dict[str, int], dict[int, str]]:
    id2label = {int(k): v for k, v in model_config.intent_id2label.items()}
    return {v: k for k, v in id2label.items()}, id2label


def joint_scores(
    intent_gold: np.ndarray, intent_predicted: np.ndarray, gold_tags: list[list[str]], predicted_tags: list[list[str]]
) -> dict:
    intents = classification_scores(intent_gold, intent_predicted)
    slots = entity_scores(gold_tags, predicted_tags)
    exact = [g == p and gt == pt for g, p, gt, pt in zip(intent_gold, intent_predicted, gold_tags, predicted_tags)]
    return {
        "joint_score": (intents["accuracy"] + slots["entity_f1"]) / 2,
        "intent_accuracy": intents["accuracy"],
        "intent_macro_f1": intents["macro_f1"],
        **slots,
        "exact_match": float(np.mean(exact)) if exact else 0.0,
    }


class JointPredictor(WordTagger):
    """predict(texts) -> (intent, score, entities) per text, from one forward pass."""

    def __init__(self, backend, rejection: RejectionRule | None = None):
        super().__init__(backend, token_output="slot_logits", sentence_output="intent_logits")
        self.intent_id2label = backend.intent_id2label
        self.rejection = rejection  # the out-of-scope rule, if the model was calibrated with one

    def predict(self, texts: list[str], batch_size: int = 64):
        entities = self.predict_entities(texts, batch_size)
        if self.rejection is not None:
            intents = self.rejection.answers(self.last_sentence_logits, self.intent_id2label)
        else:
            probabilities = softmax(self.last_sentence_logits)
            intents = [(self.intent_id2label[int(p.argmax())], float(p.max())) for p in probabilities]
        return [(label, score, found) for (label, score), found in zip(intents, entities)]


class JointTask(Task):
    name = "joint"
    columns = SPECS["joint"].columns
    primary_metric = "joint_score"
    gated_metrics = ("intent_accuracy", "entity_f1", "exact_match")
    prediction_keys = (*WORD_KEYS, "sentence_ids", "gold_intents", "predicted_intents")
    report_metrics = (
        "intent_accuracy",
        "entity_f1",
        "exact_match",
        "entity_precision",
        "entity_recall",
    )  # columns of the validation table
    triton_words = True  # the Triton tokenizer splits words and reports each token's word
    triton_postprocess = "word_postprocess_model.py"
    triton_results = [("LABEL", "TYPE_STRING"), ("SCORE", "TYPE_FP32"), ("ENTITIES", "TYPE_STRING")]

    answer_fields = ("text", "label", "score", "entities")
    intent_head = INTENTS
    intent_output = "intent_logits"
    searched_options = ("slot_loss_weight",)
    word_outputs = ("slot_logits",)
    gated_besides_intent = reported_besides_intent = ("entity_f1", "exact_match")

    def intents_of(self, data: TaggedSentences) -> list[str]:
        return data.intents

    def read(self, path: Path, columns: tuple[str, ...]) -> TaggedSentences:
        return load_tagged_sentences(path, columns[0], columns[1], columns[2])

    def demo(self) -> TaggedSentences:
        return demo_tagged_sentences(with_intents=True)

    def holdout(self, data: TaggedSentences, fraction: float, seed: int):
        return random_holdout(data, fraction, seed)

    def label_sets(self, data: TaggedSentences) -> dict[str, list[str]]:
        intents = sorted(set(data.intents))
        if len(intents) < 2:
            raise DataError(f"{data.source} has a single intent ({intents[0]!r}); the joint model needs at least two.")
        return {INTENTS: intents, TAGS: tag_list(data)}

    def unseen(self, data: TaggedSentences, label2ids) -> dict[str, Unseen]:
        expected = {self.rejection.label} if self.rejection else set()  # answered by the rule, not a class
        return {
            INTENTS: count_unseen([[i] for i in data.intents], {*label2ids[INTENTS], *expected}),
            TAGS: count_unseen(data.tags, label2ids[TAGS]),
        }

    def examples(self, data: TaggedSentences) -> list[list[str]]:
        return data.words

    def examples_from_texts(self, texts: list[str]) -> list[list[str]]:
        return [text.split() for text in texts]

    def to_records(self, data: TaggedSentences, columns: tuple[str, ...]) -> list[dict]:
        return data.to_records(*columns)

    def unlabeled(self, texts: list[str]) -> TaggedSentences:
        sentences = TAGGING.unlabeled(texts)
        return replace(sentences, intents=[UNLABELED] * len(sentences))

    def concatenated(self, first: TaggedSentences, second: TaggedSentences) -> TaggedSentences:
        return TaggedSentences(
            first.words + second.words,
            first.tags + second.tags,
            f"{first.source} + {second.source}",
            intents=first.intents + second.intents,
        )

    def data_facts(self, train, validation, truncated_train, truncated_validation) -> dict:
        return TAGGING.data_facts(train, validation, truncated_train, truncated_validation)

    def new_model(self, source, label_sets, allow_pickle, trust_remote_code, options):
        from nlu_deploy.tasks.joint_model import JointIntentSlotModel
        from nlu_deploy.tasks.own_model import new_own_model

        return new_own_model(
            lambda: JointIntentSlotModel.for_training(
                source, label_sets[INTENTS], label_sets[TAGS], options.get("slot_loss_weight", 1.0), trust_remote_code
            ),
            source,
            allow_pickle,
        )

    def load_model(self, directory: Path):
        from nlu_deploy.tasks.joint_model import JointIntentSlotModel
        from nlu_deploy.tasks.own_model import load_own_model

        return load_own_model(JointIntentSlotModel, directory)

    def label2ids(self, model_config) -> dict[str, dict[str, int]]:
        return {
            INTENTS: intent_maps(model_config)[0],
            TAGS: {label: int(i) for label, i in model_config.label2id.items()},
        }

    def label_ids_for(self, data: TaggedSentences, label2ids):
        return {
            INTENTS: extended_label2id(label2ids[INTENTS], data.intents),
            TAGS: extended_label2id(label2ids[TAGS], {t for tags in data.tags for t in tags}),
        }

    def rows(self, tokenizer, data: TaggedSentences, label_ids, max_length: int):
        rows, truncation = word_rows(tokenizer, data, label_ids[TAGS], max_length)
        for row, intent in zip(rows, data.intents):
            row["intent_labels"] = label_ids[INTENTS][intent]
        return rows, truncation

    def collator(self, tokenizer, pad_multiple):
        from transformers import DataCollatorForTokenClassification

        pad_words = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_multiple, return_tensors="pt")

        def collate(rows: list[dict]) -> dict:
            import torch

            batch = pad_words([{k: v for k, v in row.items() if k != "intent_labels"} for row in rows])
            batch["intent_labels"] = torch.tensor([row["intent_labels"] for row in rows], dtype=torch.long)
            return batch

        return collate

    def loss(self, model, batch: dict):
        outputs = model(**{k: v for k, v in batch.items() if k not in ("labels", "intent_labels")})
        slots = outputs.slot_logits
        intent_loss = masked_cross_entropy(outputs.intent_logits, batch["intent_labels"], self.label_smoothing)
        slot_loss = masked_cross_entropy(
            slots.reshape(-1, slots.shape[-1]), batch["labels"].reshape(-1), self.label_smoothing
        )
        weight = getattr(model, "module", model).config.slot_loss_weight  # `module`: the model inside DDP
        return intent_loss + weight * slot_loss, outputs

    def distillation_logits(self, outputs, batch: dict) -> list:
        return [outputs.intent_logits, outputs.slot_logits[batch["labels"] != IGNORED]]

    def batch_predictions(self, outputs, batch, first_row):
        rows = len(batch["intent_labels"])
        return {
            **word_predictions(outputs.slot_logits, batch["labels"], first_row),
            "sentence_ids": np.arange(rows) + first_row,
            "gold_intents": batch["intent_labels"].cpu().numpy(),
            "predicted_intents": outputs.intent_logits.argmax(-1).cpu().numpy(),
        }

    def score_predictions(self, gathered, id2labels) -> dict:
        gold_tags, predicted_tags = sentences_from_words(gathered, id2labels[TAGS])
        # Both arrive in sentence order, but a sentence whose words all lost their sub-words has
        # no word rows: exact match and slots are scored on the sentences with words, intents on all.
        with_words = np.isin(gathered["sentence_ids"], gathered["owners"])
        gold_i, predicted_i = gathered["gold_intents"], gathered["predicted_intents"]
        scores = joint_scores(gold_i[with_words], predicted_i[with_words], gold_tags, predicted_tags)
        intents = classification_scores(gold_i, predicted_i)
        scores.update(
            intent_accuracy=intents["accuracy"],
            intent_macro_f1=intents["macro_f1"],
            joint_score=(intents["accuracy"] + scores["entity_f1"]) / 2,
        )
        return scores

    def infer(self, backend, examples: list[list[str]], batch_size: int = 64) -> Inference:
        tagger = JointPredictor(backend)
        slots = flat_word_logits(tagger, examples, batch_size, len(backend.id2label))
        intents = tagger.last_sentence_logits
        if not len(examples):
            intents = np.zeros((0, len(backend.intent_id2label)), dtype=np.float32)
        return Inference({"intent_logits": intents, "slot_logits": slots}, windowed=tagger.last_windowed)

    def score(self, data: TaggedSentences, outputs, model_config) -> dict:
        label2id, _ = intent_maps(model_config)
        ids = extended_label2id(label2id, data.intents)
        id2tag = {int(k): v for k, v in model_config.id2label.items()}
        predicted_tags = [tags_of(x, id2tag) for x in split_by_sentence(outputs["slot_logits"], data)]
        gold = np.array([ids[i] for i in data.intents])
        scores = joint_scores(gold, outputs["intent_logits"].argmax(-1), data.tags, predicted_tags)
        if self.rejection is not None:
            is_oos = np.array([intent == self.rejection.label for intent in data.intents], dtype=bool)
            scores.update(rejection_scores(outputs["intent_logits"], gold, is_oos, self.rejection))
        return scores

    def predictor(self, backend) -> JointPredictor:
        return JointPredictor(backend, self.rejection)

    def prediction_json(self, text: str, prediction) -> dict:
        label, score, entities = prediction
        return {"text": text, "label": label, "score": round(score, 6), "entities": [e.to_json() for e in entities]}

    def prediction_line(self, text: str, prediction) -> str:
        label, score, entities = prediction
        return f"{label}\t{score:.4f}\t{text}\t{entities_text(entities) or '(no entities)'}"

    def export_onnx(self, model_dir: Path, model, tokenizer, out: Path, opset: int | None) -> None:
        from nlu_deploy.tasks.own_model import export_own_model

        export_own_model(
            model,
            tokenizer,
            out,
            opset,
            {"intent_logits": {0: "batch_size"}, "slot_logits": {0: "batch_size", 1: "sequence_length"}},
        )

    def training_summary(self, scores: dict) -> str:
        return (
            f"intent accuracy {100 * scores['intent_accuracy']:.2f}%, entity F1 {100 * scores['entity_f1']:.2f}%, "
            f"exact match {100 * scores['exact_match']:.2f}%"
        )


TASK = JointTask()
