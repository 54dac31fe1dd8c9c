"""An intent classifier that reads the mean of the encoder's final hidden states over the real
tokens (`finetune --pooling mean`), where Hugging Face's sequence-classification heads read one
token (BERT's pooled first token). Sentence-transformers checkpoints, the default MiniLM among
them, were trained to put a sentence's meaning in exactly that mean (their 1_Pooling config says
so), so a head on it starts from features made for sentences. It is this project's own class
(own_model.py), loaded without remote code; its ONNX graph has the usual `logits` output, so
every stage after finetune treats it as any intent model.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from nlu_deploy.tasks.own_model import OwnHeadModel

ARCHITECTURE = "MeanPoolingClassifier"  # config.json's architectures entry: how such a checkpoint is known


class MeanPoolingClassifier(OwnHeadModel):
    def __init__(self, config, encoder=None):
        super().__init__(config, encoder)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # padding adds nothing to the mean
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))

    @classmethod
    def for_training(cls, source: str, labels: list[str], trust_remote_code: bool = False) -> MeanPoolingClassifier:
        """The pretrained encoder with a fresh head on its mean-pooled output."""
        encoder = cls.pretrained_encoder(source, trust_remote_code)
        config = encoder.config
        config.architectures = [ARCHITECTURE]
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        config.nlu_pooling = "mean"
        return cls(config, encoder)
