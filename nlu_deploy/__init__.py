"""nlu-deploy: take a pretrained transformer encoder to a validated, benchmarked ONNX deployment."""

__version__ = "0.1.0"
