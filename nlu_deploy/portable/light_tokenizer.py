"""Tokenizing for inference without transformers (and so without torch).

Predicting from an ONNX directory needs a tokenizer and onnxruntime, nothing else. Importing
transformers to get its tokenizer costs seconds (it pulls torch); the `tokenizers` library it
wraps reads the same `tokenizer.json` in milliseconds. `LightTokenizer` gives the part of a
transformers fast tokenizer's interface that inference uses (runtime.encode, the word tagger),
with the same ids: a test compares both on real data.

This file imports nothing from nlu_deploy (portable/): the Triton tokenizer model runs a
copy of it inside Triton's Python backend.
"""

from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_FILE = "tokenizer.json"


class LightEncoding(dict):
    """input_ids / token_type_ids / attention_mask lists per text, and word_ids(row) like a
    transformers BatchEncoding."""

    def __init__(self, encodings):
        super().__init__(
            input_ids=[e.ids for e in encodings],
            token_type_ids=[e.type_ids for e in encodings],
            attention_mask=[e.attention_mask for e in encodings],
        )
        self._encodings = encodings

    def word_ids(self, row: int) -> list[int | None]:
        return self._encodings[row].word_ids


class LightTokenizer:
    is_fast = True  # word alignment (word_ids) is available

    def __init__(self, directory: Path):
        from tokenizers import Tokenizer

        directory = Path(directory)
        try:
            self._tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        except Exception as exc:  # the Rust side raises a plain Exception for a bad file
            raise ValueError(f"could not read {directory / TOKENIZER_FILE} ({str(exc).strip()}).") from None
        # Per call, as transformers does: a padding or truncation saved in the file must not apply.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        settings = _read_json(directory / "tokenizer_config.json")
        special = _read_json(directory / "special_tokens_map.json")
        self.model_max_length = int(settings.get("model_max_length") or 512)
        pad_token = settings.get("pad_token") or special.get("pad_token")
        if isinstance(pad_token, dict):  # {"content": "[PAD]", ...} in some files
            pad_token = pad_token.get("content")
        self.pad_token_id = self._tokenizer.token_to_id(pad_token) if pad_token else None

    def __len__(self) -> int:
        """Tokens in the vocabulary, added ones included (as len() of a transformers tokenizer)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        processor = self._tokenizer.post_processor
        return processor.num_special_tokens_to_add(pair) if processor is not None else 0

    def __call__(
        self,
        texts: list,
        is_split_into_words: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        verbose: bool = True,
    ) -> LightEncoding:
        if truncation:
            self._tokenizer.enable_truncation(max_length or self.model_max_length)
        try:
            return LightEncoding(
                self._tokenizer.encode_batch(
                    list(texts), is_pretokenized=is_split_into_words, add_special_tokens=add_special_tokens
                )
            )
        finally:
            self._tokenizer.no_truncation()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
