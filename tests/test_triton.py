"""The Triton model repository: every config.pbtxt parses as Triton's own ModelConfig message,
and the Python-backend models run (against a stub of the backend's utilities) to the same
labels as `nlu-deploy predict`."""

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import StubRequest
from google.protobuf import json_format, text_format

from nlu_deploy.cli import main
from nlu_deploy.errors import ConfigError
from nlu_deploy.portable.light_tokenizer import LightTokenizer
from nlu_deploy.predict import load_predictor
from nlu_deploy.runtime.sessions import create_session
from nlu_deploy.serving.repository import TritonOptions, export_triton_repository

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is a test dependency"
)
TEXTS = ["wake me up at 7 am", "play some jazz please", "will it rain in oslo tomorrow"]


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(tmp_path_factory, tiny_onnx):
    repo = tmp_path_factory.mktemp("triton") / "repo"
    served = export_triton_repository(tiny_onnx, repo, TritonOptions(name="intents"))
    assert served == "model_quantized.onnx"
    return repo


def test_every_config_is_a_valid_triton_model_config(repository):
    configs = {path.parent.name: parse(path) for path in repository.glob("*/config.pbtxt")}
    assert set(configs) == {"intents", "intents_model", "intents_tokenizer", "intents_postprocess"}
    model = configs["intents_model"]
    assert model.platform == "onnxruntime_onnx" and model.max_batch_size == 64
    assert model.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [i.name for i in model.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(list(i.dims) == [-1] for i in model.input)  # batch and sequence length both dynamic
    assert list(model.output[0].dims) == [4]
    assert model.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    ensemble = configs["intents"]
    assert ensemble.platform == "ensemble"
    steps = [step.model_name for step in ensemble.ensemble_scheduling.step]
    assert steps == ["intents_tokenizer", "intents_model", "intents_postprocess"]
    for name in steps:
        assert (repository / name / "1").is_dir()
    assert configs["intents_tokenizer"].backend == "python"
    assert (repository / "intents_model" / "1" / "model.onnx").exists()


def test_gpu_repository_asks_for_tensorrt_fp16(tmp_path, tiny_onnx):
    repo = tmp_path / "gpu"
    served = export_triton_repository(tiny_onnx, repo, TritonOptions(device="gpu", tensorrt=True))
    assert served == "model_optimized.onnx"  # int8 kernels are CPU ones
    config = parse(repo / "nlu_model" / "config.pbtxt")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"


def load_python_model(repository, name):
    path = repository / name / "1" / "model.py"
    spec = importlib.util.spec_from_file_location(f"triton_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json_format.MessageToDict(parse(repository / name / "config.pbtxt"), preserving_proto_field_name=True)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config)})
    return model


def test_the_ensemble_chain_gives_the_labels_predict_gives(repository, backend_stub, tiny_onnx):
    tokenizer = load_python_model(repository, "intents_tokenizer")
    postprocess = load_python_model(repository, "intents_postprocess")
    text = np.array([[t.encode("utf-8")] for t in TEXTS], dtype=object)  # Triton's [batch, 1] BYTES
    [tokens] = tokenizer.execute([StubRequest(TEXT=text)])
    assert set(tokens.tensors) == {"input_ids", "attention_mask", "token_type_ids"}
    assert tokens.tensors["input_ids"].shape == (len(TEXTS), 16)  # the smallest length bucket that fits
    [alone] = tokenizer.execute([StubRequest(TEXT=text[:1])])
    assert alone.tensors["input_ids"].shape == (1, 16)  # same shape as the others: Triton can batch them
    long_text = np.array([[" ".join(["play"] * 20).encode("utf-8")]], dtype=object)
    [longer] = tokenizer.execute([StubRequest(TEXT=long_text)])
    assert longer.tensors["input_ids"].shape == (1, 32)  # the tiny model's max length (32) caps the buckets
    session = create_session(repository / "intents_model" / "1" / "model.onnx")
    logits = session.run(None, tokens.tensors)[0]
    [result] = postprocess.execute([StubRequest(logits=logits)])
    labels = [value[0].decode("utf-8") for value in result.tensors["LABEL"]]
    predictor, _ = load_predictor(tiny_onnx)
    expected = predictor.predict(TEXTS)
    assert labels == [label for label, _ in expected]
    # int8 with dynamic activation scales: padding to a length bucket moves scores by ~1e-4
    np.testing.assert_allclose(result.tensors["SCORE"].reshape(-1), [score for _, score in expected], atol=2e-3)


def test_export_cli_writes_the_repository(tmp_path, tiny_checkpoint):
    result = CliRunner().invoke(
        main, ["export", str(tiny_checkpoint), "--output", str(tmp_path / "onnx"), "--triton", str(tmp_path / "repo")]
    )
    assert result.exit_code == 0, result.output
    assert "ensemble 'nlu' serves model.onnx" in result.output
    assert (tmp_path / "repo" / "nlu" / "config.pbtxt").exists()
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(tiny_checkpoint),
            "--output",
            str(tmp_path / "onnx2"),
            "--triton",
            str(tmp_path / "repo2"),
            "--triton-tensorrt",
        ],
    )
    assert result.exit_code == 2 and "--triton-tensorrt needs --triton-device gpu" in result.output


