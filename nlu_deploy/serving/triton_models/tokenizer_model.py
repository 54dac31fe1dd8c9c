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


class TritonPythonModel:
    def initialize(self, args):
        self.tokenizer = LightTokenizer(Path(__file__).parent / "tokenizer")
        config = json.loads(args["model_config"])
        self.output_names = [output["name"] for output in config["output"]]
        self.max_length = int(config["parameters"]["max_length"]["string_value"])
        # Word tasks (slots, joint): the text is split at whitespace, as `nlu-deploy predict` does,
        # and WORD_IDS says which word each token belongs to (-1: special tokens and padding).
        self.words = config["parameters"].get("words", {}).get("string_value") == "true"
        # Requests are padded to fixed lengths, so that Triton's dynamic batcher (which merges
        # only requests of one shape) can batch them: the smallest bucket that fits, else max_length.
        # "none": each request padded to its own longest text.
        buckets = config["parameters"].get("length_buckets", {}).get("string_value", "")
        self.buckets = None
        if buckets != "none":
            self.buckets = sorted(int(b) for b in buckets.split(",") if b.strip()) + [self.max_length]
        self.fill = {"input_ids": self.tokenizer.pad_token_id or 0, "WORD_IDS": -1}

    def execute(self, requests):
        """All requests handed over at once are tokenized in one call (the tokenizers library
        works through a batch in Rust); each request is then padded to its own bucket."""
        texts_per_request = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts_per_request.append(
                [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in raw]
            )
        texts = [text for request_texts in texts_per_request for text in request_texts]
        inputs = [text.split() for text in texts] if self.words else texts
        encoded = self.tokenizer(inputs, is_split_into_words=self.words, truncation=True, max_length=self.max_length)
        if self.words:
            encoded["WORD_IDS"] = [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(len(texts))]
        responses, start = [], 0
        for request_texts in texts_per_request:
            rows = range(start, start + len(request_texts))
            start += len(request_texts)
            responses.append(pb_utils.InferenceResponse(output_tensors=self.padded(encoded, rows)))
        return responses

    def padded(self, encoded, rows):
        """One request's tensors, padded to the smallest bucket that holds its longest text."""
        longest = max(len(encoded["input_ids"][row]) for row in rows)
        width = longest if self.buckets is None else next(b for b in self.buckets if b >= longest)
        tensors = []
        for name in self.output_names:
            padded = np.full((len(rows), width), self.fill.get(name, 0), dtype=np.int64)
            for position, row in enumerate(rows):
                values = encoded[name][row]
                padded[position, : len(values)] = values
            tensors.append(pb_utils.Tensor(name, padded))
        return tensors
