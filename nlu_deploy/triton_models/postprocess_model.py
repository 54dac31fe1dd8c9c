"""Triton Python-backend model: logits in, label and score out (written by nlu-deploy export --triton)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        labels = json.loads((Path(__file__).parent / "labels.json").read_text(encoding="utf-8"))
        self.labels = np.array([labels[str(i)] for i in range(len(labels))], dtype=object)

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float64)
            exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities = exp / exp.sum(axis=-1, keepdims=True)
            best = probabilities.argmax(axis=-1)
            label = np.array([[self.labels[i].encode("utf-8")] for i in best], dtype=object)
            score = probabilities[np.arange(len(best)), best].astype(np.float32).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("LABEL", label), pb_utils.Tensor("SCORE", score)]))
        return responses
