"""Triton Python-backend model that runs an OpenVINO IR file on CPU (written by nlu-deploy export
--triton-backend openvino --triton-onnx-backend python).

It stands in for Triton's OpenVINO backend where that backend is missing (the tritonserver in
the nvidia-pytriton wheel has only the Python backend): same model name, inputs, outputs,
dynamic batching and instances as the OpenVINO-backend config, and the same precision hint,
read from the config's INFERENCE_PRECISION_HINT parameter. Needs openvino and numpy < 2 in
the backend's Python environment.
"""

import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).parent))
from model_runner import openvino_runner  # noqa: E402  (copied from nlu_deploy/serving/triton_models)
from shape_batches import respond_by_shape  # noqa: E402  (copied from nlu_deploy/portable/shape_batches.py)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        precision = parameters.get("INFERENCE_PRECISION_HINT", "f32")
        threads = int(parameters.get("threads", "0"))
        _, self.run = openvino_runner(Path(__file__).parent / "model.xml", precision, threads)

    def execute(self, requests):
        """The dynamic batcher hands over several requests at once; those of one shape (the
        tokenizer pads to length buckets) run as one batch (shape_batches.py, copied beside this)."""
        return respond_by_shape(pb_utils, requests, self.input_names, self.output_names, self.run)
