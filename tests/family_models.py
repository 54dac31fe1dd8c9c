"""Random-weight models of the encoder and decoder families nlu-deploy supports, built from their
configs with tokenizers of their own kind trained here on the demo texts (or any texts): nothing
is downloaded. Tests build tiny ones; bench/families_cpu.py builds full-size shapes.

Tokenizer kinds, as the families' published tokenizers are:
- WordPiece (BERT): the tests' conftest.build_tiny_encoder;
- SentencePiece unigram with a Metaspace pre-tokenizer (DeBERTa-v3, ALBERT, CamemBERT);
- byte-level BPE (GPT-2, ModernBERT's OLMo tokenizer), and byte-level BPE behind a split regex
  (Qwen2, as Llama 3 does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# Qwen2's pre-tokenizer regex (contractions, letters, single digits, punctuation, spaces), written
# out from the tokenizer's documented behaviour.
_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class FamilyShape:
    """How to build one family: its tokenizer kind, its special tokens and its config."""

    model_type: str
    tokenizer_kind: str  # "unigram", "byte-bpe", "split-byte-bpe"
    tokenizer_class: str  # the transformers class that wraps the trained tokenizer
    specials: dict[str, str]  # transformers' special-token keyword -> token
    template: tuple[str, str] | None  # (first, last) tokens around a text, or None (decoders)
    lowercase: bool = False
    tiny: dict = field(default_factory=dict)  # config overrides of the tiny test model
    full: dict = field(default_factory=dict)  # a published base model's shape (random weights)


_BERT_SPECIALS = {
    "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"
}  # fmt: skip
_ROBERTA_SPECIALS = {
    "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
    "unk_token": "<unk>", "mask_token": "<mask>",
}  # fmt: skip
_TINY_ENCODER = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "max_position_embeddings": 128,
}  # fmt: skip

FAMILIES: dict[str, FamilyShape] = {
    "deberta-v2": FamilyShape(
        "deberta-v2", "unigram", "DebertaV2TokenizerFast",
        {**_BERT_SPECIALS, "bos_token": "[CLS]", "eos_token": "[SEP]"}, ("[CLS]", "[SEP]"),
        # DeBERTa-v3's attention: relative positions in buckets, no absolute positions, no token types
        tiny={**_TINY_ENCODER, "type_vocab_size": 0, "relative_attention": True, "position_buckets": 32,
              "pos_att_type": ["p2c", "c2p"], "position_biased_input": False, "norm_rel_ebd": "layer_norm",
              "share_att_key": True, "max_relative_positions": -1},
        full={"vocab_size": 128100, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 0,
              "relative_attention": True, "position_buckets": 256, "pos_att_type": ["p2c", "c2p"],
              "position_biased_input": False, "norm_rel_ebd": "layer_norm", "share_att_key": True,
              "max_relative_positions": -1},
    ),
    "modernbert": FamilyShape(
        "modernbert", "byte-bpe", "PreTrainedTokenizerFast", _BERT_SPECIALS, ("[CLS]", "[SEP]"),
        tiny={**_TINY_ENCODER, "global_attn_every_n_layers": 2, "local_attention": 16},
        full={"vocab_size": 50368, "hidden_size": 768, "num_hidden_layers": 22, "num_attention_heads": 12,
              "intermediate_size": 1152, "max_position_embeddings": 8192, "global_attn_every_n_layers": 3,
              "local_attention": 128},
    ),
    "albert": FamilyShape(
        "albert", "unigram", "AlbertTokenizerFast",
        {**_BERT_SPECIALS, "pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "[CLS]", "eos_token": "[SEP]"},
        ("[CLS]", "[SEP]"), lowercase=True,
        tiny={**_TINY_ENCODER, "embedding_size": 16},
        full={"vocab_size": 30000, "embedding_size": 128, "hidden_size": 768, "num_hidden_layers": 12,
              "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512},
    ),
    "camembert": FamilyShape(
        "camembert", "unigram", "CamembertTokenizerFast", _ROBERTA_SPECIALS, ("<s>", "</s>"),
        tiny={**_TINY_ENCODER, "max_position_embeddings": 130},
        full={"vocab_size": 32005, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "max_position_embeddings": 514},
    ),
    "roberta": FamilyShape(
        "roberta", "byte-bpe", "RobertaTokenizerFast", _ROBERTA_SPECIALS, ("<s>", "</s>"),
        tiny={**_TINY_ENCODER, "max_position_embeddings": 130},
        full={"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "max_position_embeddings": 514},
    ),
    "gpt2": FamilyShape(
        "gpt2", "byte-bpe", "GPT2TokenizerFast",
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, None,
        tiny={"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128},
        full={"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024},
    ),
    "qwen2": FamilyShape(
        "qwen2", "split-byte-bpe", "Qwen2TokenizerFast",
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": None}, None,
        tiny={**_TINY_ENCODER, "num_key_value_heads": 1, "tie_word_embeddings": True},
        # Qwen2.5-0.5B's shape
        full={"vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768,
              "tie_word_embeddings": True},
    ),
}  # fmt: skip


def demo_texts() -> list[str]:
    from nlu_deploy.data.demo import generate_demo_examples

    return [example["text"] for example in generate_demo_examples()]


def train_tokenizer(shape: FamilyShape, texts: list[str], vocab_size: int):
    """A `tokenizers` tokenizer of the family's kind, trained on `texts`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(dict.fromkeys(t for t in shape.specials.values() if t))
    if shape.tokenizer_kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if shape.lowercase else [])
        tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token=shape.specials["unk_token"]
        )
    else:
        tokenizer = Tokenizer(models.BPE())
        if shape.tokenizer_kind == "split-byte-bpe":
            tokenizer.normalizer = normalizers.NFC()
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(_SPLIT_REGEX), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
        else:
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    tokenizer.train_from_iterator(texts, trainer)
    if shape.template:
        first, last = shape.template
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}",
            pair=f"{first} $A {last} $B:1 {last}:1",
            special_tokens=[(first, tokenizer.token_to_id(first)), (last, tokenizer.token_to_id(last))],
        )
    return tokenizer


