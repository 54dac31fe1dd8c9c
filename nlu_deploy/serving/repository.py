"""A Triton Inference Server model repository for an exported model of any task: the ONNX model
on the onnxruntime backend (or a Python-backend onnxruntime runner), a Python-backend tokenizer and post-processor, and an ensemble that
chains them so clients send raw text and get the task's answer back: LABEL and SCORE for
intents, ENTITIES (JSON) for slots, all three for a joint model. What differs between tasks
(word-level tokenization, the post-processor and its outputs) comes from the task."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from nlu_deploy import artifacts
from nlu_deploy.config import TRITON_LAYOUTS
from nlu_deploy.errors import ConfigError, ModelError
from nlu_deploy.runtime.aoti_runtime import PT2_FACTS, PT2_FILE, pt2_variants
from nlu_deploy.tasks import task_of

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass(frozen=True)
class TritonOptions:
    name: str = "nlu"
    device: str = "cpu"  # cpu | gpu: where the ONNX model's instances run
    instances: int = 1
    max_batch_size: int = 64
    queue_delay_us: int = 2000  # dynamic batching waits at most 2 ms to fill a batch
    dynamic_batching: bool = True  # off: the model runs each request as it comes (serve-bench's baseline)
    preferred_batch_sizes: tuple[int, ...] = ()  # the batcher sends a batch at once when it reaches one
    helper_instances: int = 1  # instances of the tokenizer and the post-processor (Python models)
    tensorrt: bool = False  # gpu only: let onnxruntime hand the graph to TensorRT
    tensorrt_fp16: bool = True
    # The tokenizer pads every request to the smallest of these lengths that holds it (capped at
    # the model's max length): Triton's dynamic batcher only merges requests whose tensors have
    # the same shape, so per-request padding would leave it almost nothing to batch. Empty: each
    # request is padded to its own longest text (no buckets).
    length_buckets: tuple[int, ...] = (16, 32, 64, 128)
    # onnxruntime: Triton's onnxruntime backend (NVIDIA's containers). python: a Python-backend
    # model running the same file with onnxruntime on CPU, for servers without that backend
    # (the tritonserver in the nvidia-pytriton wheel); the tests serve with it.
    onnx_backend: str = "onnxruntime"
    # Which runtime the model runs on: onnxruntime (the ONNX file), openvino (the export's
    # OpenVINO IR: Triton's OpenVINO backend, or with onnx_backend python the Python-backend
    # substitute that runs the IR with the openvino package), at openvino_variant's precision, or
    # pt2 (the AOTInductor package, in the pipeline layout's Python model, with torch there).
    runtime: str = "onnxruntime"
    openvino_variant: str = "openvino-f32"
    # ensemble: tokenizer, model and post-processor as three models chained by a Triton ensemble
    # (the model on any backend; a client that tokenizes elsewhere can call {name}_model itself).
    # pipeline: one Python-backend model that tokenizes, runs the file and decodes in one process.
    layout: str = "auto"  # auto: pipeline with the python ONNX backend on CPU, else ensemble
    threads: int = 0  # intra-op threads of a Python-backend runner (0: the runtime's default)

    def __post_init__(self):
        check_triton_name("model name", self.name)
        if self.onnx_backend not in ("onnxruntime", "python"):
            raise ConfigError(f"the ONNX backend must be onnxruntime or python, not {self.onnx_backend!r}.")
        if self.layout == "auto":  # resolved here, so that every reader sees the layout written
            pipeline = self.onnx_backend == "python"
            object.__setattr__(self, "layout", "pipeline" if pipeline else "ensemble")
        if self.layout not in TRITON_LAYOUTS:
            raise ConfigError(f"the Triton layout must be one of {', '.join(TRITON_LAYOUTS)}, not {self.layout!r}.")
        if self.onnx_backend == "python" and self.device != "cpu" and self.layout != "pipeline":
            raise ConfigError(
                "on a GPU the python backend serves the pipeline layout (its model runs onnxruntime's CUDA "
                "provider); the ensemble's model on a GPU needs Triton's onnxruntime backend."
            )
        if self.layout == "pipeline" and self.onnx_backend != "python":
            raise ConfigError("the pipeline layout runs in the Python backend: use --triton-onnx-backend python.")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads must be a whole number, 0 or more, not {self.threads!r}.")
        if self.runtime not in ("onnxruntime", "openvino", "pt2"):
            raise ConfigError(f"the Triton backend must be onnxruntime, openvino or pt2, not {self.runtime!r}.")
        if self.runtime == "pt2" and self.layout != "pipeline":
            raise ConfigError(
                "an AOTInductor package is served by the pipeline layout's Python model on CPU: "
                "use --triton-onnx-backend python and the pipeline layout."
            )
        if self.runtime == "openvino" and (self.device != "cpu" or self.tensorrt):
            raise ConfigError("the OpenVINO variants are served on CPU: use --triton-device cpu.")
        if self.openvino_variant not in ("openvino-f32", "openvino-bf16", "openvino-int8"):
            raise ConfigError(
                f"the OpenVINO variant must be openvino-f32, -bf16 or -int8, not {self.openvino_variant!r}."
            )
        counts = (self.instances, self.helper_instances, self.max_batch_size)
        if any(not isinstance(n, int) or n < 1 for n in counts):
            raise ConfigError("instance counts and the max batch size must be positive whole numbers.")
        if self.queue_delay_us < 0:
            raise ConfigError("the queue delay must not be negative.")
        if any(b < 1 for b in (*self.length_buckets, *self.preferred_batch_sizes)):
            raise ConfigError("length buckets and preferred batch sizes must be positive.")
        if any(b > self.max_batch_size for b in self.preferred_batch_sizes):
            raise ConfigError(f"preferred batch sizes cannot exceed the max batch size ({self.max_batch_size}).")

    def describe(self) -> str:
        """The settings a load benchmark varies, in one short line."""
        batching = "no batching"
        if self.dynamic_batching:
            preferred = (
                f", preferred {'/'.join(map(str, self.preferred_batch_sizes))}" if self.preferred_batch_sizes else ""
            )
            batching = f"batching {self.queue_delay_us} us{preferred}"
        threads = f" x {self.threads} thread(s)" if self.threads else ""
        if self.layout == "pipeline":
            return f"pipeline, {batching}, {self.instances} instance(s){threads}"
        buckets = "/".join(map(str, self.length_buckets)) if self.length_buckets else "none"
        return (
            f"{batching}, {self.instances} model{threads} + {self.helper_instances} helper instance(s), "
            f"buckets {buckets}"
        )


# What a name may be when it becomes a folder of the repository and a string in config.pbtxt:
# letters, digits, '_' and '-', with single dots inside. Nothing that climbs out of the
# repository (../x), lands in its root (empty) or ends the protobuf string (quotes, newlines).
TRITON_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")


def check_triton_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or len(name) > 100 or not TRITON_NAME.fullmatch(name):
        raise ConfigError(
            f"{kind} {name!r} cannot name a Triton model or tensor: use letters, digits, '_' and '-' "
            "(single dots inside), at most 100 characters."
        )
    return name


def _io(name: str, data_type: str, dims: list[int]) -> str:
    check_triton_name("tensor name", name)  # read from the ONNX graph, which may be anyone's
    return f'  {{ name: "{name}" data_type: {data_type} dims: [ {", ".join(map(str, dims))} ] }}'


def _block(key: str, entries: list[str]) -> str:
    return f"{key} [\n" + ",\n".join(entries) + "\n]"


def _dynamic_batching(options: TritonOptions) -> list[str]:
    if not options.dynamic_batching:
        return []
    preferred = ""
    if options.preferred_batch_sizes:
        preferred = f" preferred_batch_size: [ {', '.join(map(str, options.preferred_batch_sizes))} ]"
    return [f"dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us}{preferred} }}"]


def onnx_model_config(served: ServedModel, name: str, options: TritonOptions) -> str:
    kind = "KIND_GPU" if options.device == "gpu" else "KIND_CPU"
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {options.max_batch_size}",
        _block("input", [_io(n, served.input_type, [-1]) for n in served.input_names]),
        _block("output", [_io(n, "TYPE_FP32", dims) for n, dims in served.outputs.items()]),
        *_dynamic_batching(options),
        f"instance_group [ {{ count: {options.instances} kind: {kind} }} ]",
    ]
    if options.tensorrt:
        precision = "FP16" if options.tensorrt_fp16 else "FP32"
        lines.append(
            'optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" '
            f'parameters {{ key: "precision_mode" value: "{precision}" }} '
            'parameters { key: "max_workspace_size_bytes" value: "1073741824" } } ] } }'
        )
    return "\n".join(lines) + "\n"


def python_model_config(
    name: str,
    inputs: list[str],
    outputs: list[str],
    options: TritonOptions,
    parameters: dict[str, str] | None = None,
    batching: bool = False,
) -> str:
    """batching: the ONNX runner, batched and replicated like the onnxruntime-backend model."""
    lines = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {options.max_batch_size}",
        _block("input", inputs),
        _block("output", outputs),
    ]
    if batching:
        lines.extend(_dynamic_batching(options))
    # the model's instances on the GPU when asked (the pipeline's runner uses CUDA there); helpers on CPU
    kind = "KIND_GPU" if batching and options.device == "gpu" else "KIND_CPU"
    lines.append(
        f"instance_group [ {{ count: {options.instances if batching else options.helper_instances} kind: {kind} }} ]"
    )
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def _maps(kind: str, names: list[str]) -> str:
    return "\n".join(f'      {kind} {{ key: "{n}" value: "{n}" }}' for n in names)


def ensemble_config(
    options: TritonOptions,
    input_names: list[str],
    model_outputs: list[str],
    results: list[tuple[str, str]],
    words: bool,
) -> str:
    """TEXT -> tokenizer -> model -> post-processor -> results; word tasks also hand the text
    and each token's word (WORD_IDS) to the post-processor."""
    name = options.name
    token_names = [*input_names, *(["WORD_IDS"] if words else [])]
    post_inputs = [*(["TEXT", "WORD_IDS"] if words else []), *model_outputs]
    return f'''name: "{name}"
platform: "ensemble"
max_batch_size: {options.max_batch_size}
{_block("input", [_io("TEXT", "TYPE_STRING", [1])])}
{_block("output", [_io(n, t, [1]) for n, t in results])}
ensemble_scheduling {{
  step [
    {{
      model_name: "{name}_tokenizer"
      model_version: -1
      input_map {{ key: "TEXT" value: "TEXT" }}
{_maps("output_map", token_names)}
    }},
    {{
      model_name: "{name}_model"
      model_version: -1
{_maps("input_map", input_names)}
{_maps("output_map", model_outputs)}
    }},
    {{
      model_name: "{name}_postprocess"
      model_version: -1
{_maps("input_map", post_inputs)}
{_maps("output_map", [n for n, _ in results])}
    }}
  ]
}}
'''


