"""Slot decoding experiment: each word's best tag on its own (argmax) against the most probable
valid BIO sequence (nlu_deploy.portable.tag_decoding), and, for joint models, against that sequence with
only the slot types the predicted intent has in the training rows. Scores a checkpoint's own
held-out split (validation_split.jsonl) with its PyTorch weights.

Run it on a checkpoint trained on the sweep's 90% file (bench/recipe_sweep.py), so that the rows
scored here are neither the rows the README's figures are measured on nor rows any choice was
tuned on:

    python bench/tag_decoding_experiment.py models/s7/joint-inner --json bench/results/FILE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import FinetuneConfig
from nlu_deploy.evaluation.validate import default_columns
from nlu_deploy.metrics import entity_scores
from nlu_deploy.portable.tag_decoding import TagDecoder
from nlu_deploy.runtime.modeling import load_tokenizer
from nlu_deploy.tasks import task_of, torch_backend
from nlu_deploy.tasks.tagging import split_by_sentence
from nlu_deploy.training.plan import load_finetune_data


def argmax_tags(logits: np.ndarray, tags: list[str]) -> list[str]:
    return [
        tags[int(i)] if not np.isnan(row).any() else "O"
        for i, row in zip(np.nan_to_num(logits, nan=-np.inf).argmax(-1), logits)
    ]


def intent_slot_types(
    train,
) -> dict[str, set[str]]:
    types: dict[str, set[str]] = {}
    for intent, tags in zip(train.intents, train.tags):
        types.setdefault(intent, set()).update(t.partition("-")[2] for t in tags if t != "O")
    return types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    task = task_of(args.checkpoint)
    model = task.load_model(args.checkpoint)
    tokenizer = load_tokenizer(str(args.checkpoint))
    columns = default_columns(args.checkpoint, task)
    data = task.read(args.checkpoint / "validation_split.jsonl", columns)
    outputs = task.infer(torch_backend(model, tokenizer, tokenizer.model_max_length), task.examples(data)).outputs
    tags = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    word_logits = split_by_sentence(outputs["slot_logits" if "slot_logits" in outputs else "logits"], data)
    decoder = TagDecoder(tags)

    results = {
        "argmax": entity_scores(data.tags, [argmax_tags(x, tags) for x in word_logits]),
        "bio_viterbi": entity_scores(data.tags, [decoder.decode(x)[0] for x in word_logits]),
    }
    if "intent_logits" in outputs:
        options = artifacts.read_manifest(args.checkpoint)["options"]
        config = FinetuneConfig(
            train=Path(options["train"]),
            task=task.name,
            output=Path("unused"),
            label_column=options["label_column"],
            text_column=options["text_column"],
            intent_column=options["intent_column"],
        )
        train, _ = load_finetune_data(config, task)
        allowed = intent_slot_types(train)
        intent_names = {int(k): v for k, v in model.config.intent_id2label.items()}
        intents = [intent_names[int(i)] for i in outputs["intent_logits"].argmax(-1)]
        masked = []
        for intent, logits in zip(intents, word_logits):
            keep = np.array([t == "O" or t.partition("-")[2] in allowed.get(intent, ()) for t in tags])
            masked.append(decoder.decode(np.where(keep, logits, -1e9))[0])
        results["bio_viterbi_intent_types"] = entity_scores(data.tags, masked)
    for name, scores in results.items():
        print(
            f"{name:26s} entity F1 {100 * scores['entity_f1']:.2f}  precision {100 * scores['entity_precision']:.2f}"
            f"  recall {100 * scores['entity_recall']:.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "checkpoint": str(args.checkpoint),
                    "sentences": len(data),
                    "results": {k: {m: v for m, v in s.items() if m != "per_type"} for k, s in results.items()},
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
