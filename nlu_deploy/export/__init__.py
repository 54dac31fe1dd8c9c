"""The export stage: ONNX export through Optimum, quantization, and the accuracy-budgeted int8 search."""
