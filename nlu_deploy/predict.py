"""Loading the deployed model for `predict`: an ONNX export directory or a PyTorch checkpoint,
wrapped by its task's predictor (intents, slots, or both). From an ONNX directory nothing
imports torch, transformers or onnx: a serving box needs onnxruntime, tokenizers and numpy."""

from __future__ import annotations

from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.errors import ModelError
from nlu_deploy.runtime.modeling import check_vocabulary_fits, inference_tokenizer, load_tokenizer
from nlu_deploy.tasks import Task, onnx_backend, task_of, torch_backend


class MissingVariant(ModelError):
    """The directory has no file of the variant asked for."""


def load_predictor(model_dir: Path, variant: str | None = None, provider: str = "cpu"):
    """(predictor, description of the file it runs). predictor.predict(texts) gives one
    prediction per text: (label, score) for intents, a list of entities for a slot tagger,
    (label, score, entities) for a joint model; predictor.task formats them."""
    predictor, used, _ = load_task_predictor(model_dir, variant, provider)
    return predictor, used


def load_task_predictor(model_dir: Path, variant: str | None = None, provider: str = "cpu", threads: int | None = None):
    """(predictor, description of its file, task); `threads`: the runtime's intra-op threads
    (None: the runtime's default, every core)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir} is not a directory.")
    task: Task = task_of(model_dir)
    onnx_files = {p.name: p for p in model_dir.glob("*.onnx")}
    if not onnx_files:
        model = task.load_model(model_dir)
        tokenizer = load_tokenizer(str(model_dir))
        backend = torch_backend(model, tokenizer, tokenizer.model_max_length)
        return task.predictor(backend), f"PyTorch checkpoint {model_dir}", task
    recommended = artifacts.recommended_variant(model_dir) if variant is None else None
    if variant is None:  # what `run` chose to ship, else the fastest kind of file there is
        variant = recommended or next(
            name for name in [*artifacts.PREFERRED_ONNX_FILES, *sorted(onnx_files)] if name in onnx_files
        )
    try:
        return _variant_predictor(model_dir, variant, provider, threads, task, onnx_files)
    except MissingVariant as exc:
        if recommended is None:
            raise
        raise ModelError(
            f"{str(exc).rstrip('.')}; the name {recommended!r} came from {model_dir / artifacts.RECOMMENDATION} "
            "(pass --variant to use another file)."
        ) from None


def _variant_predictor(model_dir: Path, variant: str, provider: str, threads: int | None, task: Task, onnx_files):
    if variant.startswith(("openvino-", "pt2-")):  # another runtime's variant
        return _runtime_variant_predictor(model_dir, variant, provider, task, threads)
    path = (
        onnx_files.get(variant)
        or onnx_files.get(f"{variant}.onnx")
        or next((p for p in onnx_files.values() if artifacts.variant_name(p) == variant), None)
    )
    if path is None:
        raise MissingVariant(f"{model_dir} has no ONNX variant {variant!r} (files: {', '.join(sorted(onnx_files))}).")
    config = artifacts.read_model_config(model_dir, missing_ok=True)
    if "id2label" not in config:
        raise ModelError(f"{model_dir} has no config.json with id2label; export it with `nlu-deploy export`.")
    tokenizer = inference_tokenizer(model_dir)  # tokenizers only: this path never imports torch
    check_vocabulary_fits(tokenizer, config, model_dir)
    backend = onnx_backend(path, tokenizer, config, tokenizer.model_max_length, provider, threads)
    return task.predictor(backend), str(path), task


def _runtime_variant_predictor(model_dir: Path, variant: str, provider: str, task: Task, threads: int | None):
    """Another runtime's variant: OpenVINO's IR at its precision (CPU), or the AOTInductor
    package on the device it was compiled for (this one imports torch)."""
    from nlu_deploy.runtime.runtime_variants import find_runtime_variant

    found = find_runtime_variant(model_dir, variant)
    if found is None and variant.startswith("pt2-"):
        from nlu_deploy.runtime.aoti_runtime import PT2_FILE, pt2_problem

        if (model_dir / PT2_FILE).is_file() and pt2_problem(model_dir):
            raise ModelError(
                f"{model_dir / PT2_FILE} cannot be run: {pt2_problem(model_dir)}; export it again with --pt2."
            )
    if found is None:
        how = "--openvino" if variant.startswith("openvino-") else "--pt2"
        raise MissingVariant(f"{model_dir} has no variant {variant!r}; export it with {how}.")
    if provider != found.device:
        raise ModelError(f"{variant} runs on {found.device} with {found.runtime}; use --provider {found.device}.")
    config = artifacts.read_model_config(model_dir, missing_ok=True)
    tokenizer = inference_tokenizer(model_dir)
    check_vocabulary_fits(tokenizer, config, model_dir)
    backend = onnx_backend(found, tokenizer, config, tokenizer.model_max_length, provider, threads)
    precision = getattr(backend.session, "precision", found.precision)
    return task.predictor(backend), f"{found.path} with {found.runtime} ({precision})", task
