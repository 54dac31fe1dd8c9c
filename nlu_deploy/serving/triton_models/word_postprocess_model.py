"""Triton Python-backend model: a slot tagger's (or joint model's) outputs in, the entities as JSON
(and a joint model's intent and score) out (written by nlu-deploy export --triton).

Each word takes the logits of its first sub-word (WORD_IDS, from the tokenizer model, maps token
positions to whitespace words); the tags are the best valid BIO sequence (tag_decoding.py) and the
entities come from spans.py, the files nlu-deploy itself uses, copied beside this one.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).parent))
from spans import text_entities  # noqa: E402  (copied from nlu_deploy/spans.py)
from tag_decoding import TagDecoder  # noqa: E402  (copied from nlu_deploy/tag_decoding.py)


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


class Decoder:
    """Token logits to entities (and a joint model's intent); also used by the single-process
    pipeline model (pipeline_model.py)."""

    def __init__(self, folder: Path = Path(__file__).parent):
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        self.tags = [labels["tags"][str(i)] for i in range(len(labels["tags"]))]
        self.decoder = TagDecoder(self.tags)
        intents = labels.get("intents")
        self.intents = [intents[str(i)] for i in range(len(intents))] if intents else None
        self.slot_output = "slot_logits" if self.intents else "logits"
        self.inputs = ("WORD_IDS", self.slot_output, *(["intent_logits"] if self.intents else []))
        self.rule = None  # a joint model's out-of-scope rule: the same code as `nlu-deploy predict`
        if (folder / "rejection.json").exists():
            from rejection import RejectionRule  # copied from nlu_deploy/rejection.py

            self.rule = RejectionRule.from_json(json.loads((folder / "rejection.json").read_text()))

    def word_results(self, text, word_ids, token_logits):
        """Entities of one text: each whitespace word tagged by its first sub-word's logits."""
        words = len(text.split())
        word_logits = np.full((words, len(self.tags)), np.nan)  # words cut by truncation: tagged O
        seen = set()
        for position, word in enumerate(word_ids):
            if word >= 0 and word not in seen and word < words:
                seen.add(word)
                word_logits[word] = token_logits[position]
        return text_entities(text, *self.decoder.decode(word_logits))

    def results(self, texts, tensors) -> dict:
        """{ENTITIES} (and a joint model's LABEL, SCORE) for a batch of texts."""
        slots = tensors[self.slot_output].astype(np.float64)
        entities = [
            json.dumps(self.word_results(t, w, s), ensure_ascii=False)
            for t, w, s in zip(texts, tensors["WORD_IDS"], slots)
        ]
        results = {"ENTITIES": np.array([[e.encode("utf-8")] for e in entities], dtype=object)}
        if self.intents:
            logits = tensors["intent_logits"].astype(np.float64)
            if self.rule is not None:
                answers = self.rule.answers(logits, self.intents)
            else:
                probabilities = softmax(logits)
                answers = [(self.intents[int(p.argmax())], float(p.max())) for p in probabilities]
            results["LABEL"] = np.array([[label.encode("utf-8")] for label, _ in answers], dtype=object)
            results["SCORE"] = np.array([[score] for _, score in answers], dtype=np.float32)
        return results


class TritonPythonModel:
    def initialize(self, args):
        self.decoder = Decoder()

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts = [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in raw]
            tensors = {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.decoder.inputs
            }
            results = self.decoder.results(texts, tensors)
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, v) for n, v in results.items()])
            )
        return responses
