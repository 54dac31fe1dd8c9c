"""Slot filling / NER: one BIO tag per word, on the word's first sub-word, by a Hugging Face
token-classification head. Scored on exact-span entity F1 (conlleval rules), which picks the
best epoch and gates `validate`; the word-level machinery lives in nlu_deploy.tagging."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlu_deploy.data.demo import demo_tagged_sentences
from nlu_deploy.data.tagged import TaggedSentences, load_tagged_sentences, random_holdout, tag_list
from nlu_deploy.metrics import entity_scores
from nlu_deploy.runtime.modeling import load_for_training, load_hf_checkpoint
from nlu_deploy.runtime.word_tagger import IGNORED, WordTagger, aligned_labels, cut_entities, decoder_for, encode_words
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

TAGS = "tags"
WORD_KEYS = ("owners", "gold_tags", "word_logits")  # what batch_predictions gathers


def word_rows(tokenizer, data: TaggedSentences, tag_ids: dict[str, int], max_length: int):
    """Token ids with one tag id per word on its first sub-word; what truncation cut."""
    words = encode_words(tokenizer, data.words, max_length)
    rows = [
        dict(features, labels=aligned_labels(first, [tag_ids[t] for t in tags], len(features["input_ids"])))
        for features, first, tags in zip(words.features, words.first_subword, data.tags)
    ]
    cut = sum(cut_entities(first, tags) for first, tags in zip(words.first_subword, data.tags))
    return rows, {"sentences": words.truncated, "entities": cut}


def word_predictions(slot_logits, labels, first_row: int) -> dict[str, np.ndarray]:
    """Gold tag ids and logits of the labelled (first sub-word) positions, with the row each
    belongs to, so that gathered words can be put back into sentences and decoded whole."""
    labels, logits = labels.cpu().numpy(), slot_logits.detach().float().cpu().numpy()
    mask = labels != IGNORED
    rows, _ = np.nonzero(mask)
    return {"owners": rows + first_row, "gold_tags": labels[mask], "word_logits": logits[mask]}


def sentences_from_words(gathered: dict[str, np.ndarray], id2tag: dict[int, str]):
    if not len(gathered["owners"]):
        return [], []
    boundaries = np.flatnonzero(np.diff(gathered["owners"])) + 1
    gold = [[id2tag[int(i)] for i in part] for part in np.split(gathered["gold_tags"], boundaries)]
    predicted = [tags_of(part, id2tag) for part in np.split(gathered["word_logits"], boundaries)]
    return gold, predicted


def split_by_sentence(flat: np.ndarray, data: TaggedSentences) -> list[np.ndarray]:
    return np.split(flat, np.cumsum([len(w) for w in data.words])[:-1]) if len(data) else []


def tags_of(logits: np.ndarray, id2label: dict[int, str]) -> list[str]:
    """One sentence's tags from its [words, tags] logits: the best valid BIO sequence."""
    return decoder_for(id2label, logits.shape[-1]).decode(logits)[0] if len(logits) else []


def flat_word_logits(tagger: WordTagger, sentences: list[list[str]], batch_size: int, width: int) -> np.ndarray:
    per_sentence = tagger.word_logits(sentences, batch_size)
    return np.concatenate(per_sentence) if per_sentence else np.zeros((0, width), dtype=np.float32)