@dataclass(frozen=True)
class ServedModel:
    """What the repository's four models are written from: an exported ONNX directory."""

    onnx_dir: Path
    onnx_file: str
    config: dict  # config.json: the labels, and the out-of-scope rule
    input_names: list[str]
    input_type: str  # the ids' Triton type: TYPE_INT32 for export --gpu-fp16's graphs, else TYPE_INT64
    outputs: dict[str, list[int]]  # every output's shape after the batch axis (-1: the sequence axis)
    task: Any
    max_length: int

    @property
    def words(self) -> bool:
        return self.task.triton_words

    @classmethod
    def read(cls, onnx_dir: Path, onnx_file: str) -> ServedModel:
        import onnx

        config = artifacts.read_model_config(onnx_dir)
        if "id2label" not in config:
            raise ModelError(f"{onnx_dir}/config.json has no id2label; export the model with `nlu-deploy export`.")
        if not (onnx_dir / "tokenizer.json").is_file():
            raise ModelError(
                f"{onnx_dir} has no tokenizer.json, which the Triton tokenizer model reads (models with "
                "only a slow tokenizer cannot be served this way)."
            )
        graph = onnx.load(str(onnx_dir / onnx_file), load_external_data=False).graph
        tokenizer_config = artifacts.read_json(onnx_dir / "tokenizer_config.json")
        return cls(
            onnx_dir=onnx_dir,
            onnx_file=onnx_file,
            config=config,
            input_names=[i.name for i in graph.input],
            input_type=(
                "TYPE_INT32"
                if graph.input and graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
                else "TYPE_INT64"
            ),
            outputs={o.name: [d.dim_value or -1 for d in o.type.tensor_type.shape.dim[1:]] for o in graph.output},
            task=task_of(onnx_dir),
            max_length=min(int(tokenizer_config.get("model_max_length", 512)), 512),
        )


