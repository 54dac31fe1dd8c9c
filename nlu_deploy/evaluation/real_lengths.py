"""Batches of real texts for the benchmark: what a deployment runs is short texts of many lengths,
each batch padded to its own longest text (as predict pads), not 128-token synthetic batches.
Whether padding or a runtime's fixed costs dominate differs between the two, and so can the
fastest variant: the run's choice of what to ship is made on these."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlu_deploy.portable.light_tokenizer import LightTokenizer

BATCHES_PER_SIZE = 16  # distinct batches cycled through while timing: a spread of lengths, not one


def real_length_batches(onnx_dir: Path, texts: list[str], batch_size: int, seed: int = 0) -> list[dict]:
    """BATCHES_PER_SIZE batches of `batch_size` texts drawn at random (seeded), tokenized as the
    exported model's tokenizer does (whitespace words for word tasks), each padded to its longest."""
    from nlu_deploy.tasks import task_of

    tokenizer = LightTokenizer(onnx_dir)
    words = task_of(onnx_dir).triton_words
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(BATCHES_PER_SIZE):
        chosen = [texts[i] for i in rng.choice(len(texts), batch_size, replace=len(texts) < batch_size)]
        inputs = [text.split() for text in chosen] if words else chosen
        encoded = tokenizer(
            inputs, is_split_into_words=words, truncation=True, max_length=min(tokenizer.model_max_length, 512)
        )
        batches.append(_padded(encoded["input_ids"], tokenizer.pad_token_id or 0))
    return batches


def _padded(ids: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, values in enumerate(ids):
        input_ids[row, : len(values)] = values
        attention_mask[row, : len(values)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}


def mean_width(batches: list[dict]) -> int:
    return round(float(np.mean([batch["input_ids"].shape[1] for batch in batches])))
