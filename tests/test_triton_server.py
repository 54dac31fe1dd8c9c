"""A real Triton Inference Server (the tritonserver in the nvidia-pytriton wheel) serving the
repositories `export --triton` writes, one ensemble per task, on localhost: concurrent requests
through tritonclient get the answers `nlu-deploy predict` gives, and the server's own metrics
show that the dynamic batcher merged them. The ONNX file runs in the Python-backend runner
(--triton-onnx-backend python): the wheel has no onnxruntime backend. Bounded: the server must
be ready within 120 s, every request answers within 60 s, and the server is always stopped."""

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from nlu_deploy.cli import main
from nlu_deploy.serving.local_server import local_triton_server
from nlu_deploy.serving.repository import TritonOptions, export_triton_repository

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a test dependency")

TEXTS = [
    "wake me up at 7 am",
    "play some jazz please",
    "will it rain in oslo tomorrow",
    "set a timer for ten minutes",
    "play some jazz in the kitchen, please",
    "wake me up at 6 30 tomorrow",
    "what is the weather like",
    "",
    "set an alarm for noon",
    "play rock music loud",
    "is it sunny in paris",
    "timer for 5 minutes",
] * 3
TASKS = {
    "intents": ("tiny_onnx", ["LABEL", "SCORE"]),
    "slots": ("tiny_tagger_onnx", ["ENTITIES"]),
    "joint": ("tiny_joint_onnx", ["LABEL", "SCORE", "ENTITIES"]),
}


LAYOUTS = {"ensemble": "", "pipeline": "-pipeline"}  # layout -> suffix of the served model's name


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One server, one repository holding the three tasks' ensembles and single-process pipelines."""
    root = tmp_path_factory.mktemp("triton-server")
    repository = root / "repository"
    repository.mkdir()
    for task, (fixture, _) in TASKS.items():
        for layout, suffix in LAYOUTS.items():
            # 50 ms of queueing lets the batcher gather concurrent requests even on a busy 2-core machine
            name = task + suffix
            options = TritonOptions(name=name, onnx_backend="python", queue_delay_us=50_000, layout=layout)
            export_triton_repository(request.getfixturevalue(fixture), root / name, options, onnx_file="model.onnx")
            for model in (root / name).iterdir():
                shutil.move(str(model), repository / model.name)
    with local_triton_server(repository, root / "server") as running:
        yield running


def infer_concurrently(server, model: str, outputs: list[str]) -> list[dict]:
    client = httpclient.InferenceServerClient(server.http_url, concurrency=len(TEXTS), network_timeout=60.0)
    pending = []
    for text in TEXTS:
        text_input = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        text_input.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=object))
        pending.append(
            client.async_infer(model, [text_input], outputs=[httpclient.InferRequestedOutput(name) for name in outputs])
        )
    answers = [call.get_result(timeout=60) for call in pending]
    client.close()
    return [{name: answer.as_numpy(name).reshape(-1)[0] for name in outputs} for answer in answers]


def predict_json(onnx_dir) -> list[dict]:
    result = CliRunner().invoke(main, ["predict", str(onnx_dir), "--variant", "model.onnx", "--json", *TEXTS])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def metric(text: str, name: str, model: str) -> float:
    found = re.search(rf'^{name}{{model="{model}",version="1"}} ([0-9.e+]+)$', text, re.MULTILINE)
    assert found, f"{name} for {model} is not in the server's metrics"
    return float(found.group(1))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(TASKS))
def test_served_answers_equal_predict_and_requests_are_batched(request, server, name, layout):
    fixture, outputs = TASKS[name]
    served = infer_concurrently(server, name + LAYOUTS[layout], outputs)
    expected = predict_json(request.getfixturevalue(fixture))
    assert len(served) == len(expected) == len(TEXTS)
    for got, want in zip(served, expected):
        if "LABEL" in got:
            assert got["LABEL"].decode("utf-8") == want["label"]
            assert got["SCORE"] == pytest.approx(want["score"], abs=1e-4)
        if "ENTITIES" in got:
            entities = json.loads(got["ENTITIES"].decode("utf-8"))
            assert [(e["type"], e["text"], e["start"], e["end"]) for e in entities] == [
                (e["type"], e["text"], e["start"], e["end"]) for e in want["entities"]
            ]
            np.testing.assert_allclose(
                [e["score"] for e in entities], [e["score"] for e in want["entities"]], atol=1e-4
            )
    if "ENTITIES" in outputs:
        assert any(json.loads(s["ENTITIES"]) for s in served), "the tiny models find entities in these texts"
    metrics = server.metrics()
    runner = f"{name}_model" if layout == "ensemble" else name + LAYOUTS[layout]  # the model that runs the file
    requests = metric(metrics, "nv_inference_count", runner)
    executions = metric(metrics, "nv_inference_exec_count", runner)
    assert requests == len(TEXTS)
    assert executions < requests, f"{requests:.0f} requests ran in {executions:.0f} executions: nothing was batched"