class TaggingTask(Task):
    name = "token-classification"
    columns = SPECS["token-classification"].columns
    primary_metric = "entity_f1"
    gated_metrics = ("entity_f1",)
    prediction_keys = WORD_KEYS
    report_metrics = (
        "entity_f1",
        "entity_precision",
        "entity_recall",
        "tag_accuracy",
    )  # columns of the validation table
    triton_words = True  # the Triton tokenizer splits words and reports each token's word
    triton_postprocess = "word_postprocess_model.py"
    triton_results = [("ENTITIES", "TYPE_STRING")]
    answer_fields = ("text", "entities")
    optimum_task = "token-classification"
    word_outputs = ("logits",)

    def read(self, path: Path, columns: tuple[str, ...]) -> TaggedSentences:
        return load_tagged_sentences(path, columns[0], columns[1])

    def demo(self) -> TaggedSentences:
        return demo_tagged_sentences()

    def holdout(self, data: TaggedSentences, fraction: float, seed: int):
        return random_holdout(data, fraction, seed)

    def label_sets(self, data: TaggedSentences) -> dict[str, list[str]]:
        return {TAGS: tag_list(data)}

    def unseen(self, data: TaggedSentences, label2ids) -> dict[str, Unseen]:
        return {TAGS: count_unseen(data.tags, label2ids[TAGS])}

    def examples(self, data: TaggedSentences) -> list[list[str]]:
        return data.words

    def examples_from_texts(self, texts: list[str]) -> list[list[str]]:
        return [text.split() for text in texts]

    def to_records(self, data: TaggedSentences, columns: tuple[str, ...]) -> list[dict]:
        return data.to_records(columns[0], columns[1])

    def unlabeled(self, texts: list[str]) -> TaggedSentences:
        words = [text.split() for text in texts if text.split()]
        return TaggedSentences(words, [[UNLABELED] * len(w) for w in words], "unlabeled texts")

    def concatenated(self, first: TaggedSentences, second: TaggedSentences) -> TaggedSentences:
        return TaggedSentences(
            first.words + second.words, first.tags + second.tags, f"{first.source} + {second.source}"
        )

    def data_facts(self, train, validation, truncated_train, truncated_validation) -> dict:
        return {
            **super().data_facts(train, validation, truncated_train, truncated_validation),
            "entities_cut_train": truncated_train["entities"],
            "entities_cut_validation": truncated_validation["entities"],
            "repaired_tags": train.repaired_tags + validation.repaired_tags,
            "empty_sentences_skipped": train.empty_sentences + validation.empty_sentences,
        }

    def new_model(self, source, label_sets, allow_pickle, trust_remote_code, options):
        return load_for_training(
            source, label_sets[TAGS], allow_pickle, trust_remote_code, self.name, options.get("pad_token_id")
        )

    def load_model(self, directory: Path):
        return load_hf_checkpoint(directory, self.name)

    def label2ids(self, model_config) -> dict[str, dict[str, int]]:
        return {TAGS: {label: int(i) for label, i in model_config.label2id.items()}}

    def label_ids_for(self, data: TaggedSentences, label2ids):
        return {TAGS: extended_label2id(label2ids[TAGS], {t for tags in data.tags for t in tags})}

    def rows(self, tokenizer, data: TaggedSentences, label_ids, max_length: int):
        return word_rows(tokenizer, data, label_ids[TAGS], max_length)

    def collator(self, tokenizer, pad_multiple):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_multiple, return_tensors="pt")

    def loss(self, model, batch: dict):
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
        logits = outputs.logits
        return masked_cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), self.label_smoothing
        ), outputs

    def distillation_logits(self, outputs, batch: dict) -> list:
        return [outputs.logits[batch["labels"] != IGNORED]]

    def batch_predictions(self, outputs, batch, first_row):
        return word_predictions(outputs.logits, batch["labels"], first_row)

    def score_predictions(self, gathered, id2labels) -> dict:
        return entity_scores(*sentences_from_words(gathered, id2labels[TAGS]))

    def infer(self, backend, examples: list[list[str]], batch_size: int = 64) -> Inference:
        tagger = WordTagger(backend)
        logits = flat_word_logits(tagger, examples, batch_size, len(backend.id2label))
        return Inference({"logits": logits}, windowed=tagger.last_windowed)

    def score(self, data: TaggedSentences, outputs, model_config) -> dict:
        id2label = {int(k): v for k, v in model_config.id2label.items()}
        predicted = [tags_of(x, id2label) for x in split_by_sentence(outputs["logits"], data)]
        return entity_scores(data.tags, predicted)

    def predictor(self, backend) -> WordTagger:
        return WordTagger(backend)  # predict(texts) -> a list of entities per text

    def prediction_json(self, text: str, prediction) -> dict:
        return {"text": text, "entities": [e.to_json() for e in prediction]}

    def prediction_line(self, text: str, prediction) -> str:
        return f"{text}\t{entities_text(prediction) or '(no entities)'}"

    def training_summary(self, scores: dict) -> str:
        return (
            f"entity F1 {100 * scores['entity_f1']:.2f}% (precision {100 * scores['entity_precision']:.2f}%, "
            f"recall {100 * scores['entity_recall']:.2f}%)"
        )


def entities_text(entities) -> str:
    return "  ".join(f"{e.type}={e.text!r}[{e.start}:{e.end}]@{e.score:.3f}" for e in entities)


TASK = TaggingTask()
