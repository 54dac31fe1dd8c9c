import os
import shutil

import numpy as np
import onnx
import pytest

from nlu_deploy import artifacts
from nlu_deploy.config import ExportConfig
from nlu_deploy.errors import ModelError
from nlu_deploy.export.onnx_export import export
from nlu_deploy.runtime.modeling import load_tokenizer
from nlu_deploy.runtime.sessions import TorchTextClassifier
from nlu_deploy.tasks import load_checkpoint

TEXTS = ["wake me up at 7 am", "play some jazz", "will it rain in oslo tomorrow", "set a timer for ten minutes"]


def op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_every_file_loads_in_optimum_and_matches_pytorch(tiny_checkpoint, tiny_onnx):
    from optimum.onnxruntime import ORTModelForSequenceClassification

    tokenizer = load_tokenizer(str(tiny_onnx))
    reference = TorchTextClassifier(load_checkpoint(tiny_checkpoint), tokenizer, 32).logits(TEXTS)
    inputs = tokenizer(TEXTS, padding=True, return_tensors="np")
    for file_name, tolerance in [
        (artifacts.ONNX_FP32, 1e-4),
        (artifacts.ONNX_OPTIMIZED, 1e-4),
        (artifacts.ONNX_QUANTIZED, None),
    ]:
        model = ORTModelForSequenceClassification.from_pretrained(tiny_onnx, file_name=file_name)
        logits = np.asarray(model(**inputs).logits)
        assert logits.shape == reference.shape
        if tolerance:
            np.testing.assert_allclose(logits, reference, atol=tolerance)
        else:  # int8 changes the numbers a little but not the decisions of a confident model
            assert (logits.argmax(-1) == reference.argmax(-1)).all()
            assert not np.allclose(logits, reference, atol=1e-4)


def test_graphs_are_fused_and_quantized(tiny_onnx):
    plain, fused, quantized = (
        op_types(tiny_onnx / f) for f in (artifacts.ONNX_FP32, artifacts.ONNX_OPTIMIZED, artifacts.ONNX_QUANTIZED)
    )
    assert "SkipLayerNormalization" in fused and "SkipLayerNormalization" not in plain
    assert quantized & {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention"}
    assert not plain & {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention", "DynamicQuantizeLinear"}
    assert (tiny_onnx / artifacts.ONNX_QUANTIZED).stat().st_size < (tiny_onnx / artifacts.ONNX_FP32).stat().st_size


def test_manifest_records_the_check_and_the_quantization(tiny_onnx, tiny_checkpoint):
    manifest = artifacts.read_manifest(tiny_onnx)
    assert manifest["stage"] == "export" and manifest["parent"] == str(tiny_checkpoint.resolve())
    assert manifest["max_abs_logit_diff"]["fp32"] < 1e-4
    # quantizing the O2 graph needs DefaultTensorType (see quantize.py): this is that path
    assert manifest["quantization"]["source"] == artifacts.ONNX_OPTIMIZED
    assert manifest["quantization"]["preset"] in ("avx512_vnni", "avx512", "avx2", "arm64")


def test_export_refuses_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelError, match="not a model checkpoint"):
        export(ExportConfig(model_dir=tmp_path / "not-a-model", output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_export_refuses_corrupt_weights(tmp_path, tiny_checkpoint):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not really safetensors")
    with pytest.raises(ModelError, match="cannot be loaded"):
        export(ExportConfig(model_dir=broken, output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_optimum_peer_is_written_and_says_which_graph_it_quantized(tmp_path, tiny_onnx):
    from nlu_deploy.export.quantize import OPTIMUM_PEER, write_optimum_peer

    directory = tmp_path / "onnx"
    shutil.copytree(tiny_onnx, directory)
    note = write_optimum_peer(directory)
    assert "ORTQuantizer avx512_vnni dynamic" in note
    assert op_types(directory / OPTIMUM_PEER) & {"DynamicQuantizeMatMul", "MatMulInteger"}
    assert not list(directory.glob(".peer-*"))


def test_a_stage_removes_the_partial_output_of_a_killed_run_and_says_so(tmp_path, tiny_checkpoint, capsys):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer runs
    stale = tmp_path / f".onnx.partial-{dead.pid}-abc123"
    (stale / "model.onnx").parent.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"half a model")
    running = tmp_path / f".onnx.partial-{os.getpid()}-def456"  # a stage still at work: kept
    running.mkdir()
    export(ExportConfig(model_dir=tiny_checkpoint, output=tmp_path / "onnx"))
    assert not stale.exists() and running.exists() and (tmp_path / "onnx" / artifacts.ONNX_FP32).exists()
    assert f"removed {stale}" in capsys.readouterr().err
