import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nlu_deploy import artifacts
from nlu_deploy.config import ValidateConfig
from nlu_deploy.errors import ModelError
from nlu_deploy.evaluation.validate import validate


def test_faithful_exports_pass_with_matching_scores(tiny_checkpoint, tiny_onnx, tiny_dev_csv):
    report = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=tiny_onnx, data=tiny_dev_csv))
    assert report.passed and report.examples == 100
    by_variant = {v.variant: v for v in report.variants}
    assert set(by_variant) == {"fp32", "optimized", "int8"}
    assert by_variant["fp32"].max_abs_logit_diff["logits"] < 1e-4 and by_variant["fp32"].agreement["logits"] == 1.0
    assert by_variant["fp32"].scores["accuracy"] == report.pytorch["accuracy"] == report.pytorch_score
    assert report.pytorch["accuracy"] >= 0.9
    data = report.to_json()
    assert data["passed"] is True and len(data["variants"]) == 3
    assert "| int8 | model_quantized.onnx |" in report.to_markdown()


def perturb_classifier(onnx_path):
    """Shift the classifier's label rows by one (float or int8 weights, sentence or token head):
    a model that loads and runs fine but answers with the wrong labels."""
    model = onnx.load(str(onnx_path))
    labels = len(json.loads((onnx_path.parent / "config.json").read_text())["id2label"])
    # a token head's weight is an anonymous MatMul input: find it through the classifier node
    head_inputs = {i for n in model.graph.node if "classifier" in n.name for i in n.input}
    for initializer in model.graph.initializer:
        if (initializer.name in head_inputs or "classifier" in initializer.name) and len(initializer.dims) == 2:
            weights = numpy_helper.to_array(initializer)
            weights = np.roll(weights, 1, axis=list(weights.shape).index(labels)).copy()
            initializer.CopyFrom(numpy_helper.from_array(weights, initializer.name))
            onnx.save(model, str(onnx_path))
            return
    raise AssertionError("no classifier weight found in the graph")


def test_a_perturbed_model_fails_the_gate(tmp_path, tiny_checkpoint, tiny_onnx, tiny_dev_csv):
    broken = tmp_path / "broken-onnx"
    shutil.copytree(tiny_onnx, broken)
    perturb_classifier(broken / artifacts.ONNX_FP32)
    report = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=broken, data=tiny_dev_csv))
    assert not report.passed
    assert [v.file for v in report.failures] == [artifacts.ONNX_FP32]
    failed = report.failures[0]
    assert failed.delta_points["accuracy"] < -1.0 and failed.agreement["logits"] < 0.9
    assert failed.failed_on == ["accuracy"]


def test_corrupt_onnx_file_is_refused(tmp_path, tiny_checkpoint, tiny_onnx, tiny_dev_csv):
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_onnx, broken)
    (broken / artifacts.ONNX_FP32).write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="is not a valid ONNX model"):
        validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=broken, data=tiny_dev_csv))


def test_labels_the_model_never_had_are_scored_as_errors_and_reported(
    tmp_path, tiny_checkpoint, tiny_onnx, tiny_dev_csv
):
    data = tmp_path / "dev.csv"
    rows = tiny_dev_csv.read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join(rows + ["turn on the lights,control_lights"] * 3) + "\n", encoding="utf-8")
    known = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=tiny_onnx, data=tiny_dev_csv))
    report = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=tiny_onnx, data=data))
    assert report.examples == known.examples + 3
    assert report.unseen == {"labels": {"rows": 3, "labels": {"control_lights": 3}}}
    # the three rows are wrong for every variant: the same right answers over more examples
    right = round(known.pytorch["accuracy"] * known.examples)
    assert report.pytorch["accuracy"] == pytest.approx(right / report.examples)
    assert all(v.scores["accuracy"] <= right / report.examples + 1e-9 for v in report.variants)
    assert "3 examples hold labels the model was never trained on" in report.to_markdown()
