"""Loading the deployed model for `predict`: an ONNX export directory or a PyTorch checkpoint,
as an intent classifier or a slot tagger, whichever head the model has."""

from __future__ import annotations

from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.errors import ModelError
from nlu_deploy.modeling import checkpoint_task, load_checkpoint, load_tokenizer
from nlu_deploy.runtime import OnnxTextClassifier, TextClassifier, TorchTextClassifier
from nlu_deploy.tagging import WordTagger


def load_predictor(model_dir: Path, variant: str | None = None,
                   provider: str = "cpu") -> tuple[TextClassifier | WordTagger, str]:
    """The classifier (or tagger) and a description of which file it runs. Its predict(texts)
    gives (label, score) per text, or a list of entities per text for a tagger."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir} is not a directory.")
    tagging = checkpoint_task(model_dir) == "token-classification"
    onnx_files = {p.name: p for p in model_dir.glob("*.onnx")}
    if not onnx_files:
        model = load_checkpoint(model_dir)
        tokenizer = load_tokenizer(str(model_dir))
        backend = TorchTextClassifier(model, tokenizer, tokenizer.model_max_length)
        return (WordTagger(backend) if tagging else backend), f"PyTorch checkpoint {model_dir}"
    if variant is None:
        variant = next(name for name in [*artifacts.PREFERRED_ONNX_FILES, *sorted(onnx_files)] if name in onnx_files)
    path = onnx_files.get(variant) or onnx_files.get(f"{variant}.onnx") or next(
        (p for p in onnx_files.values() if artifacts.variant_name(p) == variant), None)
    if path is None:
        raise ModelError(f"{model_dir} has no ONNX variant {variant!r} (files: {', '.join(sorted(onnx_files))}).")
    config = artifacts.read_json(model_dir / "config.json") if (model_dir / "config.json").exists() else {}
    if "id2label" not in config:
        raise ModelError(f"{model_dir} has no config.json with id2label; export it with `nlu-deploy export`.")
    tokenizer = load_tokenizer(str(model_dir))
    backend = OnnxTextClassifier(path, tokenizer, config["id2label"], tokenizer.model_max_length, provider)
    return (WordTagger(backend) if tagging else backend), str(path)
