"""Task metrics, in plain Python/numpy so every stage scores the same way: accuracy and
macro-F1 for intents; entity-level precision, recall and F1 for BIO-tagged slots."""

from __future__ import annotations

import numpy as np

from nlu_deploy.portable.spans import entity_spans  # noqa: F401  (re-exported: the scores' span rules)

# How reports name the score keys ("entity_f1" in metrics.json reads "entity F1").
DISPLAY_NAMES = {
    "finite_outputs": "finite outputs",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "entity_f1": "entity F1",
    "entity_precision": "precision",
    "entity_recall": "recall",
    "tag_accuracy": "tag accuracy",
    "intent_accuracy": "intent accuracy",
    "intent_macro_f1": "intent macro-F1",
    "exact_match": "exact match",
    "joint_score": "mean of intent accuracy and entity F1",
    "in_scope_accuracy": "in-scope accuracy",
    "oos_recall": "out-of-scope recall",
    "oos_precision": "out-of-scope precision",
    "oos_auroc": "out-of-scope AUROC",
}


def accuracy(gold: np.ndarray, predicted: np.ndarray) -> float:
    return float((np.asarray(gold) == np.asarray(predicted)).mean()) if len(gold) else 0.0


def macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    scores = []
    for label in np.union1d(gold, predicted):
        tp = np.sum((predicted == label) & (gold == label))
        fp = np.sum((predicted == label) & (gold != label))
        fn = np.sum((predicted != label) & (gold == label))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def classification_scores(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted)}


def _prf(true_positives: int, predicted: int, gold: int) -> dict[str, float]:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Exact-span entity precision/recall/F1, overall (micro) and per type, plus word-level tag
    accuracy. An entity counts only if its type and both boundaries match."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones.")
    gold_entities, predicted_entities = set(), set()
    words = correct_words = 0
    for sentence, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {sentence}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted.")
        gold_entities.update((sentence, *span) for span in entity_spans(gold_tags))
        predicted_entities.update((sentence, *span) for span in entity_spans(predicted_tags))
        words += len(gold_tags)
        correct_words += sum(g == p for g, p in zip(gold_tags, predicted_tags))
    matched = gold_entities & predicted_entities
    per_type = {}
    for kind in sorted({e[1] for e in gold_entities | predicted_entities}):
        per_type[kind] = _prf(
            sum(e[1] == kind for e in matched),
            sum(e[1] == kind for e in predicted_entities),
            sum(e[1] == kind for e in gold_entities),
        )
    overall = _prf(len(matched), len(predicted_entities), len(gold_entities))
    return {
        "entity_f1": overall["f1"],
        "entity_precision": overall["precision"],
        "entity_recall": overall["recall"],
        "entities": overall["support"],
        "tag_accuracy": correct_words / words if words else 0.0,
        "per_type": per_type,
    }
