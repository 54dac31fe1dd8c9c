"""Triton Python-backend model that runs the exported ONNX file with onnxruntime on CPU
(written by nlu-deploy export --triton-onnx-backend python).

It stands in for Triton's onnxruntime backend where that backend is missing: the tritonserver
in the nvidia-pytriton wheel has only the Python backend, the onnxruntime one ships in NVIDIA's
containers. Same model name, inputs, outputs and dynamic batching as the onnxruntime-backend
config, so the ensemble and clients do not change. Needs onnxruntime and numpy < 2 in the
backend's Python environment (the wheel's backend stub misreads numpy 2 arrays).
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(Path(__file__).parent / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        """The dynamic batcher hands over several requests at once; those of one shape (the
        tokenizer pads to length buckets) run as one onnxruntime batch."""
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            for request in requests
        ]
        by_shape = {}
        for position, feed in enumerate(feeds):
            by_shape.setdefault(feed[self.input_names[0]].shape[1:], []).append(position)
        responses = [None] * len(requests)
        for positions in by_shape.values():
            batch = {name: np.concatenate([feeds[p][name] for p in positions]) for name in self.input_names}
            outputs = self.session.run(self.output_names, batch)
            start = 0
            for position in positions:
                rows = len(feeds[position][self.input_names[0]])
                responses[position] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(name, np.ascontiguousarray(output[start : start + rows]))
                        for name, output in zip(self.output_names, outputs)
                    ]
                )
                start += rows
        return responses
