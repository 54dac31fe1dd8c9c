"""Out-of-scope rejection: when an intent model should answer "none of these".

A classifier forces every text onto one of its labels. The rule here rejects a text when the
model's confidence that it is in scope falls below a threshold, and answers the out-of-scope
label instead. The confidence is computed from the logits alone, so PyTorch, every ONNX file
and the Triton post-processor apply the very same rule (this file is copied into Triton
repositories; it needs only numpy):
- `msp`: the highest softmax probability of an in-scope label (Hendrycks & Gimpel, 2017);
- `energy`: log-sum-exp of the in-scope logits (Liu et al., 2020), which keeps the scale that
  softmax normalises away.
A model trained with the out-of-scope examples as a class of their own also rejects when that
class wins. The threshold is calibrated on held-out data (finetune's validation split), never
on test data, and travels in the model's config.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SCORES = ("msp", "energy")
METRICS = ("in_scope_accuracy", "oos_recall", "oos_precision", "oos_auroc")  # what validate gates on
CONFIG_KEY = "oos_rejection"  # where config.json keeps the rule
# Reject at least 80% of held-out out-of-scope rows: 4 in 5, with a margin over the 75% CLINC150
# bar for the noise of ~100 held-out examples; finetune --oos-recall changes it.
DEFAULT_TARGET_RECALL = 0.8


@dataclass(frozen=True)
class RejectionRule:
    label: str  # what a rejected text is labelled
    score: str  # msp | energy
    threshold: float  # rejected when the in-scope confidence is below this
    oos_class: int | None = None  # the model's own id for `label`, when it was trained as a class

    def confidence(self, logits: np.ndarray) -> np.ndarray:
        """Per row, how sure the model is that the text is in scope (higher: more)."""
        return in_scope_confidence(logits, self.score, self.oos_class)

    def rejected(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float64)
        rejected = self.confidence(logits) < self.threshold
        if self.oos_class is not None:
            rejected |= logits.argmax(-1) == self.oos_class
        return rejected

    def answers(self, logits: np.ndarray, id2label) -> list[tuple[str, float]]:
        """(label, score) per row: the best in-scope label with its probability, or this rule's
        label with 1 - that probability when the rule rejects the row."""
        logits = np.asarray(logits, dtype=np.float64)
        rejected = self.rejected(logits)
        probabilities = _softmax(logits)
        if self.oos_class is not None:
            probabilities[:, self.oos_class] = -1.0  # the best in-scope label
        best = probabilities.argmax(-1)
        top = probabilities[np.arange(len(best)), best]
        return [
            (self.label, float(1 - p)) if out else (id2label[int(b)], float(p))
            for out, b, p in zip(rejected, best, top)
        ]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RejectionRule:
        return cls(
            str(data["label"]),
            str(data["score"]),
            float(data["threshold"]),
            None if data.get("oos_class") is None else int(data["oos_class"]),
        )


def in_scope_confidence(logits: np.ndarray, score: str, oos_class: int | None = None) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    in_scope = np.ones(logits.shape[-1], dtype=bool)
    if oos_class is not None:
        in_scope[oos_class] = False
    if score == "msp":
        return _softmax(logits)[:, in_scope].max(-1)
    if score == "energy":
        kept = logits[:, in_scope]
        top = kept.max(-1, keepdims=True)
        return (top + np.log(np.exp(kept - top).sum(-1, keepdims=True)))[:, 0]
    raise ValueError(f"unknown out-of-scope score {score!r} (known: {', '.join(SCORES)})")


def _softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(-1, keepdims=True))
    return exponentials / exponentials.sum(-1, keepdims=True)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for telling positives from the rest: the chance that
    a random positive scores above a random negative (ties count half). NaN without both kinds."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if not n_positive or not n_negative:
        return float("nan")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]  # 1-based ranks, ties get their average
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def rejection_scores(logits: np.ndarray, gold: np.ndarray, is_oos: np.ndarray, rule: RejectionRule) -> dict:
    """In-scope accuracy (a rejected in-scope text is wrong), out-of-scope recall and precision,
    AUROC of the confidence (threshold-free), and accuracy over every row with the out-of-scope
    label as one more answer. `gold` holds label ids (anything for out-of-scope rows)."""
    logits = np.asarray(logits, dtype=np.float64)
    return {
        **decision_scores(rule.rejected(logits), logits.argmax(-1), gold, is_oos),
        "oos_auroc": auroc(-rule.confidence(logits), is_oos),
    }


def decision_scores(rejected: np.ndarray, predicted: np.ndarray, gold: np.ndarray, is_oos: np.ndarray) -> dict:
    """The scores of rejection_scores but AUROC, from the decisions themselves."""
    is_oos = np.asarray(is_oos, dtype=bool)
    in_scope_right = ~rejected & (predicted == gold) & ~is_oos
    n_in, n_oos, n_rejected = int((~is_oos).sum()), int(is_oos.sum()), int(rejected.sum())
    caught = int((rejected & is_oos).sum())
    return {
        "in_scope_accuracy": float(in_scope_right.sum() / n_in) if n_in else float("nan"),
        "oos_recall": caught / n_oos if n_oos else float("nan"),
        "oos_precision": caught / n_rejected if n_rejected else (1.0 if not n_oos else 0.0),
        "accuracy": float((in_scope_right.sum() + caught) / len(gold)) if len(gold) else float("nan"),
        "rejected": n_rejected,
    }


def calibrate(
    logits: np.ndarray,
    gold: np.ndarray,
    is_oos: np.ndarray,
    label: str,
    oos_class: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
) -> tuple[RejectionRule, list[dict]]:
    """The rule for held-out data: for each score, the lowest threshold that rejects at least
    `target_recall` of the out-of-scope rows, i.e. the one that loses the least in-scope accuracy
    doing so; then the score that keeps more in-scope accuracy there (ties: more recall, then
    msp). Returns the rule and one row per score, with its trade-off curve.

    Why a recall target rather than a balanced objective such as the mean of in-scope accuracy
    and out-of-scope recall: out-of-scope rows are few in held-out data (100 of 3,100 in
    CLINC150's validation split), and the balanced objective then buys the last points of recall
    with many points of in-scope accuracy (on CLINC150: 96% recall at 89% in-scope accuracy).
    A target says what the deployment needs and costs the least accuracy reaching it."""
    logits = np.asarray(logits, dtype=np.float64)
    is_oos = np.asarray(is_oos, dtype=bool)
    if not is_oos.any() or is_oos.all():
        raise ValueError(
            "calibrating a rejection threshold needs held-out data with both in-scope and "
            f"out-of-scope ({label!r}) examples."
        )
    if not 0 < target_recall <= 1:
        raise ValueError(f"the out-of-scope recall target must be in (0, 1], got {target_recall}.")
    predicted = logits.argmax(-1)
    wins_oos_class = predicted == oos_class if oos_class is not None else np.zeros(len(logits), dtype=bool)
    correct_in_scope = ~is_oos & (predicted == gold) & ~wins_oos_class
    n_in, n_oos = int((~is_oos).sum()), int(is_oos.sum())
    table, best = [], None
    for score in SCORES:
        confidence = in_scope_confidence(logits, score, oos_class)
        candidates = np.unique(confidence)
        # thresholds half-way between observed confidences, plus one below all (reject nothing)
        thresholds = np.concatenate(
            [[candidates[0] - 1.0], (candidates[:-1] + candidates[1:]) / 2, [candidates[-1] + 1.0]]
        )
        # kept (not rejected) iff confidence >= threshold: counted for every threshold at once
        kept_correct = int(correct_in_scope.sum()) - np.searchsorted(
            np.sort(confidence[correct_in_scope]), thresholds, side="left"
        )
        caught = np.searchsorted(np.sort(confidence[is_oos & ~wins_oos_class]), thresholds, side="left") + int(
            (is_oos & wins_oos_class).sum()
        )
        in_scope_accuracy, recall = kept_correct / n_in, caught / n_oos
        feasible = np.flatnonzero(recall >= target_recall - 1e-12)  # never empty: the top threshold rejects all
        index = int(feasible[np.lexsort((caught[feasible], kept_correct[feasible]))[-1]])
        rule = RejectionRule(label, score, float(thresholds[index]), oos_class)
        results = rejection_scores(logits, gold, is_oos, rule)
        # the trade-off: the best in-scope accuracy at each out-of-scope recall level
        curve = [
            {"oos_recall": float(level), "in_scope_accuracy": float(in_scope_accuracy[recall >= level].max())}
            for level in np.linspace(0, 1, 41)
        ]
        row = {
            "score": score,
            "threshold": rule.threshold,
            "target_recall": target_recall,
            **{k: v for k, v in results.items() if k != "rejected"},
            "curve": curve,
        }
        table.append(row)
        key = (row["in_scope_accuracy"], row["oos_recall"])
        if best is None or key > best[1]:
            best = (rule, key)
    return best[0], table


def cross_fitted(
    logits: np.ndarray,
    gold: np.ndarray,
    is_oos: np.ndarray,
    label: str,
    oos_class: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    folds: int = 2,
    seed: int = 0,
) -> dict:
    """What the calibrated rule scores on rows it was not calibrated on: the held-out rows are
    split in `folds` (in-scope and out-of-scope rows spread evenly), each fold is judged by
    the rule calibrated on the others, and the pooled decisions are scored. Scores on the
    calibration rows themselves are optimistic; these are the estimate for new data."""
    logits = np.asarray(logits, dtype=np.float64)
    is_oos = np.asarray(is_oos, dtype=bool)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(logits), dtype=int)
    for kind in (is_oos, ~is_oos):
        rows = rng.permutation(np.flatnonzero(kind))
        fold_of[rows] = np.arange(len(rows)) % folds
    rejected = np.zeros(len(logits), dtype=bool)
    for fold in range(folds):
        others = fold_of != fold
        rule, _ = calibrate(logits[others], gold[others], is_oos[others], label, oos_class, target_recall)
        rejected[fold_of == fold] = rule.rejected(logits[fold_of == fold])
    return {**decision_scores(rejected, logits.argmax(-1), gold, is_oos), "folds": folds}
