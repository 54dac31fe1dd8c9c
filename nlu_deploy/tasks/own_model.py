"""What this project's own model classes share (the joint model, the mean-pooling classifier):
a bare encoder rebuilt from config.json's model type with transformers' AutoModel (no remote
code), heads of our own, and a normal Hugging Face directory on disk (config.json,
model.safetensors, tokenizer), exported to ONNX by Optimum with the encoder family's own config.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from nlu_deploy.artifacts import WEIGHTS
from nlu_deploy.errors import ModelError
from nlu_deploy.runtime.model_families import family_of, first_real_or_last_real, fit_config
from nlu_deploy.runtime.modeling import (
    check_checkpoint_files,
    forget_trained_task,
    load_encoder_weights,
    own_checkpoint_encoder,
    quiet_transformers,
    refuse_pickle,
)
from nlu_deploy.tasks.base import dummy_shapes


class OwnHeadModel(torch.nn.Module):
    def __init__(self, config, encoder=None):
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config, **_no_pooler(config))
        self.dropout = torch.nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1) or 0.1)

    def hidden_states(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """The encoder's final hidden states, [batch, sequence, hidden]."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        takes_types = (
            family_of(self.config).token_types and "token_type_ids" in self.encoder.forward.__code__.co_varnames
        )
        if token_type_ids is not None and takes_types:
            inputs["token_type_ids"] = token_type_ids
        return self.encoder(**inputs).last_hidden_state

    def text_state(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """[batch, hidden]: the one state that stands for the whole text (the first token of an
        encoder, the last real token of a decoder)."""
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return first_real_or_last_real(hidden, attention_mask, family_of(self.config).decoder)

    @staticmethod
    def pretrained_encoder(source: str, trust_remote_code: bool = False):
        """The encoder of `source`: a bare encoder, a Hugging Face fine-tuned checkpoint or one of
        ours, without anything of the task it was trained for."""
        own = own_checkpoint_encoder(source)
        if own is not None:
            config, weights = own
            encoder = AutoModel.from_config(config, **_no_pooler(config))
            load_encoder_weights(encoder, weights, source)
        else:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
            encoder = AutoModel.from_pretrained(
                source, use_safetensors=True, trust_remote_code=trust_remote_code, **_no_pooler(config)
            )
        forget_trained_task(encoder.config)
        fit_config(encoder.config)
        return encoder

    @classmethod
    def from_pretrained(cls, directory: Path):
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
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
            str(directory / WEIGHTS),
            metadata={"format": "pt"},
        )


def new_own_model(build, source: str, allow_pickle: bool):
    """`build()`: one of our classes on the pretrained encoder at `source`, with fresh heads;
    a source that cannot be loaded gets one sentence."""
    quiet_transformers()
    refuse_pickle(source, allow_pickle)
    try:
        return build()
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not load model {source} ({str(exc).strip().splitlines()[0]}); pass a local "
            "directory with safetensors weights."
        ) from None


def load_own_model(cls, directory: Path):
    directory = check_checkpoint_files(directory)
    try:
        return cls.from_pretrained(directory)
    except Exception as exc:  # corrupt weights raise anything from OSError to SafetensorError
        raise ModelError(
            f"{directory} holds a checkpoint that cannot be loaded ({str(exc).strip().splitlines()[0]})."
        ) from None


def _no_pooler(config) -> dict:
    """Skip a pooler our heads never read: less work per call, nothing unused in the ONNX graph."""
    return {"add_pooling_layer": False} if family_of(config).pooler else {}


def export_own_model(model, tokenizer, out: Path, opset: int | None, outputs: dict[str, dict[int, str]]) -> None:
    """Optimum's exporter on one of our classes, with the encoder family's own ONNX config
    (inputs, dummy inputs, opset) and our outputs (name -> dynamic axes)."""
    from optimum.exporters.onnx.convert import export_pytorch
    from optimum.exporters.tasks import TasksManager

    constructor = TasksManager.get_exporter_config_constructor(
        "onnx", model_type=model.config.model_type, task="feature-extraction", library_name="transformers"
    )
    base = constructor.func if hasattr(constructor, "func") else constructor
    # Decoders' configs add position_ids, which the runtimes here never feed: rows are
    # right-padded, so the positions a decoder counts on its own are the right ones.
    model_inputs = property(lambda self: {k: v for k, v in base.inputs.fget(self).items() if k != "position_ids"})
    own_config = type("OwnOnnxConfig", (base,), {"outputs": property(lambda self: outputs), "inputs": model_inputs})
    onnx_config = own_config(model.config, task="feature-extraction")
    export_pytorch(
        model.eval(), onnx_config, opset or onnx_config.DEFAULT_ONNX_OPSET, out / "model.onnx",
        input_shapes=dummy_shapes(model.config) or None,
    )  # fmt: skip
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