def write_repository(onnx_dir: Path, staging: Path, onnx_file: str, options: TritonOptions) -> None:
    """Fill `staging` (an empty directory) with the four models of the repository, or the one
    model of the pipeline layout."""
    served = ServedModel.read(Path(onnx_dir), onnx_file)
    if options.layout == "pipeline":
        _write_pipeline(served, staging / options.name, options)
        return
    _write_onnx_model(served, staging, options)
    _write_tokenizer(served, staging, options)
    _write_postprocess(served, staging, options)
    ensemble_dir = staging / options.name
    (ensemble_dir / "1").mkdir(parents=True)  # Triton wants a version directory, even if empty
    (ensemble_dir / "config.pbtxt").write_text(
        ensemble_config(options, served.input_names, list(served.outputs), served.task.triton_results, served.words)
    )


def _write_onnx_model(served: ServedModel, staging: Path, options: TritonOptions) -> None:
    name = f"{options.name}_model"
    model_dir = staging / name
    (model_dir / "1").mkdir(parents=True)
    if options.runtime == "openvino":
        _write_openvino_model(served, model_dir, options)
        return
    shutil.copy2(served.onnx_dir / served.onnx_file, model_dir / "1" / "model.onnx")
    if options.onnx_backend == "python":
        _copy_model_code("onnx_model.py", model_dir / "1" / "model.py")
        _copy_model_code("model_runner.py", model_dir / "1" / "model_runner.py")
        _copy_model_code("shape_batches.py", model_dir / "1" / "shape_batches.py", package="nlu_deploy.portable")
        inputs = [_io(n, served.input_type, [-1]) for n in served.input_names]
        outputs = [_io(n, "TYPE_FP32", dims) for n, dims in served.outputs.items()]
        text = python_model_config(name, inputs, outputs, options, {"threads": str(options.threads)}, batching=True)
    else:
        text = onnx_model_config(served, name, options)
    (model_dir / "config.pbtxt").write_text(text)


