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

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).parent))
from shape_batches import respond_by_shape  # noqa: E402  (copied from nlu_deploy/portable/shape_batches.py)


class TritonPythonModel:
    def initialize(self, args):
        import openvino as ov

        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        core = ov.Core()
        model = core.read_model(str(Path(__file__).parent / "model.xml"))
        properties = {"INFERENCE_PRECISION_HINT": parameters.get("INFERENCE_PRECISION_HINT", "f32")}
        self.request = core.compile_model(model, "CPU", properties).create_infer_request()

    def execute(self, requests):
        """The dynamic batcher hands over several requests at once; those of one shape (the
        tokenizer pads to length buckets) run as one batch (shape_batches.py, copied beside this)."""
        return respond_by_shape(
            pb_utils, requests, self.input_names, self.output_names,
            lambda batch: {port.get_any_name(): np.array(value) for port, value in self.request.infer(batch).items()},
        )  # fmt: skip
