"""One frozen dataclass per stage. Each checks its own values in __post_init__ so that the
library refuses nonsense the same way whether it is called from the CLI or from Python."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from nlu_deploy.errors import ConfigError
from nlu_deploy.task_specs import SPECS, TASKS

DEFAULT_SLOT_LOSS_WEIGHT = 2.0
# Epochs when none are given: at least 3, more when each intent has few training examples, so that
# the intent head sees every label about EXAMPLES_SEEN_PER_LABEL times in all (capped at 10).
# SNIPS (1,600 rows per intent) gets 3. BANKING77's seeded 90% (117 per intent) gets 7; the
# sweep's 81% of it (105 per intent, 8 epochs) scored 90.2% at 4 epochs, 92.0 at 6, 92.7 at 8.
# 1,000 SNIPS rows (129 per intent) get 7: 94 / 96 / 97% at 3 / 6 / 10 epochs. Word tagging
# has no intent and keeps 3 (SNIPS slots still gain at epoch 3, and the bars are for 3).
MIN_EPOCHS, MAX_EPOCHS = 3, 10
EXAMPLES_SEEN_PER_LABEL = 800


def default_epochs(examples_per_label: float | None) -> int:
    """Epochs for training data with this many examples per intent label (None: no intent)."""
    if not examples_per_label:
        return MIN_EPOCHS
    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(EXAMPLES_SEEN_PER_LABEL / examples_per_label)))


OPTIMIZATION_LEVELS = ("O1", "O2", "O3", "O4")
QUANTIZATION_MODES = ("dynamic", "static", "fp16", "auto")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANTIZATION_PRESETS = ("auto", "avx512_vnni", "avx512", "avx2", "arm64")
# The one table of execution providers: our names for them -> onnxruntime's.
EXECUTION_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDERS = tuple(EXECUTION_PROVIDERS)
RUN_RECIPES = ("measured", "fixed")
# How a Triton repository serves a model: three models chained by an ensemble, or one pipeline
# model; auto: the pipeline where the model runs in Python-backend models (measured 1.7x the
# ensemble's requests/s, docs/serving.md), the ensemble on Triton's onnxruntime or OpenVINO backend.
TRITON_LAYOUTS = ("auto", "ensemble", "pipeline")
OOS_TRAINING_CHOICES = ("class", "calibration")
POOLING_CHOICES = ("default", "mean")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
COMPILE_CHOICES = ("auto", "on", "off")
# BERT-family position embeddings stop at 512; longer inputs cannot be represented.
MAX_SUPPORTED_LENGTH = 512


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be greater than zero, got {value}.")


def option(default, flag: str | None):
    """A field whose command-line option is not named after it (warmup_s is --warmup), or that
    has none (None: set from Python only): messages name what the user typed."""
    return field(default=default, metadata={"option": flag})


def option_name(config_field: dataclasses.Field) -> str | None:
    """The option a config field is filled from: --field-name, unless the field says otherwise."""
    return config_field.metadata.get("option", f"--{config_field.name.replace('_', '-')}")


def _finite_numbers(config) -> None:
    """Every number an option gives must be a number: inf and nan pass every `> 0` test that
    comes after (nan compares false both ways), then train to NaN weights."""
    for config_field in dataclasses.fields(config):
        value = getattr(config, config_field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{option_name(config_field) or config_field.name} must be a finite number, got {value}.")


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")


@dataclass(frozen=True)
class FinetuneConfig:
    output: Path
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    train: Path | None = None  # None: the built-in demo dataset
    validation: Path | None = None  # None: a seeded, stratified holdout of train
    task: str = "text-classification"
    text_column: str | None = None  # None: the task's default (task_specs.SPECS)
    label_column: str | None = None
    intent_column: str | None = None  # joint task only
    epochs: int | None = None  # None: default_epochs() of the training data, set by train.resolve_epochs
    batch_size: int | None = None  # None: the task's recipe (task_specs.SPECS)
    lr: float | None = None
    max_length: int = 128
    compile: str = "auto"  # auto: off on every device (train.py says why)
    device: str = "auto"
    # auto: bf16 autocast on CUDA (fp16 + loss scaling where bf16 is missing), fp32 on CPU.
    # fp32 on CUDA is the eager baseline the GPU check compares against.
    precision: str = "auto"
    seed: int = 42
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = option(1.0, None)  # no option: set from Python only
    # Spread this share of every training target over all labels (cross-entropy's label_smoothing):
    # a regulariser for data a model fits to a near-zero training loss, such as CLINC150.
    # None: the task spec's rejection_label_smoothing when it learns to reject (0.1 for intents), else 0.
    label_smoothing: float | None = None
    # Score and keep an exponential moving average of the weights (weight_averaging.py)
    average_weights: bool = False
    slot_loss_weight: float = DEFAULT_SLOT_LOSS_WEIGHT  # joint task: loss = intent CE + this * slot CE
    # Intents: what the head reads. default: the model family's own sequence-classification head
    # (BERT: the pooled first token); mean: the mean of the final hidden states (tasks/pooled_model.py).
    pooling: str = "default"
    # Out-of-scope rejection (intent classification): the label out-of-scope rows carry, whether
    # they are trained as a class of their own or only calibrate the threshold, and a file of
    # out-of-scope texts that calibrates it when the data have no such label.
    oos_label: str | None = None
    oos_training: str = "class"
    oos_validation: Path | None = None
    oos_recall: float = 0.8  # the threshold rejects at least this share of held-out out-of-scope rows
    validation_fraction: float = option(0.1, None)  # no option: set from Python only
    # The seed of the held-out split; None: `seed`. A student (distill) keeps its teacher's split
    # whatever seed it trains with.
    holdout_seed: int | None = None
    checkpoint_every: int = 200  # optimizer steps between saved training states; 0: epoch ends only
    resume: bool = False  # continue the interrupted run that wrote to the same output
    allow_pickle: bool = False  # load a base model stored as pickle (.bin), which can run code
    trust_remote_code: bool = False  # run model code shipped with a hub model
    overwrite: bool = False

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _choice("task", self.task, TASKS)
        spec = SPECS[self.task]
        default_text, default_label, default_intent = (*spec.columns, None)[:3]
        if self.intent_column and not default_intent:
            raise ConfigError("--intent-column is for --task joint only.")
        # Frozen dataclass: fill the task's default columns once, here, so every reader agrees.
        object.__setattr__(self, "text_column", self.text_column or default_text)
        object.__setattr__(self, "label_column", self.label_column or default_label)
        object.__setattr__(self, "intent_column", self.intent_column or default_intent)
        object.__setattr__(self, "batch_size", spec.batch_size if self.batch_size is None else self.batch_size)
        object.__setattr__(self, "lr", spec.lr if self.lr is None else self.lr)
        _positive("slot loss weight", self.slot_loss_weight)
        if self.label_smoothing is None:
            rejecting = spec.rejection and (self.oos_label or self.oos_validation)
            object.__setattr__(self, "label_smoothing", spec.rejection_label_smoothing if rejecting else 0.0)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be at least 0 and below 1, got {self.label_smoothing}.")
        _choice("pooling", self.pooling, POOLING_CHOICES)
        if self.pooling != "default" and not spec.pooling:
            raise ConfigError(
                f"--pooling {self.pooling} is for intent classification; the {self.task} task reads "
                "every word's own hidden state."
            )
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint interval must not be negative, got {self.checkpoint_every}.")
        _choice("compile", self.compile, COMPILE_CHOICES)
        _choice("device", self.device, DEVICE_CHOICES)
        _choice("precision", self.precision, PRECISION_CHOICES)
        _choice("out-of-scope training", self.oos_training, OOS_TRAINING_CHOICES)
        if not 0 < self.oos_recall <= 1:
            raise ConfigError(f"out-of-scope recall target must be in (0, 1], got {self.oos_recall}.")
        if (self.oos_label or self.oos_validation) and not spec.rejection:
            raise ConfigError(
                "out-of-scope rejection (--oos-label, --oos-validation) is for tasks with an intent: "
                "--task text-classification or joint."
            )
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError("fp16 training needs CUDA; on CPU use fp32 (the default) or bf16.")
        if self.epochs is not None:
            _positive("epochs", self.epochs)
        _positive("batch size", self.batch_size)
        _positive("learning rate", self.lr)
        _positive("max length", self.max_length)
        if self.max_length > MAX_SUPPORTED_LENGTH:
            raise ConfigError(
                f"max length {self.max_length} is beyond what BERT-family encoders support ({MAX_SUPPORTED_LENGTH})."
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup ratio must be in [0, 1), got {self.warmup_ratio}.")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation fraction must be between 0 and 1, got {self.validation_fraction}.")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must not be negative, got {self.weight_decay}.")
        if self.max_grad_norm <= 0:
            raise ConfigError("max grad norm must be greater than zero.")

    @property
    def split_seed(self) -> int:
        return self.seed if self.holdout_seed is None else self.holdout_seed

    @property
    def columns(self) -> tuple[str, ...]:
        """The data columns the task reads, in its order (text, labels[, intent])."""
        return tuple(c for c in (self.text_column, self.label_column, self.intent_column) if c)


# option -> (kind, range). Ranges bracket the recipes that work for BERT-size encoders on
# intent and slot data (lr 2e-5..2e-4 in the BERT paper's grid, extended down for small data
# and up for small models such as MiniLM; batch 16..64; 2..5 epochs; warm-up up to 20% of steps).
SEARCH_SPACE: dict[str, tuple] = {
    "lr": ("log", 1e-5, 5e-4),
    "batch_size": ("choice", (16, 32, 64)),
    "epochs": ("int", 2, 10),  # up to default_epochs' cap: BANKING77 still gains at 8
    "warmup_ratio": ("float", 0.0, 0.2),
    "weight_decay": ("float", 0.0, 0.1),
    "slot_loss_weight": ("float", 0.5, 3.0),  # the joint task only (Task.searched_options)
}


@dataclass(frozen=True)
class SearchConfig:
    """finetune --search: how many trials, how long at most, and the options the user fixed."""

    trials: int  # with a shared storage: trials in the whole study, whichever worker ran them
    minutes: float | None = option(None, "--search-time")  # wall-time cap (each worker's); None: no cap
    fixed: tuple[str, ...] = ()  # options given explicitly: never searched
    # A study several workers share: an SQLAlchemy URL (postgresql://, mysql://, sqlite:///PATH).
    # None: the study is an SQLite file of this search's own, in OUTPUT.search/.
    storage: str | None = None
    study_name: str | None = None  # None: "nlu-deploy"
    heartbeat_seconds: int = 30  # a running trial's sign of life; one silent for 3 beats is failed

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _positive("search trials", self.trials)
        if self.minutes is not None:
            _positive("search time", self.minutes)
        if self.study_name is not None and self.storage is None:
            raise ConfigError("--study-name needs --study-storage (a study of its own needs no name).")
        if self.storage is not None and "://" not in self.storage:
            raise ConfigError(
                f"--study-storage must be a database URL such as postgresql://user@host/db or sqlite:///path, "
                f"got {self.storage!r}."
            )
        _positive("heartbeat seconds", self.heartbeat_seconds)


# Distillation (distill.py): the soft-target temperature and the share of the loss that matches the
# teacher (the rest is the hard-label loss); T = 2 and an even mix are the common starting point
# (Hinton et al. 2015; DistilBERT). The defaults' evidence is in docs/distillation.md.
DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class DistillConfig:
    """A shallower student of a fine-tuned teacher. Options left None come from the teacher's
    own finetune options (its data, columns, split, batch size, learning rate, max length)."""

    teacher: Path
    output: Path
    layers: int
    train: Path | None = None  # None: the data the teacher was trained on, split as it was
    validation: Path | None = None
    unlabeled: Path | None = None  # texts only the teacher labels: one per line, or a column
    unlabeled_column: str = "text"
    text_column: str | None = None
    label_column: str | None = None
    intent_column: str | None = None
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA  # loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * hard-label loss
    epochs: int = 3
    batch_size: int | None = None
    lr: float | None = None
    compile: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 42
    checkpoint_every: int = 200
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _positive("layers", self.layers)
        _positive("temperature", self.temperature)
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be between 0 and 1, got {self.alpha}.")
        _positive("epochs", self.epochs)
        for name, value in (("batch size", self.batch_size), ("learning rate", self.lr)):
            if value is not None:
                _positive(name, value)
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint interval must not be negative, got {self.checkpoint_every}.")
        _choice("compile", self.compile, COMPILE_CHOICES)
        _choice("device", self.device, DEVICE_CHOICES)
        _choice("precision", self.precision, PRECISION_CHOICES)
        if self.validation is not None and self.train is None:
            raise ConfigError("--validation needs --train: without it the student uses the teacher's own split.")


@dataclass(frozen=True)
class ExportConfig:
    model_dir: Path
    output: Path
    opset: int | None = None  # None: Optimum's default for the architecture
    optimize: str | None = None
    quantize: str | None = None
    quantize_preset: str = "auto"  # auto: chosen from this machine's CPU instruction sets
    per_channel: bool | None = None  # None: off for dynamic/static, both tried by auto
    max_score_drop: float = 0.3  # auto: accuracy points the kept int8 model may lose
    validation: Path | None = None  # auto: held-out data; None: the checkpoint's validation split
    calibration: Path | None = None  # static/auto: None: the checkpoint's training sample
    calibration_samples: int = 256
    calibration_method: str = "minmax"
    atol: float = option(1e-4, None)  # no option; largest |logit| difference accepted between PyTorch and fp32 ONNX
    # Also write OpenVINO IR files (fp32, and NNCF int8 calibrated like static): the openvino-*
    # variants validate, bench, predict and --quantize auto measure beside onnxruntime's.
    openvino: bool = False
    # Also write a PyTorch AOTInductor package (model.pt2) for this device: cpu (fp32) or cuda
    # (bf16), the pt2-* variant every stage runs beside the ONNX files. None: no package.
    pt2: str | None = None
    # Also write fp16 graphs for CUDA from the GPU-fused graph: 1-D mask attention
    # (model_fp16_fused.onnx) and packing mode without padding (model_fp16_packed.onnx).
    gpu_fp16: bool = False
    # auto: the minutes the candidates may take; those left then are skipped, and the report says
    # which (run bounds its choice this way). None: every candidate is measured.
    search_minutes: float | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _choice("optimize", self.optimize, OPTIMIZATION_LEVELS)
        _choice("quantize", self.quantize, QUANTIZATION_MODES)
        _choice("--pt2", self.pt2, ("cpu", "cuda"))
        if self.search_minutes is not None:
            _positive("--search-minutes", self.search_minutes)
        _choice("calibration method", self.calibration_method, CALIBRATION_METHODS)
        _positive("calibration samples", self.calibration_samples)
        if self.max_score_drop < 0:
            raise ConfigError(f"max score drop must not be negative, got {self.max_score_drop}.")
        _choice("quantize preset", self.quantize_preset, QUANTIZATION_PRESETS)
        if self.opset is not None and not 11 <= self.opset <= 23:
            raise ConfigError(f"opset must be between 11 and 23, got {self.opset}.")
        _positive("atol", self.atol)


@dataclass(frozen=True)
class ValidateConfig:
    model_dir: Path
    onnx_dir: Path
    data: Path
    text_column: str | None = None  # None: the columns the checkpoint was trained with
    label_column: str | None = None
    intent_column: str | None = None  # joint task
    # the label out-of-scope rows carry in `data`, when it is not the label the model answers
    oos_label: str | None = None
    max_score_drop: float = 1.0  # points of the task's score: accuracy, or entity F1 for tagging
    batch_size: int = 64
    max_length: int | None = None  # None: what the checkpoint was trained with
    # where the ONNX files run; the PyTorch reference stays in fp32 on the CPU, the one result
    # every variant on every provider is compared with
    provider: str = "cpu"

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _choice("provider", self.provider, PROVIDERS)
        if self.max_score_drop < 0:
            raise ConfigError(f"max score drop must not be negative, got {self.max_score_drop}.")
        _positive("batch size", self.batch_size)
        if self.max_length is not None:
            _positive("max length", self.max_length)


@dataclass(frozen=True)
class BenchConfig:
    onnx_dir: Path
    model_dir: Path | None = None  # the PyTorch checkpoint, benchmarked in the same run
    provider: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    seq_lens: tuple[int, ...] = (16, 64, 128)
    warmup_iters: int = 3
    min_iters: int = 10
    min_seconds: float = 0.5
    rounds: int = 3  # interleaved timing rounds per shape (see benchmark.bench)
    threads: int | None = None  # None: the runtime's default (one per physical core)
    seed: int = 0
    variants: tuple[str, ...] = field(default_factory=tuple)  # empty: every .onnx file
    fallback: bool = False  # run on CPU when the requested provider cannot start, and say so
    io_binding: bool = True  # CUDA/TensorRT: inputs and outputs stay on the device
    trt_cache_dir: Path | None = None  # TensorRT engine and timing cache
    trt_fp16: bool = False
    torch_compile: str = "auto"  # PyTorch baseline with torch.compile too; auto: on for CUDA only
    # Dynamic int8 kernels exist on CPU only: on CUDA/TensorRT every int8 layer copies to the host,
    # so such files are skipped on a GPU provider unless asked for (and then never recommended).
    int8_on_gpu: bool = False
    tf32: bool = False  # TF32 matmuls on CUDA, the same choice for PyTorch and onnxruntime
    # CUDA: also each float file with CUDA graphs (variant VARIANT+cuda-graph): one graph captured
    # per shape and replayed, the kernel launches of per-request serving's small batches saved.
    cuda_graphs: bool = False
    # (label, ONNX directory) pairs measured in the same run, their variants named label/variant:
    # a distilled student beside its teacher, both against the teacher's PyTorch.
    also: tuple[tuple[str, Path], ...] = ()
    # Texts whose real lengths are timed too (batches of real_batch_sizes texts, each padded to its
    # longest): a deployment's traffic, beside the fixed shapes. Empty: fixed shapes only.
    real_texts: tuple[str, ...] = ()
    real_batch_sizes: tuple[int, ...] = (1, 32)
    fixed_shapes: bool = True  # False: the real lengths only (run's second look at its finalists)

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _choice("provider", self.provider, PROVIDERS)
        for value in self.real_batch_sizes:
            _positive("--real-batch-sizes", value)
        if self.cuda_graphs and self.provider != "cuda":
            raise ConfigError("--cuda-graphs captures CUDA graphs: it needs --provider cuda.")
        if not self.fixed_shapes and not self.real_texts:
            raise ConfigError("a benchmark without fixed shapes needs real texts to time.")
        if not self.batch_sizes or not self.seq_lens:
            raise ConfigError("at least one batch size and one sequence length are needed.")
        for value in (*self.batch_sizes, *self.seq_lens):
            _positive("batch sizes and sequence lengths", value)
        if max(self.seq_lens) > MAX_SUPPORTED_LENGTH:
            raise ConfigError(f"sequence lengths above {MAX_SUPPORTED_LENGTH} are not supported.")
        _positive("min iterations", self.min_iters)
        _positive("rounds", self.rounds)
        if self.warmup_iters < 0 or self.min_seconds < 0:
            raise ConfigError("warm-up iterations and min seconds must not be negative.")
        if self.threads is not None:
            _positive("threads", self.threads)
        _choice("torch compile", self.torch_compile, COMPILE_CHOICES)


SERVE_PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class ServeBenchConfig:
    """serve-bench: load on a served model (a local tritonserver started per configuration, or a
    server at `url`), and with `p99_ms` a search of the server-side settings (local only)."""

    onnx_dir: Path  # the exported model: what the server serves, and what answers are checked against
    data: Path  # the traffic: texts drawn from this file
    output: Path  # report directory
    text_column: str | None = None  # None: the model's training text column, else "text"
    variant: str | None = None  # the ONNX file served; None: the one `export --triton` serves on CPU
    url: str | None = None  # a running server (host:port); None: start a local tritonserver
    protocol: str = "http"
    model: str = "nlu"  # the ensemble's name
    metrics_url: str | None = None  # None: local server's, or http://<url host>:8002/metrics
    tritonserver: Path | None = None  # another tritonserver binary than nvidia-pytriton's
    onnx_backend: str = "python"  # the local server's ONNX runner (nvidia-pytriton has only python)
    layout: str = "auto"  # the repository swept: auto, ensemble (three models) or pipeline (one)
    device: str = "cpu"  # where the served model's instances run: cpu, or gpu (onnxruntime's CUDA provider)
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    rates: tuple[float, ...] = ()  # open-loop levels, requests/s
    warmup_s: float = option(2.0, "--warmup")
    duration_s: float = option(10.0, "--duration")
    timeout_s: float = option(10.0, "--timeout")
    max_texts: int = 2000  # distinct texts drawn from the data (each answer is checked against predict)
    seed: int = 0
    # the configuration search (local server only): a p99 budget at one level
    p99_ms: float | None = None
    at_concurrency: int | None = None  # None: the highest --concurrency level
    at_rate: float | None = None
    batching: tuple[str, ...] = ("off", "2000", "8000")  # "off" or a queue delay in microseconds
    instances: tuple[int, ...] = (1, 2)
    helper_instances: tuple[int, ...] = (1,)
    layouts: tuple[str, ...] = ("auto",)  # search: the repository layouts tried
    threads: tuple[int, ...] = (0,)  # search: intra-op threads per model instance (0: the runtime's default)
    buckets: tuple[tuple[int, ...], ...] = ((16, 32, 64, 128), ())  # () : no buckets
    preferred_batch_sizes: tuple[tuple[int, ...], ...] = ((),)
    search_repeats: int = 2  # extra runs of the finalists, interleaved, judged on medians
    write_repository: Path | None = None  # where the chosen configuration's repository goes
    overwrite: bool = False

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _choice("protocol", self.protocol, SERVE_PROTOCOLS)
        _choice("ONNX backend", self.onnx_backend, ("python", "onnxruntime"))
        _choice("--device", self.device, ("cpu", "gpu"))
        if not self.concurrency and not self.rates:
            raise ConfigError("give at least one concurrency level or request rate.")
        for name, values in (("--concurrency", self.concurrency), ("--rates", self.rates),
                             ("--duration", (self.duration_s,)), ("--timeout", (self.timeout_s,)),
                             ("--max-texts", (self.max_texts,))):  # fmt: skip
            for value in values:
                _positive(name, value)
        if not all(math.isfinite(r) for r in self.rates):
            raise ConfigError("--rates must be finite numbers.")
        if self.warmup_s < 0:
            raise ConfigError(f"--warmup must not be negative, got {self.warmup_s}.")
        if self.search_repeats < 0:
            raise ConfigError(f"--search-repeats must not be negative, got {self.search_repeats}.")
        if self.p99_ms is not None:
            _positive("the p99 budget", self.p99_ms)
            if self.url is not None:
                raise ConfigError(
                    "a server at --url is measured, not reconfigured: search its settings on a local server."
                )
        if self.at_concurrency is not None and self.at_rate is not None:
            raise ConfigError("the budget holds at one level: give --at-concurrency or --at-rate, not both.")
        for delay in self.batching:
            if delay != "off" and not (delay.isdigit()):
                raise ConfigError(f"a batching setting is 'off' or a queue delay in microseconds, not {delay!r}.")
        for layout in (self.layout, *self.layouts):
            _choice("--layout", layout, TRITON_LAYOUTS)
        if any(t < 0 for t in self.threads):
            raise ConfigError("--threads must be 0 (the runtime's default) or more.")
        if self.url is None and (self.metrics_url is not None):
            raise ConfigError("--metrics-url goes with --url; a local server's metrics are read where it serves them.")

    @property
    def budget_level(self) -> tuple[str, float]:
        if self.at_rate is not None:
            return ("rate", self.at_rate)
        if self.at_concurrency is not None:
            return ("concurrency", self.at_concurrency)
        if self.concurrency:
            return ("concurrency", max(self.concurrency))
        return ("rate", max(self.rates))


@dataclass(frozen=True)
class RunConfig:
    """The whole chain. `finetune.output` is ignored: run places the checkpoint itself."""

    output: Path
    finetune: FinetuneConfig
    optimize: str = "O2"
    quantize_preset: str = "auto"
    openvino: bool = False  # also the OpenVINO variants (export --openvino)
    pt2: str | None = None  # also an AOTInductor package for this device (export --pt2), measured like the rest
    # measured: ship what measures fastest here within the accuracy gate (the int8 search over
    # both graphs, OpenVINO when installed, real-length timing); fixed: dynamic int8 from the O2
    # graph, the files of before 2026-12-07, and no recommendation.json.
    recipe: str = "measured"
    choose_minutes: float = option(3.0, "--choose-minutes")  # measured: the int8 search's time
    max_score_drop: float = 1.0
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    seq_lens: tuple[int, ...] = (16, 64, 128)
    bench_min_seconds: float = option(0.5, "--min-seconds")
    student_layers: int | None = None  # also distil a student with this many layers (distill.py)
    student_epochs: int = 3
    search: SearchConfig | None = None  # the fine-tune is the best of a hyperparameter search
    overwrite: bool = False

    def __post_init__(self) -> None:
        _finite_numbers(self)
        _choice("optimize", self.optimize, OPTIMIZATION_LEVELS)
        _choice("quantize preset", self.quantize_preset, QUANTIZATION_PRESETS)
        _choice("--recipe", self.recipe, RUN_RECIPES)
        _positive("--choose-minutes", self.choose_minutes)
        if self.student_layers is not None:
            _positive("student layers", self.student_layers)
        _positive("student epochs", self.student_epochs)
        if self.max_score_drop < 0:
            raise ConfigError(f"max score drop must not be negative, got {self.max_score_drop}.")


BULK_OUTPUT_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class BulkPredictConfig:
    """predict --file IN --output OUT: a file of any size, answered in chunks of rows."""

    model_dir: Path
    input: str  # a local path, or any URI pyarrow reads (s3://, gs://, hdfs://...)
    output: str  # .jsonl or .parquet; local, or (with ray_address) a URI
    variant: str | None = None
    provider: str = "cpu"
    text_column: str = "text"
    id_column: str | None = None  # carried through to each answer as "id"
    # The unit of memory, of resuming, and of a Ray task. On SNIPS texts in batches of 64, sorting
    # within 4,000 rows pads 1.7% more tokens than sorting the whole file (10,000: 0.8%), and the
    # peak RSS at 200,000 rows was 1.00x that at 20,000 (10,000 rows: 1.17x; docs/bulk.md).
    rows_per_chunk: int = 4_000
    batch_size: int = 64  # texts per model call, grouped by token length within a chunk
    overwrite: bool = False
    ray_address: str | None = None  # "auto", ray://host:10001, or an address; None: this process
    ray_actors: int | None = None  # None: one per CPU-sized share of the cluster
    show_progress: bool = True

    def __post_init__(self) -> None:
        _choice("provider", self.provider, PROVIDERS)
        _positive("rows per chunk", self.rows_per_chunk)
        _positive("batch size", self.batch_size)
        if self.ray_actors is not None:
            _positive("Ray actors", self.ray_actors)
        suffix = Path(str(self.output).split("://", 1)[-1]).suffix.lower()
        if suffix not in BULK_OUTPUT_SUFFIXES:
            raise ConfigError(f"--output must end in .jsonl or .parquet, got {self.output!r}.")
        if "://" in str(self.output) and self.ray_address is None:
            raise ConfigError("an --output URI is written by a Ray run (--ray); without it, give a local path.")
