"""Running a classifier, ONNX or PyTorch, on raw text: tokenization with dynamic padding,
execution-provider selection that fails loudly, and checked ONNX loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlu_deploy.config import EXECUTION_PROVIDERS
from nlu_deploy.errors import ModelError, ProviderError


def check_onnx_file(path: Path) -> None:
    """Refuse files that are not valid ONNX before any runtime touches them."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist.")
    try:
        onnx.checker.check_model(str(path))  # by path: also works past protobuf's 2 GB limit
    except Exception as exc:  # the checker raises ValidationError, DecodeError, OSError...
        raise ModelError(f"{path} is not a valid ONNX model ({str(exc).strip().splitlines()[0]}).") from None


def load_graph(path: Path):
    """The graph of an ONNX file without its external weights (structure only), or the same
    one-sentence refusal as check_onnx_file when the file is not ONNX."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception:  # DecodeError, OSError...: let the checker word the refusal
        check_onnx_file(path)
        raise


@dataclass(frozen=True)
class TensorRTSettings:
    """TensorRT engine options. The optimization profile must cover every shape that will be
    run, or TensorRT rebuilds (or refuses) at run time; engines and timing data are cached."""

    cache_dir: Path | None = None
    fp16: bool = False
    min_shape: tuple[int, int] = (1, 1)  # (batch, sequence length)
    opt_shape: tuple[int, int] = (1, 128)
    max_shape: tuple[int, int] = (32, 128)

    def options(self, input_names: list[str]) -> dict:
        def shapes(shape: tuple[int, int]) -> str:
            return ",".join(f"{name}:{shape[0]}x{shape[1]}" for name in input_names)

        options = {
            "trt_fp16_enable": self.fp16,
            "trt_profile_min_shapes": shapes(self.min_shape),
            "trt_profile_opt_shapes": shapes(self.opt_shape),
            "trt_profile_max_shapes": shapes(self.max_shape),
        }
        if self.cache_dir is not None:
            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
            options.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=str(self.cache_dir),
                trt_timing_cache_enable=True,
                trt_timing_cache_path=str(self.cache_dir),
            )
        return options


def provider_options(
    provider: str,
    input_names: list[str],
    tensorrt: TensorRTSettings | None = None,
    tf32: bool = False,
    cuda_graph: bool = False,
) -> list:
    """The provider list for onnxruntime, the requested one first and CPU as the last resort.
    TF32 is set explicitly on CUDA (onnxruntime's default is on, PyTorch's is off), so that both
    runtimes make the same choice and the report can say which. cuda_graph: the session captures
    a CUDA graph per gpu_graph_id run option and replays it (inputs and outputs bound in place)."""
    cuda_settings = {"use_tf32": str(int(tf32)), **({"enable_cuda_graph": "1"} if cuda_graph else {})}
    cuda = (EXECUTION_PROVIDERS["cuda"], cuda_settings)
    if provider == "tensorrt":
        settings = (tensorrt or TensorRTSettings()).options(input_names)
        return [(EXECUTION_PROVIDERS["tensorrt"], settings), cuda, EXECUTION_PROVIDERS["cpu"]]
    if provider == "cuda":
        return [cuda, EXECUTION_PROVIDERS["cpu"]]
    return [EXECUTION_PROVIDERS["cpu"]]


def graph_ops(path: Path) -> set[tuple[str, str]]:
    """(domain, op type) of every node: tells dynamic int8 graphs and onnxruntime's fused
    contrib ops (domain com.microsoft) apart from plain ONNX."""
    return {(node.domain or "ai.onnx", node.op_type) for node in load_graph(path).node}


# onnxruntime's fused transformer ops: how many of each an optimized graph holds says which
# fusions a family got (Attention is the one that matters most for speed).
FUSED_OPS = (
    "Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
    "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "SkipSimplifiedLayerNormalization",
    "SimplifiedLayerNormalization", "RotaryEmbedding", "GroupQueryAttention",
    "PackedAttention", "PackedMultiHeadAttention", "RemovePadding", "RestorePadding",
)  # fmt: skip


def fused_op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in load_graph(path).node:
        if node.op_type in FUSED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


# fused ops whose fp16 (or packed) kernels only the CUDA provider has
_CUDA_ONLY_OPS = ("PackedAttention", "PackedMultiHeadAttention", "RemovePadding", "RestorePadding")


def cuda_only_graph(path: Path) -> bool:
    """A graph onnxruntime's CPU provider cannot run: packing mode, or fused attention in fp16."""
    import onnx

    graph = load_graph(path)
    ops = {node.op_type for node in graph.node if node.domain == "com.microsoft"}
    fp16 = any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    return bool(ops & set(_CUDA_ONLY_OPS)) or (fp16 and bool(ops & {"Attention", "MultiHeadAttention"}))