def _write_openvino_model(served: ServedModel, model_dir: Path, options: TritonOptions) -> None:
    """The IR as model.xml/model.bin, for Triton's OpenVINO backend or its Python substitute,
    with the variant's precision hint set explicitly (OpenVINO's default is bf16 on AMX CPUs)."""
    precision = _copy_openvino_ir(served, options, model_dir / "1")
    inputs = [_io(n, served.input_type, [-1]) for n in served.input_names]
    outputs = [_io(n, "TYPE_FP32", dims) for n, dims in served.outputs.items()]
    name = model_dir.name
    if options.onnx_backend == "python":
        _copy_model_code("openvino_model.py", model_dir / "1" / "model.py")
        _copy_model_code("model_runner.py", model_dir / "1" / "model_runner.py")
        _copy_model_code("shape_batches.py", model_dir / "1" / "shape_batches.py", package="nlu_deploy.portable")
        parameters = {"INFERENCE_PRECISION_HINT": precision, "threads": str(options.threads)}
        text = python_model_config(name, inputs, outputs, options, parameters, True)
    else:
        lines = [
            f'name: "{name}"',
            'backend: "openvino"',
            f"max_batch_size: {options.max_batch_size}",
            _block("input", inputs),
            _block("output", outputs),
            *_dynamic_batching(options),
            f"instance_group [ {{ count: {options.instances} kind: KIND_CPU }} ]",
            f'parameters {{ key: "INFERENCE_PRECISION_HINT" value: {{ string_value: "{precision}" }} }}',
            'parameters { key: "PERFORMANCE_HINT" value: { string_value: "LATENCY" } }',
        ]
        text = "\n".join(lines) + "\n"
    (model_dir / "config.pbtxt").write_text(text)


