"""Latency and throughput of every ONNX variant, and of the PyTorch checkpoint in the same run,
over a grid of batch sizes and sequence lengths."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import EXECUTION_PROVIDERS, BenchConfig
from nlu_deploy.errors import ModelError, NluDeployError
from nlu_deploy.evaluation.real_lengths import mean_width, real_length_batches
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.reports import markdown_table
from nlu_deploy.runtime.attention_kernels import ATTENTION_OPS, probe_attention_kernels
from nlu_deploy.runtime.machine import cpu_flags
from nlu_deploy.runtime.modeling import pick_device
from nlu_deploy.runtime.openvino_runtime import OpenVinoVariant, bf16_features
from nlu_deploy.runtime.runtime_variants import runtime_variants
from nlu_deploy.runtime.sessions import (
    TensorRTSettings,
    create_session,
    cuda_only_graph,
    graph_feed,
    graph_ops,
    has_contrib_ops,
    is_dynamic_int8,
)
from nlu_deploy.stopping import Stopped
from nlu_deploy.tasks import load_checkpoint

PYTORCH = "pytorch"


@dataclass
class Measurement:
    variant: str
    batch_size: int
    seq_len: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    sequences_per_second: float
    provider: str
    speedup_vs_pytorch: float | None = None
    file: str | None = None  # what was measured: the .onnx file, or the checkpoint's weights
    size_mb: float | None = None
    # fixed: every sequence seq_len tokens; real: batches of real texts, each padded to its longest
    # text as predict pads them (seq_len is then the batches' mean padded length)
    lengths: str = "fixed"


@dataclass
class BenchReport:
    provider: str
    threads: int | None
    machine: dict
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # fallbacks, fp16 on CPU, compile settings
    setup_seconds: dict[str, float] = field(default_factory=dict)  # per variant: session start, TensorRT engines
    cpu_only_variants: list[str] = field(default_factory=list)  # dynamic int8 measured on a GPU: never recommended
    stopped: str | None = None  # the signal that stopped the run before every shape was measured
    # on CUDA, per file with fused attention: shape -> "op dtype: kernel" -> node runs (attention_kernels.py)
    attention_kernels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def variants(self) -> list[str]:
        return list(dict.fromkeys(m.variant for m in self.measurements))

    def geomean_throughput(self, variant: str) -> float:
        rates = [m.sequences_per_second for m in self.measurements if m.variant == variant]
        return math.exp(sum(math.log(r) for r in rates) / len(rates))

    @property
    def fastest(self) -> str | None:
        """Highest geometric-mean throughput over all measured shapes (None before the first)."""
        return max(self.variants(), key=self.geomean_throughput, default=None)

    def speedup(self, variant: str, batch_size: int, seq_len: int) -> float | None:
        for m in self.measurements:
            if (m.variant, m.batch_size, m.seq_len) == (variant, batch_size, seq_len):
                return m.speedup_vs_pytorch
        return None

    def to_json(self) -> dict:
        return {**asdict(self), "complete": self.stopped is None, "fastest": self.fastest}

    def write_json(self, path: Path) -> None:
        artifacts.write_json(Path(path), self.to_json())

    def to_markdown(self) -> str:
        has_baseline = any(m.variant == PYTORCH for m in self.measurements)
        headers = ["variant", "batch", "seq len", "p50 ms", "p90 ms", "p99 ms", "seq/s", "iters"]
        headers += ["vs pytorch"] if has_baseline else []
        rows = []
        for m in sorted(self.measurements, key=lambda m: (m.lengths, m.batch_size, m.seq_len)):
            row = [
                m.variant,
                m.batch_size,
                m.seq_len if m.lengths == "fixed" else f"real (mean {m.seq_len})",
                f"{m.p50_ms:.2f}",
                f"{m.p90_ms:.2f}",
                f"{m.p99_ms:.2f}",
                f"{m.sequences_per_second:.1f}",
                m.iterations,
            ]
            if has_baseline:
                row.append(f"{m.speedup_vs_pytorch:.2f}x" if m.speedup_vs_pytorch else "")
            rows.append(row)
        cpu = self.machine.get("cpu", "unknown CPU")
        header = (
            f"Provider {self.provider}, {self.threads or 'default'} threads, {cpu}, "
            f"{self.machine.get('logical_cores')} logical cores."
        )
        hints = self.machine.get("openvino_precision_hints")
        if hints:
            features = ", ".join(self.machine.get("bf16_features") or []) or "none"
            header += (
                f" OpenVINO precision hints: {', '.join(f'{k} {v}' for k, v in hints.items())} "
                f"(CPU bf16 features: {features})."
            )
        if self.stopped:
            header = f"**INCOMPLETE: stopped by {self.stopped}**; the shapes below were measured before.\n\n{header}"
        notes = "".join(f"\nNote: {note}" for note in self.notes)
        return (
            f"{header}\n\n{markdown_table(headers, rows)}\n\nFastest variant: **{self.fastest}**.\n"
            f"{notes}{chr(10) if notes else ''}{self._kernels_markdown()}"
        )

    def _kernels_markdown(self) -> str:
        """Which attention kernel each file's nodes ran, per shape (CUDA only)."""
        if not self.attention_kernels:
            return ""
        rows = [
            [variant, shape, ", ".join(f"{kernel} x{count}" for kernel, count in kernels.items()) or "nothing printed"]
            for variant, shapes in self.attention_kernels.items()
            for shape, kernels in shapes.items()
        ]
        table = markdown_table(["variant", "shape", "attention kernel x node runs"], rows)
        return f"\nAttention kernels on CUDA (onnxruntime's own report, one probe run per shape):\n\n{table}\n"

    def recommend(self, validation: dict) -> str | None:
        """The fastest measured ONNX variant that passed validation (a validate --json report)."""
        passed = {v["variant"] for v in validation.get("variants", []) if v["passed"]}
        candidates = [
            v for v in self.variants() if artifacts.gated_variant(v) in passed and v not in self.cpu_only_variants
        ]
        return max(candidates, key=self.geomean_throughput) if candidates else None