def run_ensemble(repository, name, texts):
    """The ensemble's three steps as Triton chains them: the Python models run against the
    backend stub, the ONNX model in onnxruntime."""
    config = parse(repository / name / "config.pbtxt")
    tokenizer = load_python_model(repository, f"{name}_tokenizer")
    postprocess = load_python_model(repository, f"{name}_postprocess")
    text = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
    [tokens] = tokenizer.execute([StubRequest(TEXT=text)])
    session = create_session(repository / f"{name}_model" / "1" / "model.onnx")
    model_inputs = {i.name: tokens.tensors[i.name] for i in session.get_inputs()}
    model_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, model_inputs)))
    post_step = config.ensemble_scheduling.step[2]
    fed = {**tokens.tensors, **model_outputs, "TEXT": text}
    [result] = postprocess.execute([StubRequest(**{key: fed[key] for key in post_step.input_map})])
    assert set(result.tensors) == {o.name for o in config.output}
    return result.tensors


WORD_TEXTS = [
    "wake me up at 7 am tomorrow",
    "play some jazz in the kitchen, please",
    "",
    "set a timer for (ten) minutes.",
]


@pytest.mark.parametrize("model_fixture", ["tiny_tagger_onnx", "tiny_joint_onnx"])
def test_word_task_repositories_give_the_entities_predict_gives(request, tmp_path, backend_stub, model_fixture):
    onnx_dir = request.getfixturevalue(model_fixture)
    repo = tmp_path / "repo"
    # the fp32 file: dynamic int8 scales depend on the batch (its padding), so the served int8
    # model agrees with predict's differently batched int8 runs only to about 1e-2
    export_triton_repository(onnx_dir, repo, TritonOptions(name="nlu"), onnx_file="model.onnx")
    configs = {path.parent.name: parse(path) for path in repo.glob("*/config.pbtxt")}
    assert [o.name for o in configs["nlu_tokenizer"].output][-1] == "WORD_IDS"
    assert {"TEXT", "WORD_IDS"} <= {i.name for i in configs["nlu_postprocess"].input}
    results = run_ensemble(repo, "nlu", WORD_TEXTS)
    predictor, _ = load_predictor(onnx_dir, "model.onnx")
    expected = predictor.predict(WORD_TEXTS)
    served = [json.loads(value[0].decode("utf-8")) for value in results["ENTITIES"]]
    if model_fixture == "tiny_joint_onnx":
        assert [v[0].decode("utf-8") for v in results["LABEL"]] == [label for label, _, _ in expected]
        np.testing.assert_allclose(results["SCORE"].reshape(-1), [s for _, s, _ in expected], atol=1e-5)
        expected = [entities for _, _, entities in expected]
    assert [[(e["type"], e["text"], e["start"], e["end"]) for e in found] for found in served] == [
        [(e.type, e.text, e.start, e.end) for e in found] for found in expected
    ]
    assert any(served), "the tiny models find entities in these texts"
    for got, want in zip(served, expected):
        np.testing.assert_allclose([e["score"] for e in got], [e.score for e in want], atol=1e-5)