def _copy_openvino_ir(served: ServedModel, options: TritonOptions, version_dir: Path) -> str:
    """The variant's IR as model.xml/model.bin in `version_dir`; its precision hint."""
    from nlu_deploy.runtime.openvino_runtime import OPENVINO_FP32_IR, OPENVINO_INT8_IR

    ir = served.onnx_dir / (OPENVINO_INT8_IR if options.openvino_variant == "openvino-int8" else OPENVINO_FP32_IR)
    if not ir.exists():
        raise ModelError(
            f"{served.onnx_dir} has no {ir.name} for {options.openvino_variant}; export it with --openvino."
        )
    shutil.copy2(ir, version_dir / "model.xml")
    shutil.copy2(ir.with_suffix(".bin"), version_dir / "model.bin")
    return "bf16" if options.openvino_variant == "openvino-bf16" else "f32"


def _copy_tokenizer_code(served: ServedModel, version_dir: Path) -> None:
    """The tokenizer files (in tokenizer/), and the code that reads them as predict does."""
    (version_dir / "tokenizer").mkdir(parents=True)
    for file_name in TOKENIZER_FILES:
        if (served.onnx_dir / file_name).exists():
            shutil.copy2(served.onnx_dir / file_name, version_dir / "tokenizer" / file_name)
    _copy_model_code("light_tokenizer.py", version_dir / "light_tokenizer.py", package="nlu_deploy.portable")


def _copy_decoder_code(served: ServedModel, version_dir: Path) -> None:
    """labels.json, the out-of-scope rule, and the portable code the task's post-processor uses."""
    task, config = served.task, served.config
    labels = config["id2label"]
    if served.words:  # the tags, and a joint model's intents
        labels = {"tags": config["id2label"], "intents": config.get("intent_id2label")}
        _copy_model_code("spans.py", version_dir / "spans.py", package="nlu_deploy.portable")
        _copy_model_code("tag_decoding.py", version_dir / "tag_decoding.py", package="nlu_deploy.portable")
    (version_dir / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=2))
    if task.rejection is not None:  # the same out-of-scope rule and code as predict
        (version_dir / "rejection.json").write_text(json.dumps(task.rejection.to_json(), indent=2))
        _copy_model_code("rejection.py", version_dir / "rejection.py", package="nlu_deploy.portable")


def _write_pipeline(served: ServedModel, model_dir: Path, options: TritonOptions) -> None:
    """One Python-backend model: tokenizer, runner and post-processor in one process."""
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    parameters = {"max_length": str(served.max_length), "words": "true" if served.words else "false",
                  "threads": str(options.threads), "device": options.device}  # fmt: skip
    if options.runtime == "openvino":
        parameters["INFERENCE_PRECISION_HINT"] = _copy_openvino_ir(served, options, version_dir)
    elif options.runtime == "pt2":
        for file_name in (PT2_FILE, PT2_FACTS):
            shutil.copy2(served.onnx_dir / file_name, version_dir / file_name)
    else:
        shutil.copy2(served.onnx_dir / served.onnx_file, version_dir / "model.onnx")
    _copy_tokenizer_code(served, version_dir)
    _copy_decoder_code(served, version_dir)
    _copy_model_code("pipeline_model.py", version_dir / "model.py")
    for code in ("tokenizer_model.py", "model_runner.py"):
        _copy_model_code(code, version_dir / code)
    _copy_model_code(served.task.triton_postprocess, version_dir / "postprocess.py")
    outputs = [_io(n, t, [1]) for n, t in served.task.triton_results]
    text = python_model_config(options.name, [_io("TEXT", "TYPE_STRING", [1])], outputs, options, parameters, True)
    (model_dir / "config.pbtxt").write_text(text)


def _write_tokenizer(served: ServedModel, staging: Path, options: TritonOptions) -> None:
    tokenizer_dir = staging / f"{options.name}_tokenizer"
    _copy_tokenizer_code(served, tokenizer_dir / "1")
    _copy_model_code("tokenizer_model.py", tokenizer_dir / "1" / "model.py")
    token_outputs = [*served.input_names, *(["WORD_IDS"] if served.words else [])]
    buckets = ",".join(str(b) for b in sorted(options.length_buckets) if b < served.max_length)
    buckets = buckets if options.length_buckets else "none"
    parameters = {"max_length": str(served.max_length), "words": "true" if served.words else "false",
                  "length_buckets": buckets}  # fmt: skip
    (tokenizer_dir / "config.pbtxt").write_text(
        python_model_config(
            f"{options.name}_tokenizer",
            [_io("TEXT", "TYPE_STRING", [1])],
            [_io(n, served.input_type if n != "WORD_IDS" else "TYPE_INT64", [-1]) for n in token_outputs],
            options,
            parameters,
        )
    )