def tradeoff_points(benchmark: dict, validations: dict[str, dict], batch_size: int, seq_len: int) -> list[dict]:
    """Score and throughput of every measured variant at one shape: `validations` maps a
    directory's label ("" for the benchmarked directory, else its `also` label) to its
    `validate --json` report. Variants without a score (no report) are left out."""
    points = []
    for m in benchmark["measurements"]:
        if (m["batch_size"], m["seq_len"]) != (batch_size, seq_len):
            continue
        label, _, variant = m["variant"].rpartition("/")
        validation = validations.get(label)
        if validation is None:
            continue
        metric = validation["primary_metric"]
        if variant == PYTORCH:
            score = validation["pytorch"][metric]
        else:
            score = next((v["scores"][metric] for v in validation["variants"] if v["variant"] == variant), None)
        if score is not None:
            points.append(
                {
                    "variant": m["variant"],
                    "model": label or "teacher",
                    "score": score,
                    "metric": DISPLAY_NAMES[metric],
                    "sequences_per_second": m["sequences_per_second"],
                    "speedup_vs_pytorch": m["speedup_vs_pytorch"],
                    "batch_size": batch_size,
                    "seq_len": seq_len,
                }
            )
    return points


def latency_stats(latencies_ms: np.ndarray, batch_size: int) -> dict[str, float]:
    """Percentiles with linear interpolation (numpy's default), mean, spread, throughput."""
    latencies_ms = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
    mean = float(latencies_ms.mean())
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": float(latencies_ms.std()),
        "sequences_per_second": batch_size * 1000.0 / mean,
    }


