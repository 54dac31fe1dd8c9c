"""Triton Python-backend model that runs the exported ONNX file with onnxruntime on CPU
(written by nlu-deploy export --triton-onnx-backend python).

It stands in for Triton's onnxruntime backend where that backend is missing: the tritonserver
in the nvidia-pytriton wheel has only the Python backend, the onnxruntime one ships in NVIDIA's
containers. Same model name, inputs, outputs and dynamic batching as the onnxruntime-backend
config, so the ensemble and clients do not change. Needs onnxruntime and numpy < 2 in the
backend's Python environment (the wheel's backend stub misreads numpy 2 arrays).
"""

import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).parent))
from model_runner import onnx_runner  # noqa: E402  (copied from nlu_deploy/serving/triton_models)
from shape_batches import respond_by_shape  # noqa: E402  (copied from nlu_deploy/portable/shape_batches.py)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        threads = int(config.get("parameters", {}).get("threads", {}).get("string_value", "0"))
        _, self.run = onnx_runner(Path(__file__).parent / "model.onnx", threads)

    def execute(self, requests):
        """The dynamic batcher hands over several requests at once; those of one shape (the
        tokenizer pads to length buckets) run as one batch (shape_batches.py, copied beside this)."""
        return respond_by_shape(pb_utils, requests, self.input_names, self.output_names, self.run)