def is_dynamic_int8(path: Path) -> bool:
    return any(op in ("DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger") for _, op in graph_ops(path))


def has_contrib_ops(path: Path) -> bool:
    return any(domain == "com.microsoft" for domain, _ in graph_ops(path))


def _graph_input_names(path: Path) -> list[str]:
    graph = load_graph(path)
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def create_session(
    path: Path,
    provider: str = "cpu",
    threads: int | None = None,
    fallback: bool | None = None,
    tensorrt: TensorRTSettings | None = None,
    tf32: bool = False,
    cuda_graph: bool = False,
):
    """An InferenceSession that really runs on `provider`, or a ProviderError saying why not.

    onnxruntime silently falls back to CPU when CUDA cannot start; a benchmark or a deployment
    check that did that would report CPU numbers under a GPU label, so we check, and fall back
    only when the user asked for it (the report then names the provider that really ran).
    `fallback` None: the command has no --fallback, so the error does not suggest it.
    """
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ModelError(f"{path} does not exist.")
    wanted = EXECUTION_PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted not in available and not fallback:
        raise ProviderError(
            f"{provider} was asked for but this onnxruntime build has no {wanted} (available: {', '.join(available)})."
        )
    if provider != "cpu":
        from nlu_deploy.runtime.machine import load_cuda_libraries

        load_cuda_libraries()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: provider start-up chatter is not for users
    if threads:
        options.intra_op_num_threads = threads
    # Only TensorRT's profile needs the input names before the session exists; reading them
    # imports onnx, which predict's light path (no torch, no onnx) avoids.
    input_names = _graph_input_names(path) if provider == "tensorrt" else []
    providers = [
        p
        for p in provider_options(provider, input_names, tensorrt, tf32, cuda_graph)
        if (p[0] if isinstance(p, tuple) else p) in available
    ]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        check_onnx_file(path)  # the checker's sentence, when the file itself is broken
        raise ModelError(f"onnxruntime cannot load {path} ({str(exc).strip().splitlines()[0]}).") from None
    if session.get_providers()[0] != wanted and not fallback:
        from nlu_deploy.runtime.machine import provider_problem

        instead = "pass --fallback to run on CPU instead" if fallback is False else "use --provider cpu to run on CPU"
        raise ProviderError(
            f"{provider} was asked for but {wanted} could not start on this machine; {instead}. "
            f"{provider_problem(wanted)}"
        )
    return session


@dataclass
class Encoded:
    """Token ids for a list of texts, unpadded, plus which were cut at max_length."""

    features: list[dict[str, list[int]]]
    truncated_rows: list[int]

    @property
    def truncated(self) -> int:
        return len(self.truncated_rows)


def encode(tokenizer, texts: list[str], max_length: int) -> Encoded:
    full = tokenizer(texts, truncation=False, verbose=False)
    long_rows = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_length]
    features = [{key: full[key][i] for key in full.keys()} for i in range(len(texts))]
    if long_rows:
        cut = tokenizer([texts[i] for i in long_rows], truncation=True, max_length=max_length)
        for position, row in enumerate(long_rows):
            features[row] = {key: cut[key][position] for key in cut.keys()}
    return Encoded(features, long_rows)