def test_a_directory_without_tokenizer_json_is_refused_in_one_sentence(tmp_path, tiny_onnx):
    import shutil

    from nlu_deploy.errors import ModelError

    copy = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="has no tokenizer.json, which the Triton tokenizer model reads"):
        export_triton_repository(copy, tmp_path / "repo", TritonOptions())
    assert not (tmp_path / "repo").exists()


def test_serving_settings_a_load_search_varies_are_written_as_triton_reads_them(tmp_path, backend_stub, tiny_onnx):
    options = TritonOptions(name="plain", dynamic_batching=False, instances=2, helper_instances=3, length_buckets=())
    export_triton_repository(tiny_onnx, tmp_path / "plain", options, onnx_file="model.onnx")
    model = parse(tmp_path / "plain" / "plain_model" / "config.pbtxt")
    assert not model.HasField("dynamic_batching") and model.instance_group[0].count == 2
    assert parse(tmp_path / "plain" / "plain_tokenizer" / "config.pbtxt").instance_group[0].count == 3
    tokenizer = load_python_model(tmp_path / "plain", "plain_tokenizer")
    text = np.array([[t.encode("utf-8")] for t in TEXTS[:2]], dtype=object)
    [tokens] = tokenizer.execute([StubRequest(TEXT=text)])
    longest = max(len(ids) for ids in LightTokenizer(tiny_onnx)(TEXTS[:2])["input_ids"])
    assert tokens.tensors["input_ids"].shape == (2, longest)  # no buckets: padded to its own longest text
    preferred = TritonOptions(name="preferred", preferred_batch_sizes=(4, 8), queue_delay_us=500)
    export_triton_repository(tiny_onnx, tmp_path / "preferred", preferred, onnx_file="model.onnx")
    batching = parse(tmp_path / "preferred" / "preferred_model" / "config.pbtxt").dynamic_batching
    assert list(batching.preferred_batch_size) == [4, 8] and batching.max_queue_delay_microseconds == 500
    assert "batching 500 us, preferred 4/8" in preferred.describe()


def test_the_pipeline_layout_is_one_python_model_with_everything_beside_it(tmp_path, tiny_joint_onnx):
    options = TritonOptions(name="nlu", layout="pipeline", onnx_backend="python", instances=2, threads=1)
    export_triton_repository(tiny_joint_onnx, tmp_path / "repo", options, onnx_file="model.onnx")
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["nlu"]  # no ensemble, no helper models
    config = parse(tmp_path / "repo" / "nlu" / "config.pbtxt")
    assert config.backend == "python" and config.HasField("dynamic_batching")
    assert [i.name for i in config.input] == ["TEXT"] and {o.name for o in config.output} == {
        "LABEL",
        "SCORE",
        "ENTITIES",
    }
    assert config.instance_group[0].count == 2 and config.parameters["threads"].string_value == "1"
    code = {p.name for p in (tmp_path / "repo" / "nlu" / "1").iterdir()}
    assert {"model.py", "model.onnx", "tokenizer", "tokenizer_model.py", "light_tokenizer.py", "model_runner.py",
            "postprocess.py", "spans.py", "tag_decoding.py", "labels.json"} <= code  # fmt: skip
    assert "pipeline, batching 2000 us, 2 instance(s) x 1 thread(s)" == options.describe()
    with pytest.raises(ConfigError, match="use --triton-onnx-backend python"):
        TritonOptions(layout="pipeline")  # Triton's onnxruntime backend cannot tokenize
