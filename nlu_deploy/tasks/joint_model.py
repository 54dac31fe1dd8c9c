"""The joint intent + slot model: one encoder, an intent head on the first token's final hidden
state and a slot head on every token (read on each word's first sub-word), as in JointBERT
(Chen et al., 2019). It is this project's own class, saved as a normal Hugging Face directory
(config.json with both label maps, model.safetensors, tokenizer) and loaded without remote
code: the encoder is rebuilt from config.json's model type with transformers' AutoModel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel
from transformers.utils import ModelOutput

from nlu_deploy.artifacts import WEIGHTS

ARCHITECTURE = "JointIntentSlotModel"  # config.json's architectures entry: how a joint checkpoint is known


@dataclass
class JointOutput(ModelOutput):
    loss: torch.Tensor | None = None
    intent_logits: torch.Tensor | None = None  # [batch, intents]
    slot_logits: torch.Tensor | None = None  # [batch, sequence, tags]


class JointIntentSlotModel(torch.nn.Module):
    def __init__(self, config, encoder=None):
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else _bare_encoder(config)
        hidden = config.hidden_size
        self.dropout = torch.nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1) or 0.1)
        self.intent_head = torch.nn.Linear(hidden, len(config.intent_id2label))
        self.slot_head = torch.nn.Linear(hidden, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> JointOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in self.encoder.forward.__code__.co_varnames:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.dropout(self.encoder(**inputs).last_hidden_state)
        return JointOutput(intent_logits=self.intent_head(hidden[:, 0]), slot_logits=self.slot_head(hidden))

    @classmethod
    def for_training(cls, source: str, intents: list[str], tags: list[str], slot_loss_weight: float,
                     trust_remote_code: bool = False) -> JointIntentSlotModel:
        """The pretrained encoder with two fresh heads."""
        encoder = AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=trust_remote_code,
                                            **_no_pooler(source))
        config = encoder.config
        config.architectures = [ARCHITECTURE]
        config.nlu_task = "joint"
        # id2label / label2id are the slot tags, so tools that read a tagger's config read these
        # the same way; the intents get their own pair of maps.
        config.id2label = dict(enumerate(tags))
        config.label2id = {tag: i for i, tag in enumerate(tags)}
        config.intent_id2label = {str(i): intent for i, intent in enumerate(intents)}
        config.intent_label2id = {intent: i for i, intent in enumerate(intents)}
        config.slot_loss_weight = slot_loss_weight
        return cls(config, encoder)

    @classmethod
    def from_pretrained(cls, directory: Path) -> JointIntentSlotModel:
        from safetensors.torch import load_file

        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
        model = cls(config)
        model.load_state_dict(load_file(str(Path(directory) / WEIGHTS)))
        return model.eval()

    def save_pretrained(self, directory: Path, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        # contiguous copies: safetensors refuses views that share memory (tied weights)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(directory / WEIGHTS), metadata={"format": "pt"})


# Encoder classes that build a pooler the joint model never reads, and take an option to skip it
# (less work per call, nothing unused in the ONNX graph).
_POOLED_ENCODERS = ("bert", "roberta", "xlm-roberta", "mpnet")


def _no_pooler(source: str) -> dict:
    return {"add_pooling_layer": False} if AutoConfig.from_pretrained(source).model_type in _POOLED_ENCODERS else {}


def _bare_encoder(config):
    return AutoModel.from_config(config, **({"add_pooling_layer": False} if config.model_type in _POOLED_ENCODERS
                                            else {}))
