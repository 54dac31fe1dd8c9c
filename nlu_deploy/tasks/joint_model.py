"""The joint intent + slot model: one encoder, an intent head on the first token's final hidden
state (a decoder's last real token) and a slot head on every token (read on each word's first
sub-word), as in JointBERT (Chen et al., 2019). It is this project's own class (own_model.py), saved as a normal Hugging
Face directory with both label maps in config.json and loaded without remote code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from nlu_deploy.tasks.own_model import OwnHeadModel

ARCHITECTURE = "JointIntentSlotModel"  # config.json's architectures entry: how a joint checkpoint is known


@dataclass
class JointOutput(ModelOutput):
    loss: torch.Tensor | None = None
    intent_logits: torch.Tensor | None = None  # [batch, intents]
    slot_logits: torch.Tensor | None = None  # [batch, sequence, tags]


class JointIntentSlotModel(OwnHeadModel):
    def __init__(self, config, encoder=None):
        super().__init__(config, encoder)
        hidden = config.hidden_size
        self.intent_head = torch.nn.Linear(hidden, len(config.intent_id2label))
        self.slot_head = torch.nn.Linear(hidden, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> JointOutput:
        hidden = self.dropout(self.hidden_states(input_ids, attention_mask, token_type_ids))
        intent = self.intent_head(self.text_state(hidden, attention_mask))
        return JointOutput(intent_logits=intent, slot_logits=self.slot_head(hidden))

    @classmethod
    def for_training(
        cls, source: str, intents: list[str], tags: list[str], slot_loss_weight: float, trust_remote_code: bool = False
    ) -> JointIntentSlotModel:
        """The pretrained encoder with two fresh heads."""
        encoder = cls.pretrained_encoder(source, trust_remote_code)
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