def length_sorted_batches(encoded: Encoded, batch_size: int) -> list[list[int]]:
    """Indices grouped so that each batch holds texts of similar length (less padding)."""
    order = sorted(range(len(encoded.features)), key=lambda i: len(encoded.features[i]["input_ids"]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_batch(
    features: list[dict[str, list[int]]], pad_token_id: int, width: int | None = None
) -> dict[str, np.ndarray]:
    """Right-pad one batch to its longest row, or to `width` (the tokenizer's own pad() warns
    on fast tokenizers)."""
    width = width or max(len(f["input_ids"]) for f in features)
    batch = {}
    for key in features[0]:
        fill = pad_token_id if key == "input_ids" else 0
        batch[key] = np.array([f[key] + [fill] * (width - len(f[key])) for f in features], dtype=np.int64)
    return batch


# integer input types a graph may declare besides int64 (export --gpu-fp16 writes int32 ids)
_INTEGER_INPUT_TYPES = {"tensor(int32)": np.int32}


def graph_feed(inputs, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch as a graph takes it: each of the graph's inputs (`session.get_inputs()`) by name,
    zeros for token types the tokenizer did not give, in the integer type the graph declares
    (every tokenizer here gives int64; the GPU graphs take int32, half the bytes to copy)."""
    feed = {}
    for info in inputs:
        value = batch[info.name] if info.name in batch else np.zeros_like(batch["input_ids"])
        dtype = _INTEGER_INPUT_TYPES.get(getattr(info, "type", None))
        feed[info.name] = value.astype(dtype) if dtype is not None and value.dtype != dtype else value
    return feed


class TextClassifier:
    """Shared logic: tokenize, batch by length, run, restore the input order."""

    id2label: dict[int, str]

    def __init__(
        self, tokenizer, id2label: dict[int, str], max_length: int, intent_id2label: dict[int, str] | None = None
    ):
        self.tokenizer = tokenizer
        self.id2label = {int(k): v for k, v in id2label.items()}
        # a joint model's second label map (id2label then holds its slot tags)
        self.intent_id2label = {int(k): v for k, v in (intent_id2label or {}).items()}
        self.max_length = max_length
        self.last_truncated = 0
        self.last_truncated_rows: list[int] = []  # which texts of the last call were cut

    def run_outputs(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of the model by name (`logits`; a joint model's `intent_logits` and
        `slot_logits`)."""
        raise NotImplementedError

    def run_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """The first output: the logits of a single-head model."""
        return next(iter(self.run_outputs(batch).values()))

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        encoded = encode(self.tokenizer, texts, self.max_length)
        self.last_truncated, self.last_truncated_rows = encoded.truncated, encoded.truncated_rows
        result = np.zeros((len(texts), len(self.id2label)), dtype=np.float32)
        for indices in length_sorted_batches(encoded, batch_size):
            padded = pad_batch([encoded.features[i] for i in indices], self.tokenizer.pad_token_id or 0)
            result[indices] = self.run_batch(padded)
        return result

    def predict(self, texts: list[str], batch_size: int = 64) -> list[tuple[str, float]]:
        logits = self.logits(texts, batch_size)
        probs = softmax(logits)
        best = probs.argmax(axis=-1)
        return [(self.id2label[int(b)], float(p[b])) for b, p in zip(best, probs)]


class OnnxTextClassifier(TextClassifier):
    def __init__(
        self,
        onnx_path: Path,
        tokenizer,
        id2label: dict[int, str],
        max_length: int,
        provider: str = "cpu",
        threads: int | None = None,
        intent_id2label: dict | None = None,
        session=None,
    ):
        """session: an already made session (an OpenVinoSession); else onnxruntime's for onnx_path."""
        super().__init__(tokenizer, id2label, max_length, intent_id2label)
        self.session = session or create_session(onnx_path, provider, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ModelError(f"{onnx_path} expects inputs this tool does not produce: {', '.join(sorted(unknown))}.")
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs]
        label_output = next((o for o in outputs if o.name in ("logits", "slot_logits")), outputs[0])
        if isinstance(label_output.shape[-1], int) and label_output.shape[-1] != len(self.id2label):
            raise ModelError(
                f"{onnx_path} returns {label_output.shape[-1]} scores but its config names {len(self.id2label)} labels."
            )

    def run_outputs(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, graph_feed(self.session.get_inputs(), batch))))


class TorchTextClassifier(TextClassifier):
    def __init__(self, model, tokenizer, max_length: int, device: str = "cpu"):
        super().__init__(tokenizer, model.config.id2label, max_length, getattr(model.config, "intent_id2label", None))
        self.device = device
        self.model = model.to(device).eval()

    def run_outputs(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
            output = self.model(**tensors)
            return {
                name: value.float().cpu().numpy()
                for name, value in output.items()
                if name.endswith("logits") and value is not None
            }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
