"""Triton Python-backend model: raw text in, token ids out (written by nlu-deploy export --triton).

Runs inside Triton's Python backend, which provides triton_python_backend_utils; it needs
`tokenizers` and numpy in the backend's Python environment (no transformers, no torch). The
tokenizer files and light_tokenizer.py (a copy of nlu_deploy's, the same code `nlu-deploy
predict` tokenizes with) sit next to this file.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).parent))
from light_tokenizer import LightTokenizer  # noqa: E402  (copied from nlu_deploy/light_tokenizer.py)


class TextEncoder:
    """Texts to padded token tensors, as `nlu-deploy predict` tokenizes them. Word tasks (slots,
    joint) split the text at whitespace, as predict does, and WORD_IDS says which word each token
    belongs to (-1: special tokens and padding). Used by this model and by the single-process
    pipeline model (pipeline_model.py)."""

    def __init__(self, tokenizer_dir: Path, max_length: int, words: bool, buckets: str = "none"):
        self.tokenizer = LightTokenizer(tokenizer_dir)
        self.max_length, self.words = max_length, words
        # Requests are padded to fixed lengths, so that Triton's dynamic batcher (which merges
        # only requests of one shape) can batch them: the smallest bucket that fits, else max_length.
        # "none": each request padded to its own longest text.
        self.buckets = None
        if buckets != "none":
            self.buckets = sorted(int(b) for b in buckets.split(",") if b.strip()) + [max_length]
        self.fill = {"input_ids": self.tokenizer.pad_token_id or 0, "WORD_IDS": -1}

    def encode(self, texts: list[str]):
        """Every text in one call: the tokenizers library works through a batch in Rust."""
        inputs = [text.split() for text in texts] if self.words else texts
        encoded = self.tokenizer(inputs, is_split_into_words=self.words, truncation=True, max_length=self.max_length)
        if self.words:
            encoded["WORD_IDS"] = [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(len(texts))]
        return encoded

    def padded(self, encoded, rows, names, dtypes: dict | None = None) -> dict:
        """The rows' tensors, padded to the smallest bucket that holds the longest of them, as
        int64 unless `dtypes` names another type for a tensor."""
        longest = max(len(encoded["input_ids"][row]) for row in rows)
        width = longest if self.buckets is None else next(b for b in self.buckets if b >= longest)
        tensors = {}
        for name in names:
            padded = np.full((len(rows), width), self.fill.get(name, 0), dtype=(dtypes or {}).get(name, np.int64))
            for position, row in enumerate(rows):
                values = encoded[name][row]
                padded[position, : len(values)] = values
            tensors[name] = padded
        return tensors


def request_texts(request) -> list[str]:
    """A request's TEXT tensor as Python strings."""
    raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
    return [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in raw]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.output_names = [output["name"] for output in config["output"]]
        # int32 ids where the model's graph takes them (export --gpu-fp16), else int64
        self.dtypes = {o["name"]: np.int32 for o in config["output"] if o["data_type"] == "TYPE_INT32"}
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.encoder = TextEncoder(
            Path(__file__).parent / "tokenizer",
            int(parameters["max_length"]),
            parameters.get("words") == "true",
            parameters.get("length_buckets", "none"),
        )

    def execute(self, requests):
        """All requests handed over at once are tokenized in one call; each request is then padded
        to its own bucket."""
        texts_per_request = [request_texts(request) for request in requests]
        encoded = self.encoder.encode([text for texts in texts_per_request for text in texts])
        responses, start = [], 0
        for texts in texts_per_request:
            rows = range(start, start + len(texts))
            start += len(texts)
            tensors = self.encoder.padded(encoded, rows, self.output_names, self.dtypes)
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, t) for n, t in tensors.items()])
            )
        return responses
