"""Which out-of-scope score separates best? An experiment behind rejection.py's choice of scores.

Compares, on a fine-tuned intent checkpoint and held-out data with out-of-scope rows:
- msp and energy, from the logits (what nlu-deploy ships: every runtime computes them);
- max_logit (Hendrycks et al., 2022) and energy at temperatures 0.5 and 2, the same family;
- margin, for a model trained with the out-of-scope class: the in-scope energy minus that
  class's logit, i.e. the log-odds of "some in-scope label" against "out of scope";
- Mahalanobis distance of the pooled encoder output to the nearest in-scope class centroid,
  with one covariance shared by all classes, fitted on the training data (Podolskiy et al.,
  2021). It needs the hidden features, not just logits, so shipping it would mean a second
  ONNX output and a 384x384 matrix beside the model.
For each: AUROC, and in-scope accuracy at the lowest threshold that rejects 80% of the held-out
out-of-scope rows (calibrated on the same rows: compare scores with it, not with a test set).

Usage: python bench/oos_scores_experiment.py CHECKPOINT TRAIN.jsonl VALIDATION.jsonl [--label oos]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nlu_deploy.data.tables import load_labelled_texts
from nlu_deploy.portable.rejection import auroc, in_scope_confidence
from nlu_deploy.runtime.modeling import load_tokenizer
from nlu_deploy.runtime.sessions import encode, length_sorted_batches, pad_batch
from nlu_deploy.tasks import task_of


def features_and_logits(model, tokenizer, texts: list[str], batch_size: int = 128):
    encoded = encode(tokenizer, texts, 128)
    pooled = np.zeros((len(texts), model.config.hidden_size), dtype=np.float64)
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float64)
    with torch.inference_mode():
        for rows in length_sorted_batches(encoded, batch_size):
            batch = {
                k: torch.from_numpy(v)
                for k, v in pad_batch([encoded.features[i] for i in rows], tokenizer.pad_token_id).items()
            }
            output = model(**batch, output_hidden_states=True)
            # what the classification head reads: the pooler for BERT-family models (a --pooling
            # mean model has none; main() asks for --no-mahalanobis then)
            encoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
            if encoder is not None:
                pooled[rows] = encoder.pooler(output.hidden_states[-1]).double().numpy()
            logits[rows] = output.logits.double().numpy()
    return pooled, logits


def mahalanobis_distances(model, tokenizer, args, features):
    """Distance of each held-out row's pooled features to the nearest in-scope class centroid."""
    train = load_labelled_texts(args.train, args.text_column, args.label_column)
    train_features, _ = features_and_logits(model, tokenizer, train.texts)

    in_scope = sorted({label for label in train.labels if label != args.label})
    centroids = np.stack([train_features[[label == c for label in train.labels]].mean(0) for c in in_scope])
    centred = np.concatenate(
        [train_features[[label == c for label in train.labels]] - centroids[k] for k, c in enumerate(in_scope)]
    )
    precision = np.linalg.pinv(np.cov(centred, rowvar=False))
    differences = features[:, None, :] - centroids[None, :, :]
    distances = np.einsum("ncd,de,nce->nc", differences, precision, differences).min(-1)
    return distances


def cross_fitted_at_recall(confidence, correct_in_scope, is_oos, target=0.8, repeats=20):
    """Mean in-scope accuracy and recall on one half of the rows with the threshold calibrated on
    the other half (both ways, `repeats` random halvings): what to expect on new data."""
    accuracies, recalls = [], []
    for seed in range(repeats):
        rng = np.random.default_rng(seed)
        half = np.zeros(len(confidence), dtype=bool)
        for kind in (is_oos, ~is_oos):
            rows = rng.permutation(np.flatnonzero(kind))
            half[rows[: len(rows) // 2]] = True
        for calibration in (half, ~half):
            threshold = np.quantile(confidence[calibration & is_oos], target, method="higher")
            judged = ~calibration
            kept = confidence > threshold
            accuracies.append((kept & correct_in_scope & judged).sum() / (~is_oos & judged).sum())
            recalls.append((~kept & is_oos & judged).sum() / (is_oos & judged).sum())
    return float(np.mean(accuracies)), float(np.mean(recalls))


def at_recall(confidence, correct_in_scope, is_oos, target=0.8):
    """In-scope accuracy at the lowest threshold that rejects `target` of the out-of-scope rows."""
    threshold = np.quantile(confidence[is_oos], target, method="higher")  # reject below this
    kept = confidence > threshold
    recall = float((~kept & is_oos).sum() / is_oos.sum())
    return float((kept & correct_in_scope).sum() / (~is_oos).sum()), recall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("train", type=Path)
    parser.add_argument("validation", type=Path)
    parser.add_argument("--label", default="oos")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="intent")
    parser.add_argument("--no-mahalanobis", action="store_true", help="skip it (it encodes the whole training file)")
    args = parser.parse_args()
    task = task_of(args.checkpoint)
    model, tokenizer = task.load_model(args.checkpoint), load_tokenizer(str(args.checkpoint))
    if not args.no_mahalanobis and not hasattr(model, "base_model_prefix"):
        raise SystemExit(f"{args.checkpoint} has no pooler (--pooling mean); run with --no-mahalanobis.")
    label2id = {k: int(v) for k, v in model.config.label2id.items()}
    oos_class = label2id.get(args.label)
    held_out = load_labelled_texts(args.validation, args.text_column, args.label_column)
    features, logits = features_and_logits(model, tokenizer, held_out.texts)
    scores = {
        "msp": in_scope_confidence(logits, "msp", oos_class),
        "energy": in_scope_confidence(logits, "energy", oos_class),
    }
    in_scope_logits = np.delete(logits, oos_class, axis=1) if oos_class is not None else logits
    scores["max_logit"] = in_scope_logits.max(-1)
    for temperature in (0.5, 2.0):
        scores[f"energy_t{temperature:g}"] = temperature * np.logaddexp.reduce(in_scope_logits / temperature, axis=-1)
    if oos_class is not None:
        scores["margin"] = scores["energy"] - logits[:, oos_class]
    if not args.no_mahalanobis:
        scores["mahalanobis"] = -mahalanobis_distances(model, tokenizer, args, features)

    is_oos = np.array([label == args.label for label in held_out.labels])
    gold = np.array([label2id.get(label, -1) for label in held_out.labels])
    predicted = logits.argmax(-1)
    correct = ~is_oos & (predicted == gold) & (predicted != (oos_class if oos_class is not None else -2))
    results = {}
    for name, confidence in scores.items():
        if oos_class is not None:  # as the shipped rule: the out-of-scope class winning rejects too
            confidence = np.where(predicted == oos_class, -np.inf, confidence)
        accuracy, recall = at_recall(confidence, correct, is_oos)
        crossed_accuracy, crossed_recall = cross_fitted_at_recall(confidence, correct, is_oos)
        results[name] = {
            "auroc": auroc(-confidence, is_oos),
            "in_scope_accuracy_at_80_recall": accuracy,
            "oos_recall": recall,
            "cross_fitted_in_scope_accuracy": crossed_accuracy,
            "cross_fitted_oos_recall": crossed_recall,
        }
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "held_out": str(args.validation),
                "in_scope_rows": int((~is_oos).sum()),
                "oos_rows": int(is_oos.sum()),
                "scores": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
