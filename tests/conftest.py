"""Tiny, local models and data for fast tests: nothing here downloads anything.

The tiny encoder is a 2-layer BERT with hidden size 32 and a WordPiece vocabulary built from
the demo dataset's own words, so it can actually learn the demo intents in seconds.
"""

from __future__ import annotations

import csv
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from nlu_deploy.data.demo import generate_demo_examples

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Four intents, two of them confusable (alarm vs timer), keep tiny-model tests quick.
TINY_INTENTS = ("set_alarm", "set_timer", "play_music", "get_weather")


# Runs the CLI with torch, transformers, optimum and onnx made unimportable: what a serving box
# without them sees (python -c TORCH_FREE_CLI COMMAND ...).
TORCH_FREE_CLI = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'transformers', 'optimum', 'onnx'):\n"
    "            raise ImportError(name + ' is blocked')\n"
    "sys.meta_path.insert(0, Block())\n"
    "from nlu_deploy.cli import main\n"
    "main()\n"
)


def build_tiny_encoder(directory: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for e in generate_demo_examples() for w in re.findall(r"\w+|[^\w\s]", e["text"].lower())})
    characters = sorted({c for w in words for c in w})
    vocab = SPECIAL_TOKENS + words + [f"##{c}" for c in characters if f"##{c}" not in words]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    return directory


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_rows(per_intent: int = 60, offset: int = 0) -> list[dict]:
    rows, counts = [], dict.fromkeys(TINY_INTENTS, 0)
    for example in generate_demo_examples():
        label = example["label"]
        if label in counts and counts[label] < per_intent + offset:
            counts[label] += 1
            if counts[label] > offset:
                rows.append(example)
    return rows


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def tiny_train_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", tiny_rows())


@pytest.fixture(scope="session")
def tiny_dev_csv(tmp_path_factory) -> Path:
    """Examples the tiny model was not trained on."""
    return write_csv(tmp_path_factory.mktemp("data") / "dev.csv", tiny_rows(per_intent=25, offset=60))


def train_tiny(tmp_path_factory, name: str, encoder: Path, train: Path, task: str = "text-classification") -> Path:
    """Six quick epochs of the tiny encoder: enough to learn the demo intents and slots."""
    from nlu_deploy.config import FinetuneConfig
    from nlu_deploy.training.loop import finetune

    output = tmp_path_factory.mktemp("checkpoints") / name
    finetune(
        FinetuneConfig(
            output=output, model=str(encoder), train=train, task=task, epochs=6, batch_size=8, lr=5e-3, max_length=32
        ),
        show_progress=False,
    )
    return output


def export_tiny(tmp_path_factory, name: str, checkpoint: Path) -> Path:
    """fp32, O2 and dynamic int8 files."""
    from nlu_deploy.config import ExportConfig
    from nlu_deploy.export.onnx_export import export

    output = tmp_path_factory.mktemp("exports") / name
    export(ExportConfig(model_dir=checkpoint, output=output, optimize="O2", quantize="dynamic"))
    return output


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_encoder, tiny_train_csv) -> Path:
    return train_tiny(tmp_path_factory, "tiny", tiny_encoder, tiny_train_csv)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    return export_tiny(tmp_path_factory, "tiny-onnx", tiny_checkpoint)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared datasets are not at {SHARED_DATA} (they are not part of the project)")
    return SHARED_DATA


def write_tagged_jsonl(path: Path, examples: list[dict], with_intents: bool = False) -> Path:
    """Words and BIO tags per row, and with `with_intents` the intent too (the joint task)."""
    from nlu_deploy.data.tables import write_jsonl

    write_jsonl(
        [
            {"tokens": e["tokens"], "tags": e["tags"], **({"intent": e["label"]} if with_intents else {})}
            for e in examples
        ],
        path,
    )
    return path


@pytest.fixture(scope="session")
def tiny_tagged_train(tmp_path_factory) -> Path:
    """500 demo sentences with BIO slot tags over all 16 slot types."""
    return write_tagged_jsonl(tmp_path_factory.mktemp("tagged") / "train.jsonl", generate_demo_examples()[:500])


@pytest.fixture(scope="session")
def tiny_tagged_dev(tmp_path_factory) -> Path:
    """Sentences the tiny tagger was not trained on."""
    return write_tagged_jsonl(tmp_path_factory.mktemp("tagged") / "dev.jsonl", generate_demo_examples()[500:650])


@pytest.fixture(scope="session")
def tiny_tagger(tmp_path_factory, tiny_encoder, tiny_tagged_train) -> Path:
    return train_tiny(tmp_path_factory, "tiny-tagger", tiny_encoder, tiny_tagged_train, "token-classification")


@pytest.fixture(scope="session")
def tiny_tagger_onnx(tmp_path_factory, tiny_tagger) -> Path:
    return export_tiny(tmp_path_factory, "tiny-tagger-onnx", tiny_tagger)


@pytest.fixture(scope="session")
def tiny_joint_train(tmp_path_factory) -> Path:
    """Demo sentences with their intent and BIO slot tags, every intent represented."""
    examples = generate_demo_examples()
    return write_tagged_jsonl(tmp_path_factory.mktemp("joint") / "train.jsonl", examples[::5], with_intents=True)


@pytest.fixture(scope="session")
def tiny_joint_dev(tmp_path_factory) -> Path:
    """Sentences the tiny joint model was not trained on."""
    examples = generate_demo_examples()
    return write_tagged_jsonl(tmp_path_factory.mktemp("joint") / "dev.jsonl", examples[2::25], with_intents=True)


@pytest.fixture(scope="session")
def tiny_joint(tmp_path_factory, tiny_encoder, tiny_joint_train) -> Path:
    return train_tiny(tmp_path_factory, "tiny-joint", tiny_encoder, tiny_joint_train, "joint")


@pytest.fixture(scope="session")
def tiny_joint_onnx(tmp_path_factory, tiny_joint) -> Path:
    return export_tiny(tmp_path_factory, "tiny-joint-onnx", tiny_joint)


# -- Triton's Python backend, as far as our Python models use it -------------------------------


class StubTensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class StubResponse:
    def __init__(self, output_tensors):
        self.tensors = {t.name(): t.as_numpy() for t in output_tensors}


class StubRequest:
    def __init__(self, **tensors):
        self.tensors = {name: StubTensor(name, value) for name, value in tensors.items()}


@pytest.fixture
def backend_stub(monkeypatch):
    """The slice of triton_python_backend_utils our models use."""
    stub = types.ModuleType("triton_python_backend_utils")
    stub.Tensor, stub.InferenceResponse = StubTensor, StubResponse
    stub.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)
