"""Triton Python-backend model: the whole answer in one process, text in and the task's answer out
(written by nlu-deploy export --triton --triton-layout pipeline).

The ensemble sends every request through three Python-backend processes (tokenizer, model
runner, post-processor), each hop a copy through shared memory and a trip through Triton's
scheduler; here one process tokenizes, runs the model and decodes, with the same code as the
ensemble's three models (tokenizer_model.py, model_runner.py and the task's post-processor,
copied beside this file as postprocess.py). Triton's dynamic batcher can merge any requests (the
input is one string each, so every request has one shape), and a merged batch is padded to its
longest text. Needs tokenizers, numpy < 2 and onnxruntime (or openvino for an IR, torch for an
AOTInductor package) in the backend's Python environment.
"""

import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from model_runner import onnx_runner, openvino_runner, pt2_runner  # noqa: E402  (copied beside this file)
from postprocess import Decoder  # noqa: E402  (the task's post-processor, copied beside this file)
from tokenizer_model import TextEncoder, request_texts  # noqa: E402  (copied beside this file)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        words = parameters.get("words") == "true"
        self.encoder = TextEncoder(HERE / "tokenizer", int(parameters["max_length"]), words)
        threads = int(parameters.get("threads", "0"))
        if (HERE / "model.xml").exists():  # an OpenVINO variant, at its precision hint
            precision = parameters.get("INFERENCE_PRECISION_HINT", "f32")
            self.input_names, self.run = openvino_runner(HERE / "model.xml", precision, threads)
        elif (HERE / "model.pt2").exists():  # an AOTInductor package
            self.input_names, self.run = pt2_runner(HERE / "model.pt2", threads)
        else:
            self.input_names, self.run = onnx_runner(HERE / "model.onnx", threads, parameters.get("device", "cpu"))
        self.token_names = [*self.input_names, *(["WORD_IDS"] if words else [])]
        self.decoder = Decoder(HERE)
        self.output_names = [output["name"] for output in config["output"]]

    def execute(self, requests):
        """Every request handed over runs as one batch: tokenized in one call, one model call,
        decoded, and split back per request."""
        texts_per_request = [request_texts(request) for request in requests]
        texts = [text for request_texts_ in texts_per_request for text in request_texts_]
        tokens = self.encoder.padded(self.encoder.encode(texts), range(len(texts)), self.token_names)
        outputs = self.run({name: tokens[name] for name in self.input_names})
        results = self.decoder.results(texts, {**outputs, **tokens})
        responses, start = [], 0
        for request_texts_ in texts_per_request:
            end = start + len(request_texts_)
            tensors = [pb_utils.Tensor(name, results[name][start:end]) for name in self.output_names]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