def _write_postprocess(served: ServedModel, staging: Path, options: TritonOptions) -> None:
    post_dir = staging / f"{options.name}_postprocess"
    (post_dir / "1").mkdir(parents=True)
    task = served.task
    _copy_decoder_code(served, post_dir / "1")
    _copy_model_code(task.triton_postprocess, post_dir / "1" / "model.py")
    inputs = [
        *([_io("TEXT", "TYPE_STRING", [1]), _io("WORD_IDS", "TYPE_INT64", [-1])] if served.words else []),
        *[_io(n, "TYPE_FP32", dims) for n, dims in served.outputs.items()],
    ]
    outputs = [_io(n, t, [1]) for n, t in task.triton_results]
    (post_dir / "config.pbtxt").write_text(python_model_config(f"{options.name}_postprocess", inputs, outputs, options))


def _copy_model_code(resource: str, target: Path, package: str = "nlu_deploy.serving.triton_models") -> None:
    source = resources.files(package).joinpath(resource)
    target.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")


def default_triton_file(onnx_dir: Path, device: str) -> str:
    """int8 for CPU serving; for GPUs the float graphs (onnxruntime's int8 kernels are CPU ones)."""
    preference = (
        (artifacts.ONNX_QUANTIZED, artifacts.ONNX_OPTIMIZED, artifacts.ONNX_FP32)
        if device == "cpu"
        else (artifacts.ONNX_FP16, artifacts.ONNX_OPTIMIZED, artifacts.ONNX_FP32)
    )
    return next(name for name in preference if (Path(onnx_dir) / name).exists())


def served_variant(onnx_dir: Path, options: TritonOptions, variant: str | None) -> tuple[TritonOptions, str]:
    """(the options, the ONNX file) that serve `variant`: an ONNX file or variant name (int8), an
    OpenVINO variant, or None: on CPU the variant `run` recommended for this export when there is
    one, else default_triton_file."""
    onnx_dir = Path(onnx_dir)
    if variant is None and options.device == "cpu":
        variant = artifacts.recommended_variant(onnx_dir)
    if variant and variant.startswith("openvino-"):  # the IR carries the same inputs and outputs as model.onnx
        return replace(options, runtime="openvino", openvino_variant=variant), artifacts.ONNX_FP32
    if variant and variant.startswith("pt2-"):  # so does the package
        if not any(v.name == variant for v in pt2_variants(onnx_dir)):
            raise ModelError(f"{onnx_dir} has no {variant} to serve; export it with --pt2.")
        return replace(options, runtime="pt2"), artifacts.ONNX_FP32
    if variant is None:
        return options, default_triton_file(onnx_dir, options.device)
    by_name = {artifacts.variant_name(path): path.name for path in onnx_dir.glob("*.onnx")}
    return options, by_name.get(variant, variant)


def export_triton_repository(
    onnx_dir: Path, repository: Path, options: TritonOptions, onnx_file: str | None = None, overwrite: bool = False
) -> str:
    """Write the repository atomically; return what it serves (an ONNX file, or an OpenVINO variant).
    `onnx_file`: an ONNX file or variant (see served_variant); None: the recommended one."""
    if options.runtime == "openvino":  # asked for explicitly (--triton-backend openvino)
        onnx_file = artifacts.ONNX_FP32
    else:
        options, onnx_file = served_variant(Path(onnx_dir), options, onnx_file)
    if not (Path(onnx_dir) / onnx_file).exists():
        raise ModelError(f"{onnx_dir} has no {onnx_file} to serve.")
    with artifacts.staged_output(repository, overwrite) as staging:
        write_repository(Path(onnx_dir), staging, onnx_file, options)
    return served_name(Path(onnx_dir), options, onnx_file)


def served_name(onnx_dir: Path, options: TritonOptions, onnx_file: str) -> str:
    """What a repository serves, as predict and the reports name it: the ONNX file, or the
    other runtime's variant."""
    if options.runtime == "openvino":
        return options.openvino_variant
    if options.runtime == "pt2":
        return pt2_variants(onnx_dir)[0].name
    return onnx_file
