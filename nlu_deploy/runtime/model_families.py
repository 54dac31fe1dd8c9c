"""What differs between the model families nlu-deploy fine-tunes and deploys, in one table.

The stages never ask which family a model is; they ask its entry (Optimum's model_configs.py
and NormalizedConfig do the same for its exporters). A new family is one entry here plus a tiny
random model in tests/family_models.py; docs/model-families.md says what each gets, measured.

Why each setting exists:
- `decoder`: causal attention, so the intent is read from the last real token (the only one
  that has seen the whole text), and a pad token must exist (GPT-2 ships without one; its end
  of text token serves). Slot tags of a decoder see only the words to their left.
- `words_after_space`: byte-level BPE vocabularies (GPT-2, RoBERTa, ModernBERT, Qwen2) hold a
  word after a space as its own token ("Ġme"); words handed over one by one (slot tagging) are
  otherwise read as if glued to the word before, which costs accuracy (ModernBERT issue #149).
- `optimizer`: the model type onnxruntime's transformer optimizer fuses this family as, None
  where it has no fusions for it (Qwen2: Optimum's ORTOptimizer raises KeyError) or where running
  it costs more than it gives (DeBERTa-v3: no attention fusion, and minutes and gigabytes at base size).
- `config_fixes`: settings that training and export need (ModernBERT compiles its layers on
  its own unless told not to, which torch.onnx cannot trace).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from nlu_deploy.errors import ModelError


@dataclass(frozen=True)
class ModelFamily:
    name: str  # as users know it, in messages and docs
    model_types: tuple[str, ...]  # config.json's model_type values
    decoder: bool = False
    words_after_space: bool = False
    pooler: bool = False  # AutoModel builds a pooler our heads never read (add_pooling_layer=False skips it)
    # False where the model takes no token types (ModernBERT), or would misread them (GPT-2 adds
    # token type ids through its word embeddings): the tokenizer stops producing them
    token_types: bool = True
    layers_fixed: str | None = None  # why distill cannot drop this family's layers, where it cannot
    optimizer: str | None = "bert"
    no_optimizer_why: str = ""  # with optimizer None: the reason export gives
    config_fixes: dict = field(default_factory=dict)
    # one sentence for the report where dynamic int8 is known to be risky for the family
    int8_caution: str | None = None

    def __post_init__(self) -> None:
        # export names the reason in its report; an entry without one would print an empty sentence
        if self.optimizer is None and not self.no_optimizer_why:
            raise ValueError(f"the {self.name} family entry has no optimizer and no no_optimizer_why")


FAMILIES = (
    ModelFamily("BERT", ("bert",), pooler=True),
    ModelFamily("RoBERTa", ("roberta", "xlm-roberta"), words_after_space=True, pooler=True),
    ModelFamily("CamemBERT", ("camembert",), pooler=True),
    ModelFamily("DistilBERT", ("distilbert",), token_types=False),
    ModelFamily("ELECTRA", ("electra",)),
    ModelFamily("MPNet", ("mpnet",), pooler=True),
    ModelFamily(
        "ALBERT", ("albert",), pooler=True,
        layers_fixed="it applies one shared layer again and again, so there are no separate layers to keep",
    ),
    ModelFamily(
        "DeBERTa-v2/v3", ("deberta-v2",), optimizer=None,
        no_optimizer_why="onnxruntime's optimizer fuses no attention of DeBERTa's disentangled attention (only "
        "its LayerNorms and GELUs, measured on a tiny model), and on deberta-v3-base it ran 12 minutes and grew "
        "to 17 GB without finishing (2026-12-07)",
    ),
    ModelFamily(
        "ModernBERT", ("modernbert",), words_after_space=True, token_types=False,
        config_fixes={"reference_compile": False},
        layers_fixed="its first layer has no attention norm and its layers alternate local and global "
        "attention by position, so a student of kept layers would not be the same network",
    ),
    ModelFamily(
        "GPT-2", ("gpt2",), decoder=True, words_after_space=True, token_types=False, optimizer="gpt2",
        int8_caution="dynamic int8 is known to cost decoders accuracy (onnxruntime issue #18430)",
    ),
    ModelFamily(
        "Qwen2", ("qwen2",), decoder=True, words_after_space=True, token_types=False, optimizer=None,
        no_optimizer_why="onnxruntime's transformer optimizer has no fusions for Qwen2 (Optimum's ORTOptimizer "
        "raises KeyError for it)",
        int8_caution="dynamic int8 is known to cost decoders accuracy (onnxruntime issue #18430)",
    ),
)  # fmt: skip
_BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_of(config) -> ModelFamily:
    """The entry of a model config (a transformers config or config.json's dict)."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    family = _BY_MODEL_TYPE.get(model_type)
    if model_type is None:
        raise ModelError(
            "its config.json has no model_type, so its architecture is unknown; give a config.json that names "
            f"one of {', '.join(supported_model_types())}."
        )
    if family is None:
        raise ModelError(
            f"the model is a {model_type!r} model; nlu-deploy handles the families "
            f"{', '.join(supported_model_types())} (docs/model-families.md)."
        )
    return family


def check_remote_code(config: dict, source: str, trust_remote_code: bool) -> None:
    """A config.json with `auto_map` runs the Python files it names instead of transformers' own
    classes, even when its model_type names a known family (JinaBERT says "bert")."""
    auto_map = config.get("auto_map")
    if auto_map and not trust_remote_code:
        code = sorted({str(entry).split("--")[-1].split(".")[0] + ".py" for entry in _flat_values(auto_map)})
        raise ModelError(
            f"{source} asks to run its own code ({', '.join(code)}, through config.json's auto_map) "
            "instead of transformers' classes; pass --trust-remote-code only if you have read that code."
        )


def _flat_values(mapping: dict) -> list[str]:
    values = []
    for value in mapping.values():
        values.extend(value if isinstance(value, list | tuple) else [value])
    return [v for v in values if v]


def fit_config(config, pad_token_id: int | None = None) -> None:
    """Settings training and export need, written into the config (and so into the checkpoint).
    pad_token_id: the tokenizer's, which Hugging Face's decoder heads compare against to find
    each row's last real token: they must agree."""
    family = family_of(config)
    for key, value in family.config_fixes.items():
        setattr(config, key, value)
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id


def fit_tokenizer(tokenizer, config) -> None:
    """A pad token for decoders that have none, and pre-split words read as after a space for
    byte-level BPE. The tokenizer saved with the checkpoint carries both (its tokenizer.json),
    so export, predict without torch and Triton tokenize exactly as training did."""
    family = family_of(config)
    if family.decoder and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError("this decoder's tokenizer has neither a pad token nor an end-of-text token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token
    if family.decoder:
        tokenizer.padding_side = "right"  # the last real token is found from the mask's length
    if family.words_after_space:
        _read_words_after_space(tokenizer)
    if not family.token_types:
        tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
        tokenizer.init_kwargs["model_input_names"] = tokenizer.model_input_names


def _read_words_after_space(tokenizer) -> None:
    """A top-level ByteLevel pre-tokenizer takes add_prefix_space (the documented setting). One
    inside a sequence (Qwen2's split regex, then ByteLevel) would prefix every piece the regex
    cut, punctuation too; a Prepend normalizer runs once per word instead, and once per text."""
    from tokenizers import normalizers, pre_tokenizers

    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer else {}
    if state.get("type") == "ByteLevel":
        state.pop("type")
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(**{**state, "add_prefix_space": True})
    elif any(step.get("type") == "ByteLevel" for step in state.get("pretokenizers", [])):
        if "Prepend" not in (backend.normalizer.__getstate__().decode() if backend.normalizer else ""):
            steps = [backend.normalizer] if backend.normalizer else []
            backend.normalizer = normalizers.Sequence([*steps, normalizers.Prepend(" ")])
    else:
        return  # not byte-level (a RoBERTa-family model with a SentencePiece tokenizer, say)
    tokenizer.add_prefix_space = True  # transformers' byte-level classes check it for split words
    tokenizer.init_kwargs["add_prefix_space"] = True


def first_real_or_last_real(hidden, attention_mask, decoder: bool):
    """[batch, hidden]: the first token's state (encoders: [CLS] or <s>), or for a decoder the
    last real token's (rows are right-padded, so it sits at the mask's length minus one)."""
    import torch

    if not decoder:
        return hidden[:, 0]
    last = attention_mask.sum(-1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
