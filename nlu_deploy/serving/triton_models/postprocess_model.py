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


class TritonPythonModel:
    def initialize(self, args):
        labels = json.loads((HERE / "labels.json").read_text(encoding="utf-8"))
        self.labels = {int(i): label for i, label in labels.items()}
        self.rule = None
        if (HERE / "rejection.json").exists():
            sys.path.insert(0, str(HERE))
            from rejection import RejectionRule  # copied from nlu_deploy/rejection.py

            self.rule = RejectionRule.from_json(json.loads((HERE / "rejection.json").read_text(encoding="utf-8")))

    def answers(self, logits):
        if self.rule is not None:
            return self.rule.answers(logits, self.labels)
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities = exp / exp.sum(axis=-1, keepdims=True)
        best = probabilities.argmax(axis=-1)
        return [(self.labels[int(b)], float(p[b])) for b, p in zip(best, probabilities)]

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float64)
            answers = self.answers(logits)
            label = np.array([[name.encode("utf-8")] for name, _ in answers], dtype=object)
            score = np.array([[score] for _, score in answers], dtype=np.float32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("LABEL", label), pb_utils.Tensor("SCORE", score)]
                )
            )
        return responses