def time_calls(
    run: Callable[[], object], warmup_iters: int, min_iters: int, min_seconds: float, max_iters: int = 10_000
) -> list[float]:
    """Latencies in ms; runs until both `min_iters` calls and `min_seconds` have passed."""
    for _ in range(warmup_iters):
        run()
    latencies = []
    started = time.perf_counter()
    while len(latencies) < max_iters and (len(latencies) < min_iters or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        run()
        latencies.append((time.perf_counter() - t0) * 1000.0)
    return latencies


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Random token ids with full attention: an encoder's latency depends on the shape, not
    on which ids are fed. Ids start above the special and [unused] entries of BERT vocabularies."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(1000, vocab_size // 2), vocab_size, size=(batch_size, seq_len), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def machine_facts() -> dict:
    facts = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "logical_cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "cpu_flags": sorted(
            cpu_flags()
            & {
                "avx2",
                "avx512f",
                "avx512_vnni",
                "avx512_bf16",
                "amx_tile",
                "amx_int8",
                "amx_bf16",
                "avx_vnni",
                "asimddp",
                "sve",
            }
        ),
        "versions": artifacts.library_versions(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _vocab_size(onnx_dir: Path) -> int:
    return int(artifacts.read_model_config(onnx_dir, missing_ok=True).get("vocab_size", 30522))


def bench(config: BenchConfig, on_result: Callable[[Measurement], None] | None = None) -> BenchReport:
    onnx_dir = Path(config.onnx_dir)
    vocab_size = _vocab_size(onnx_dir)
    report = BenchReport(config.provider, config.threads, machine_facts())
    named = _named_files(config, report, vocab_size)
    on_gpu = config.provider in ("cuda", "tensorrt")
    report.machine["tf32"] = config.tf32 if on_gpu else "n/a (CPU)"
    if on_gpu:
        _set_torch_tf32(config.tf32)
    runners: list[tuple[str, str, Callable[[dict], Callable[[], object]]]] = []
    sources = dict(named)  # what each variant runs
    if config.model_dir is not None:
        runners += _torch_runners(config, report.notes)
        for variant, _, _ in runners:  # every PyTorch baseline runs the checkpoint's weights
            sources[variant] = Path(config.model_dir) / artifacts.WEIGHTS
    probes = _probe_batches(config, vocab_size) if config.provider == "cuda" else {}
    runners += _onnx_runners(config, named, report, vocab_size, probes)
    for variant, _, _ in runners:  # a CUDA-graph replay runs its file
        sources.setdefault(variant, sources.get(artifacts.gated_variant(variant)))
    for variant, runner in _runtime_variant_runners(config, report):
        runners.append(runner)
        sources[variant.name] = variant.path
    if not runners:
        raise NluDeployError(f"nothing to measure with {config.provider}: {' '.join(report.notes)}")
    report.machine["threads"] = {
        "onnxruntime": config.threads or "default (one per physical core)",
        "torch": _torch_threads(),
    }
    try:
        for batch_size in config.batch_sizes if config.fixed_shapes else ():
            for seq_len in config.seq_lens:
                for measurement in _time_shape(config, runners, sources, batch_size, seq_len, vocab_size):
                    report.measurements.append(measurement)
                    if on_result:
                        on_result(measurement)
        for measurement in time_real_lengths(config, runners, sources):
            report.measurements.append(measurement)
            if on_result:
                on_result(measurement)
    except Stopped as stop:  # what was measured goes with the stop, for the caller to keep
        report.stopped, stop.report = stop.signal_name, report
        raise
    return report


def _named_files(config: BenchConfig, report: BenchReport, vocab_size: int) -> list[tuple[str, Path]]:
    """(variant name, file): this directory's files, then those of the compared directories (a
    student's), named LABEL/variant, all timed in the same rounds against the same PyTorch."""
    onnx_dir = Path(config.onnx_dir)
    files = artifacts.onnx_files(onnx_dir)
    if config.variants:
        check_variants(onnx_dir, config.variants, files)
        files = [f for f in files if artifacts.variant_name(f) in config.variants or f.name in config.variants]
    named = [(artifacts.variant_name(path), path) for path in _files_for_provider(config, files, report)]
    for label, directory in config.also:
        if _vocab_size(Path(directory)) != vocab_size:
            raise ModelError(
                f"{directory} has another vocabulary than {onnx_dir}; only models that share a "
                "tokenizer (a teacher and its student) are measured on the same inputs."
            )
        named += [
            (f"{label}/{artifacts.variant_name(path)}", path)
            for path in _files_for_provider(config, artifacts.onnx_files(Path(directory)), report, f"{label}/")
        ]
    return named


def check_variants(onnx_dir: Path, asked: tuple[str, ...], files: list[Path], flags: set[str] | None = None) -> None:
    """Every variant --variants names must be here and runnable as asked: an ONNX file (by variant
    or file name) or another runtime's variant; openvino-bf16 only on a CPU with native bf16, where
    OpenVINO would otherwise emulate it (timing an emulation would mislead)."""
    onnx_names = {artifacts.variant_name(f) for f in files} | {f.name for f in files}
    other_runtimes = {v.name for v in runtime_variants(onnx_dir, flags)}
    if "openvino-bf16" in asked and "openvino-f32" in other_runtimes and "openvino-bf16" not in other_runtimes:
        raise NluDeployError(
            "openvino-bf16 needs a CPU with AMX or AVX-512 BF16, and this one has neither: OpenVINO would emulate "
            "bf16, slower than f32. Leave it out of --variants here."
        )
    missing = [name for name in asked if name not in onnx_names | other_runtimes]
    if missing:
        present = ", ".join(sorted({artifacts.variant_name(f) for f in files} | other_runtimes))
        raise ModelError(f"{onnx_dir} has no variant {', '.join(missing)}; it has {present}.")


def _probe_batches(config: BenchConfig, vocab_size: int) -> dict[str, dict]:
    """One batch per shape the run times, by label: what the attention kernel probe runs."""
    batches = {
        f"{batch_size} x {seq_len}": synthetic_batch(batch_size, seq_len, vocab_size, config.seed)
        for batch_size in (config.batch_sizes if config.fixed_shapes else ())
        for seq_len in config.seq_lens
    }
    texts = [text for text in config.real_texts if text.strip()]
    for batch_size in config.real_batch_sizes if texts else ():
        real = real_length_batches(Path(config.onnx_dir), texts, batch_size, config.seed)
        batches[f"{batch_size} x real (mean {mean_width(real)})"] = real[0]
    return batches


def _record_attention_kernels(config: BenchConfig, variant: str, path: Path, probes: dict, report: BenchReport):
    """Which kernel each shape's attention ran, for a graph with fused attention on CUDA (in a
    process of its own, before the timed sessions start); a probe that fails is a note, never the
    end of the run."""
    if not probes or not {op for _, op in graph_ops(path)} & ATTENTION_OPS:
        return
    try:
        report.attention_kernels[variant] = probe_attention_kernels(path, probes, "cuda", config.tf32)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:  # a diagnostic: the timing still runs
        report.notes.append(f"{path.name}: the attention kernel probe failed ({str(exc).splitlines()[0]}).")


def _onnx_runners(config: BenchConfig, named, report: BenchReport, vocab_size: int, probes: dict) -> list[tuple]:
    """One session per file, started (TensorRT engines built) before any timing; on CUDA, the
    attention kernels recorded first, by a process of their own."""
    tensorrt = TensorRTSettings(
        cache_dir=config.trt_cache_dir,
        fp16=config.trt_fp16,
        min_shape=(min(config.batch_sizes), min(config.seq_lens)),
        opt_shape=(max(config.batch_sizes), max(config.seq_lens)),
        max_shape=(max(config.batch_sizes), max(config.seq_lens)),
    )
    runners = []
    for variant, path in named:
        _record_attention_kernels(config, variant, path, probes, report)
        started = time.perf_counter()
        session = create_session(path, config.provider, config.threads, config.fallback, tensorrt, config.tf32)
        ran_on = session.get_providers()[0]
        if ran_on != EXECUTION_PROVIDERS[config.provider]:
            report.notes.append(f"{path.name}: {config.provider} could not start; measured on {ran_on} (--fallback).")
        if ran_on == EXECUTION_PROVIDERS["tensorrt"]:
            # Build every engine outside the timed region: the profile's extremes first.
            for batch_size, seq_len in (tensorrt.min_shape, tensorrt.max_shape):
                warm = synthetic_batch(batch_size, seq_len, vocab_size, config.seed)
                session.run(None, graph_feed(session.get_inputs(), warm))
        # session start (and TensorRT's engine builds), reported apart from the latencies
        report.setup_seconds[variant] = time.perf_counter() - started
        if is_fp16_graph(path) and ran_on == EXECUTION_PROVIDERS["cpu"]:
            report.notes.append(
                f"{path.name} is an fp16 graph: on CPU, onnxruntime runs most fp16 ops through "
                "casts and slow kernels, so expect it to be slower than fp32 here. "
                "fp16 is meant for CUDA and TensorRT."
            )
        runners.append((variant, ran_on, _onnx_runner(session, config.io_binding)))
        if config.cuda_graphs and ran_on == EXECUTION_PROVIDERS["cuda"] and not is_dynamic_int8(path):
            graphed = create_session(path, "cuda", config.threads, False, None, config.tf32, cuda_graph=True)
            runners.append(
                (f"{variant}{artifacts.CUDA_GRAPH}", f"{ran_on} + CUDA graphs", _cuda_graph_runner(graphed, session))
            )
    return runners


def _time_shape(config: BenchConfig, runners, sources, batch_size: int, seq_len: int, vocab_size: int):
    """Every runner on one fixed shape."""
    batch = synthetic_batch(batch_size, seq_len, vocab_size, config.seed)
    yield from time_batches(config, runners, sources, [batch], batch_size, seq_len, "fixed")


def time_batches(config: BenchConfig, runners, sources, batches: list[dict], batch_size: int, seq_len: int, lengths):
    """Every runner on the same batches (each call the next one). Variants are timed in
    interleaved rounds (A B C, A B C, ...) rather than one after the other, so that a shared
    machine slowing down mid-run penalises every variant alike."""
    rounds = max(1, min(config.rounds, config.min_iters))
    calls = [_cycling([make_call(batch) for batch in batches]) for _, _, make_call in runners]
    for call in calls:  # every batch once at least: a new shape's first run allocates
        time_calls(call, max(config.warmup_iters, len(batches) if lengths == "real" else 0), 0, 0.0)
    latencies: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for index, call in enumerate(calls):
            latencies[index].extend(
                time_calls(call, 0, math.ceil(config.min_iters / rounds), config.min_seconds / rounds)
            )
    baseline = None
    for (variant, provider, _), timings in zip(runners, latencies):
        stats = latency_stats(np.array(timings), batch_size)
        if variant == PYTORCH:
            baseline = stats["p50_ms"]
        # Speed-ups compare medians: robust to the odd slow call on a shared machine.
        source = sources.get(variant)
        yield Measurement(
            variant,
            batch_size,
            seq_len,
            len(timings),
            provider=provider,
            speedup_vs_pytorch=baseline / stats["p50_ms"] if baseline else None,
            file=str(source) if source else None,
            size_mb=source.stat().st_size / 1e6 if source and source.exists() else None,
            lengths=lengths,
            **stats,
        )


def time_real_lengths(config: BenchConfig, runners, sources):
    """Every runner on batches of the config's real texts, per real batch size (none without texts)."""
    texts = [text for text in config.real_texts if text.strip()]
    for batch_size in config.real_batch_sizes if texts else ():
        batches = real_length_batches(Path(config.onnx_dir), texts, batch_size, config.seed)
        yield from time_batches(config, runners, sources, batches, batch_size, mean_width(batches), "real")


def _cycling(calls: list[Callable[[], object]]) -> Callable[[], object]:
    """One call that runs the next of `calls` each time."""
    position = iter(range(1 << 62))
    return lambda: calls[next(position) % len(calls)]()


def _files_for_provider(config: BenchConfig, files: list[Path], report: BenchReport, prefix: str = "") -> list[Path]:
    """On a GPU provider, leave out what would measure something else than the claim: dynamic
    int8 files (CPU kernels; on a GPU they copy to the host every layer) unless asked for, and
    for TensorRT graphs with onnxruntime's fused contrib ops, which TensorRT cannot parse (the
    layers would silently fall back to onnxruntime's CUDA kernels)."""
    if config.provider == "cpu":
        on_cuda_only = [path for path in files if cuda_only_graph(path)]
        if on_cuda_only:
            report.notes.append(
                f"{', '.join(p.name for p in on_cuda_only)} not measured: fp16 fused ops only the CUDA provider runs."
            )
        return [path for path in files if path not in on_cuda_only]
    kept = []
    for path in files:
        int8 = is_dynamic_int8(path)
        if int8 and not config.int8_on_gpu:
            report.notes.append(
                f"{path.name} skipped: dynamic int8 runs on CPU kernels only; on {config.provider} "
                "every int8 layer would copy to the host (--int8-on-gpu measures it anyway)."
            )
            continue
        if config.provider == "tensorrt" and has_contrib_ops(path):
            report.notes.append(
                f"{path.name} skipped: TensorRT cannot parse onnxruntime's fused contrib ops; it gets "
                "the plain (or O1) export."
            )
            continue
        if int8:
            report.cpu_only_variants.append(prefix + artifacts.variant_name(path))
            report.notes.append(
                f"{path.name}: dynamic int8 on {config.provider} runs CPU kernels; measured as asked, "
                "never recommended for a GPU."
            )
        kept.append(path)
    if not kept:
        raise ModelError(f"no file in {files[0].parent} can be measured on {config.provider}: {' '.join(report.notes)}")
    return kept


def _set_torch_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def is_fp16_graph(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)


def _runtime_variant_runners(config: BenchConfig, report: BenchReport) -> list[tuple]:
    """The export's other runtimes' variants (OpenVINO on CPU, an AOTInductor package on its
    device), in the same interleaved rounds; OpenVINO's precision hints and the CPU features that
    decided them are recorded in the report."""
    variants = runtime_variants(Path(config.onnx_dir))
    if config.variants:
        variants = [v for v in variants if v.name in config.variants]
    elsewhere = sorted({v.runtime for v in variants if v.device != config.provider})
    from nlu_deploy.runtime.aoti_runtime import PT2_FILE, pt2_problem

    if (Path(config.onnx_dir) / PT2_FILE).is_file() and pt2_problem(config.onnx_dir):
        report.notes.append(f"{PT2_FILE} not measured: {pt2_problem(config.onnx_dir)}.")
    if elsewhere:
        report.notes.append(f"{', '.join(elsewhere)} variants of another device: not measured with {config.provider}.")
    runners = []
    for variant in (v for v in variants if v.device == config.provider):
        started = time.perf_counter()
        session = variant.session(config.threads)
        report.setup_seconds[variant.name] = time.perf_counter() - started
        if isinstance(variant, OpenVinoVariant):
            report.machine.setdefault("openvino_precision_hints", {})[variant.name] = session.precision
            report.machine["bf16_features"] = bf16_features()
        runners.append((variant, (variant.name, session.get_providers()[0], _onnx_runner(session, False))))
    return runners


def _onnx_runner(session, io_binding: bool) -> Callable[[dict], Callable[[], object]]:
    """Plain session.run on CPU; on a GPU provider with io_binding, inputs are copied to the
    device once and the output stays there, so the timing is of the model, not of PCIe."""
    inputs = session.get_inputs()
    on_gpu = session.get_providers()[0] in (EXECUTION_PROVIDERS["cuda"], EXECUTION_PROVIDERS["tensorrt"])

    def make_call(batch: dict) -> Callable[[], object]:
        feed = graph_feed(inputs, batch)  # converted once, outside the timed calls
        if not (on_gpu and io_binding):
            return lambda: session.run(None, feed)
        binding = _bind(session, feed, "cuda")
        return lambda: session.run_with_iobinding(binding)

    return make_call


def _cuda_graph_runner(graphed, plain) -> Callable[[dict], Callable[[], object]]:
    """CUDA graphs need every input and output at a fixed device address: each shape gets its
    own buffers (the outputs sized by one plain run) and its own graph id, captured on its first
    run and replayed after."""
    import onnxruntime as ort

    graph_ids = iter(range(1, 1 << 30))

    def make_call(batch: dict) -> Callable[[], object]:
        feed = graph_feed(graphed.get_inputs(), batch)
        binding = graphed.io_binding()
        for name, value in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for output, value in zip(graphed.get_outputs(), plain.run(None, feed)):
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(value.shape, value.dtype, "cuda", 0)
            binding.bind_ortvalue_output(output.name, buffer)
        options = ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", str(next(graph_ids)))
        graphed.run_with_iobinding(binding, options)  # the capture, outside the timed calls

        def replay():
            graphed.run_with_iobinding(binding, options)
            return binding  # its outputs: what a check copies back

        return replay

    return make_call


def _bind(session, feed: dict[str, np.ndarray], device: str):
    """Inputs copied to `device` once, outputs left there (allocated by onnxruntime)."""
    import onnxruntime as ort

    binding = session.io_binding()
    for name, value in feed.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, device)
    return binding


