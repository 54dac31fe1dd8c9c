"""CUDA paths (pytest -m gpu), for machines with a GPU; CPU-only machines deselect them."""

import pytest
import torch

from nlu_deploy.config import BenchConfig, FinetuneConfig, ValidateConfig
from nlu_deploy.evaluation.benchmark import bench
from nlu_deploy.evaluation.validate import validate
from nlu_deploy.training.loop import finetune

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_training_on_cuda_with_bf16_and_compile_when_asked(tmp_path, tiny_encoder, tiny_train_csv):
    result = finetune(
        FinetuneConfig(
            output=tmp_path / "cuda",
            model=str(tiny_encoder),
            train=tiny_train_csv,
            epochs=6,
            batch_size=8,
            lr=5e-3,
            max_length=32,
            device="cuda",
            compile="on",
            precision="bf16",
        ),
        show_progress=False,
    )
    assert result.device == "cuda" and result.compiled
    assert result.best_scores["accuracy"] >= 0.9


@pytest.mark.gpu
@needs_cuda
def test_cuda_provider_really_runs_with_gpu_baselines(tiny_onnx, tiny_checkpoint):
    report = bench(
        BenchConfig(
            onnx_dir=tiny_onnx,
            model_dir=tiny_checkpoint,
            provider="cuda",
            batch_sizes=(1, 8),
            seq_lens=(16,),
            min_iters=3,
            min_seconds=0.0,
            variants=("fp32", "optimized"),
        )
    )
    providers = {m.variant: m.provider for m in report.measurements}
    assert providers["fp32"] == "CUDAExecutionProvider"
    assert {"pytorch", "pytorch-fp16", "pytorch-bf16", "pytorch-compiled"} <= set(providers)


@pytest.mark.gpu
@needs_cuda
def test_validate_on_cuda_keeps_the_scores_of_pytorch(tiny_checkpoint, tiny_onnx, tiny_dev_csv):
    report = validate(ValidateConfig(model_dir=tiny_checkpoint, onnx_dir=tiny_onnx, data=tiny_dev_csv, provider="cuda"))
    by_variant = {v.variant: v for v in report.variants}
    assert report.provider == "cuda" and report.passed
    assert by_variant["fp32"].max_abs_logit_diff["logits"] < 1e-3  # GPU kernels, not bit-equal to the CPU's
    assert by_variant["fp32"].agreement["logits"] == 1.0