def build_family_model(
    family: str,
    directory: Path,
    texts: list[str] | None = None,
    size: str = "tiny",
    vocab_size: int = 600,
    overrides: dict | None = None,
) -> Path:
    """A bare model of `family` (random weights) with its tokenizer, saved as a Hugging Face
    directory that `finetune --model` reads. size "full": the published base model's shape;
    `overrides`: config values on top of the size's."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel

    shape = FAMILIES[family]
    directory.mkdir(parents=True, exist_ok=True)
    trained = train_tokenizer(shape, texts or demo_texts(), vocab_size)
    wrapper = getattr(transformers, shape.tokenizer_class)
    tokenizer = wrapper(
        tokenizer_object=trained, model_max_length=512, **{k: v for k, v in shape.specials.items() if v}
    )
    tokenizer.save_pretrained(directory)
    overrides = {**(shape.tiny if size == "tiny" else shape.full), **(overrides or {})}
    overrides["vocab_size"] = max(overrides.get("vocab_size", 0), len(tokenizer))
    token_ids = {
        f"{name}_id": tokenizer.convert_tokens_to_ids(tokenizer_token)
        for name, tokenizer_token in (
            ("pad_token", tokenizer.pad_token), ("bos_token", tokenizer.bos_token), ("eos_token", tokenizer.eos_token),
            ("cls_token", tokenizer.cls_token), ("sep_token", tokenizer.sep_token),
        )
        if tokenizer_token is not None
    }  # fmt: skip
    config = AutoConfig.for_model(shape.model_type, **overrides, **token_ids)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(directory, safe_serialization=True)
    return directory


def words_of(text: str) -> list[str]:
    return re.findall(r"\S+", text)
