"""Triton Python-backend model: logits in, label and score out (written by nlu-deploy export --triton).

With rejection.json beside it (a model calibrated with an out-of-scope rule), it answers the
out-of-scope label when the rule rejects, using rejection.py, a copy of the code `nlu-deploy
predict` applies.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).parent


class Decoder:
    """Logits to answers; also used by the single-process pipeline model (pipeline_model.py)."""

    inputs = ("logits",)  # the model outputs it reads

    def __init__(self, folder: Path = HERE):
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        self.labels = {int(i): label for i, label in labels.items()}
        self.rule = None
        if (folder / "rejection.json").exists():
            sys.path.insert(0, str(folder))
            from rejection import RejectionRule  # copied from nlu_deploy/rejection.py

            self.rule = RejectionRule.from_json(json.loads((folder / "rejection.json").read_text(encoding="utf-8")))

    def answers(self, logits):
        if self.rule is not None:
            return self.rule.answers(logits, self.labels)
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = exp / exp.sum(axis=-1, keepdims=True)
        best = probabilities.argmax(axis=-1)
        return [(self.labels[int(b)], float(p[b])) for b, p in zip(best, probabilities)]

    def results(self, texts, tensors) -> dict:
        """{LABEL, SCORE} for a batch, from {logits}. (texts: unused; word tasks read them.)"""
        answers = self.answers(tensors["logits"].astype(np.float64))
        return {
            "LABEL": np.array([[name.encode("utf-8")] for name, _ in answers], dtype=object),
            "SCORE": np.array([[score] for _, score in answers], dtype=np.float32),
        }


class TritonPythonModel:
    def initialize(self, args):
        self.decoder = Decoder()

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            results = self.decoder.results(None, {"logits": logits})
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, v) for n, v in results.items()])
            )
        return responses
