"""How the Python-backend models run the exported file on CPU: onnxruntime on the ONNX file,
OpenVINO on the IR at an explicit precision hint, or PyTorch on an AOTInductor package. Copied beside the runner models and the
single-process pipeline model; it needs only the runtime it is asked for (and numpy)."""

from pathlib import Path


def onnx_runner(path: Path, threads: int = 0, device: str = "cpu"):
    """(input names, run): run takes {input name: array} and gives {output name: array}.
    threads 0: onnxruntime's default (one per physical core). device gpu: the CUDA provider, and
    an error rather than a quiet fall back to the CPU when it does not start."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "gpu" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise RuntimeError(
            f"{providers[0]} did not start in this Triton model: it would run on {session.get_providers()[0]}"
        )
    import numpy as np

    output_names = [o.name for o in session.get_outputs()]
    int32_inputs = {i.name for i in session.get_inputs() if i.type == "tensor(int32)"}  # export --gpu-fp16's graphs

    def run(feed):
        feed = {name: value.astype(np.int32) if name in int32_inputs else value for name, value in feed.items()}
        return dict(zip(output_names, session.run(output_names, feed)))

    return [i.name for i in session.get_inputs()], run


def openvino_runner(path: Path, precision: str = "f32", threads: int = 0):
    """The same for an OpenVINO IR (model.xml with model.bin beside it)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    properties = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", properties)
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]
    return names, lambda feed: {port.get_any_name(): np.array(value) for port, value in request.infer(feed).items()}


def pt2_runner(path: Path, threads: int = 0):
    """The same for an AOTInductor package (model.pt2, with model.pt2.json beside it naming its
    inputs and outputs); needs torch in the backend's environment."""
    import json

    import torch

    facts = json.loads(Path(path).with_name("model.pt2.json").read_text())
    if threads:
        torch.set_num_threads(threads)
    model = torch._inductor.aoti_load_package(str(path))

    def run(feed):
        with torch.inference_mode():
            results = model(**{name: torch.from_numpy(feed[name]) for name in facts["inputs"]})
        return {name: value.float().numpy() for name, value in zip(facts["outputs"], results)}

    return facts["inputs"], run