def bound_outputs(session, feed: dict[str, np.ndarray], device: str) -> list[np.ndarray]:
    """One run through IOBinding, the outputs copied back: what `bench` times on a GPU, checked
    against session.run in the tests (onnxruntime binds on CPU too)."""
    binding = _bind(session, feed, device)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


def _torch_runners(config: BenchConfig, notes: list[str]) -> list:
    """PyTorch baselines on the device matching the provider: eager fp32 always; fp16 and bf16
    on CUDA; torch.compile when asked (auto: on CUDA only, since on CPU compiling takes minutes)."""
    import torch

    device = pick_device("cuda" if config.provider in ("cuda", "tensorrt") else "cpu")
    if config.threads and device.type == "cpu":
        torch.set_num_threads(config.threads)
    compile_too = config.torch_compile == "on" or (config.torch_compile == "auto" and device.type == "cuda")
    variants = [(PYTORCH, torch.float32, False)]
    if device.type == "cuda":
        variants += [("pytorch-fp16", torch.float16, False), ("pytorch-bf16", torch.bfloat16, False)]
    cpu_bf16 = device.type == "cpu" and bool(bf16_features())
    if cpu_bf16:  # what a user on such a CPU compares against before adopting any other runtime
        notes.append(
            f"pytorch-bf16: fp32 weights under torch.autocast('cpu', bfloat16) ({', '.join(bf16_features())})."
        )
    if compile_too:
        variants.append(("pytorch-compiled", torch.bfloat16 if device.type == "cuda" else torch.float32, True))
    runners = []
    for name, dtype, compiled in variants:
        model = load_checkpoint(Path(config.model_dir)).to(device=device, dtype=dtype)
        if compiled:
            model.compile(dynamic=True)  # compiled during warm-up, outside the timed region
            notes.append(
                f"{name}: torch.compile(dynamic=True) in {str(dtype).removeprefix('torch.')}; "
                "compilation happens in the untimed warm-up."
            )
        runners.append((name, f"torch-{device.type}", _torch_call_factory(model, device)))
    if cpu_bf16:
        model = load_checkpoint(Path(config.model_dir)).to(device)
        runners.append(("pytorch-bf16", "torch-cpu-autocast-bf16", _torch_call_factory(model, device, torch.bfloat16)))
    return runners


def _torch_call_factory(model, device, autocast_dtype=None) -> Callable[[dict], Callable[[], object]]:
    """autocast_dtype: run under torch.autocast on the device in that dtype (CPU bf16)."""
    import contextlib

    import torch

    def precision():
        return torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()

    takes_token_types = "token_type_ids" in model.forward.__code__.co_varnames

    def make_call(batch: dict) -> Callable[[], object]:
        tensors = {
            k: torch.from_numpy(v).to(device) for k, v in batch.items() if k != "token_type_ids" or takes_token_types
        }

        def call():
            with torch.inference_mode(), precision():
                out = model(**tensors)  # every head: a joint model's two outputs too
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        return call

    return make_call
