"""`--quantize auto`: the fastest int8 model within an accuracy budget, with the evidence.

Every candidate (dynamic or static, plain or O2-optimized graph, per-channel or not) is scored
on held-out data and timed at batch 1 and 32 in the same run as PyTorch eager. A candidate
over budget gets its most sensitive layers (measured, one group at a time) put back in fp32
until it fits, as long as it could still beat the fastest candidate that already fits.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.evaluation.benchmark import latency_stats, synthetic_batch, time_calls
from nlu_deploy.export.quantize import quantize_dynamic_int8, quantize_static_int8
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.reports import markdown_table
from nlu_deploy.runtime.openvino_runtime import OpenVinoSession, OpenVinoVariant
from nlu_deploy.runtime.sessions import create_session
from nlu_deploy.tasks import Task, flat_logits, onnx_backend, torch_backend

SKIPPED_FOR_TIME = "skipped: the search's time was spent"
SENSITIVITY_EXAMPLES = 256  # enough to rank layers by logit error; the gate uses all held-out data
# Batch-32 medians within 5% of each other are ties: repeated timings of one file on a shared
# 2-core machine move by about that much, so the order inside that band is noise.
TIE_TOLERANCE = 0.05
# Paired bootstrap over the held-out examples: each draw scores PyTorch and the candidate on the
# same resampled rows, so the interval is that of the difference, not of two separate scores.
BOOTSTRAP_DRAWS = 200
CONFIDENCE = 0.90  # two-sided; its lower end is a one-sided 95% bound on the loss


@dataclass
class Candidate:
    name: str
    mode: str  # dynamic | static
    graph: str  # file the int8 model was made from
    per_channel: bool
    method: str | None = None  # calibration method for static
    activation_matmuls: bool = False  # dynamic: also the attention MatMuls between two activations
    nodes_in_fp32: list[str] = field(default_factory=list)
    size_mb: float | None = None
    accuracy: float | None = None  # the task's primary score: accuracy, entity F1, or the joint mean
    delta_points: float | None = None  # of the primary score
    deltas: dict[str, float] = field(default_factory=dict)  # every gated score, in points
    # per gated score: the CONFIDENCE interval of the delta, in points (paired bootstrap)
    delta_intervals: dict[str, list[float]] = field(default_factory=dict)
    supported: bool = False  # within budget even at the interval's lower end: the evidence says so
    latency_b1_ms: float | None = None
    latency_b32_ms: float | None = None
    speedup_b32_vs_pytorch: float | None = None
    fits: bool = False
    kept: bool = False
    error: str | None = None
    note: str = ""
    runtime: str = "onnxruntime"  # or openvino: an export --openvino variant, measured as it is


@dataclass
class QuantizationReport:
    budget_points: float
    data: str
    examples: int
    pytorch_accuracy: float
    seq_len: int
    pytorch_latency_b1_ms: float
    pytorch_latency_b32_ms: float
    candidates: list[Candidate]
    kept: str | None
    reason: str
    metric: str = "accuracy"  # or "entity F1": what `accuracy` holds in this report
    primary_metric: str = "accuracy"  # its key in the candidates' deltas and intervals

    def to_json(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        def number(value, digits=2, suffix=""):
            return "" if value is None else f"{value:.{digits}f}{suffix}"

        rows = [
            [
                "pytorch (eager fp32)",
                "",
                "",
                number(100 * self.pytorch_accuracy),
                "",
                number(self.pytorch_latency_b1_ms),
                number(self.pytorch_latency_b32_ms),
                "1.00x",
                "",
                "",
            ]
        ]
        for c in self.candidates:
            status = "fits" if c.fits else ("error" if c.error else "over budget")
            if c.fits and not c.supported:
                status = "fits, not shown"  # the point estimate fits, the interval reaches past the budget
            status = f"**kept** ({status})" if c.kept else status
            interval = c.delta_intervals.get(self.primary_metric)
            delta = number(c.delta_points, 2) + (f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "")
            rows.append(
                [
                    c.name,
                    number(c.size_mb, 1),
                    len(c.nodes_in_fp32),
                    number(None if c.accuracy is None else 100 * c.accuracy),
                    delta,
                    number(c.latency_b1_ms),
                    number(c.latency_b32_ms),
                    number(c.speedup_b32_vs_pytorch, 2, "x"),
                    status,
                    c.error or c.note,
                ]
            )
        table = markdown_table(
            [
                "candidate",
                "size MB",
                "nodes in fp32",
                f"{self.metric} %",
                f"delta (points) [{100 * CONFIDENCE:.0f}% interval]",
                "latency b1 ms",
                "latency b32 ms",
                "b32 vs pytorch",
                "status",
                "notes",
            ],
            rows,
        )
        return (
            f"Quantization search: budget {self.budget_points} {self.metric} points, {self.examples} held-out "
            f"examples from {self.data}, latency at sequence length {self.seq_len}. Deltas carry a "
            f"{100 * CONFIDENCE:.0f}% paired-bootstrap interval ({BOOTSTRAP_DRAWS} resamples of the held-out "
            'examples); "fits, not shown" means the delta is within budget but its interval reaches past '
            f"it, so these examples cannot show it is.\n\n{table}\n\n"
            f"Kept: **{self.kept or 'none'}**. {self.reason}\n"
        )


class Search:
    """Holds what every candidate is compared with: held-out data, reference, timing inputs.
    Candidates are scored with the task's own scores (accuracy, entity F1, ...) and must stay
    within the budget on each score the task gates on; labels the model never had count as errors."""

    def __init__(
        self,
        workdir: Path,
        task: Task,
        model,
        tokenizer,
        heldout,
        calibration: list[dict],
        budget_points: float,
        preset: str,
        calibration_method: str,
        minutes: float | None = None,
    ):
        """`minutes`: the time candidates may take, from now; those left when it is spent are
        skipped and reported as skipped."""
        self.deadline = time.monotonic() + 60 * minutes if minutes else None
        self.minutes = minutes
        self.workdir, self.task, self.tokenizer, self.heldout = workdir, task, tokenizer, heldout
        self.calibration, self.budget, self.preset = calibration, budget_points, preset
        self.calibration_method = calibration_method
        self.metric = DISPLAY_NAMES[task.primary_metric]
        self.model_config = model.config
        self.max_length = tokenizer.model_max_length
        self.torch_model = torch_model = torch_backend(model, tokenizer, self.max_length)
        self.reference_outputs = task.infer(torch_model, self._examples()).outputs
        self.reference_scores = task.score(heldout, self.reference_outputs, model.config)
        self.reference_accuracy = self.reference_scores[task.primary_metric]
        # the same resampled example sets for every candidate, and PyTorch's scores on each
        rng = np.random.default_rng(0)
        self.draws = [rng.integers(0, len(heldout), len(heldout)) for _ in range(BOOTSTRAP_DRAWS)]
        self.reference_draw_scores = [
            task.score(*task.resampled(heldout, self.reference_outputs, draw), model.config) for draw in self.draws
        ]
        lengths = sorted(len(ids) for ids in tokenizer(heldout.texts)["input_ids"])
        self.seq_len = max(16, int(np.ceil(lengths[int(0.9 * (len(lengths) - 1))] / 8) * 8))
        self.vocab_size = model.config.vocab_size
        self.torch_latency = {b: self._time(torch_model.run_batch, b) for b in (1, 32)}

    def out_of_time(self, candidate: Candidate) -> bool:
        """Past the deadline: the candidate is marked skipped (and so never kept)."""
        if self.deadline is None or time.monotonic() < self.deadline:
            return False
        candidate.error = f"{SKIPPED_FOR_TIME} ({self.minutes:g} min)"
        return True

    def _examples(self, limit: int | None = None) -> list:
        examples = self.task.examples(self.heldout)
        return examples[:limit] if limit else examples

    def _time(self, run_batch: Callable[[dict], object], batch_size: int) -> float:
        batch = synthetic_batch(batch_size, self.seq_len, self.vocab_size, seed=0)
        latencies = time_calls(lambda: run_batch(batch), warmup_iters=3, min_iters=10, min_seconds=1.0)
        return latency_stats(np.array(latencies), batch_size)["p50_ms"]

    def build(self, candidate: Candidate, source: Path, target: Path) -> None:
        if candidate.mode == "dynamic":
            quantize_dynamic_int8(
                source,
                target,
                self.preset,
                candidate.per_channel,
                candidate.nodes_in_fp32,
                candidate.activation_matmuls,
            )
        else:
            quantize_static_int8(
                source,
                target,
                self.calibration,
                candidate.method,
                self.preset,
                candidate.per_channel,
                candidate.nodes_in_fp32,
            )

    def outputs(self, path: Path, examples: list | None = None) -> dict[str, np.ndarray]:
        backend = onnx_backend(path, self.tokenizer, self.model_config, self.max_length)
        return self.task.infer(backend, examples or self._examples()).outputs

    def score(self, path: Path, examples: list | None = None) -> np.ndarray:
        """Every output's rows side by side (for the sensitivity ranking)."""
        return flat_logits(self.outputs(path, examples))

    def measure(self, candidate: Candidate, path: Path | OpenVinoVariant) -> None:
        files = [path.path, path.path.with_suffix(".bin")] if isinstance(path, OpenVinoVariant) else [path]
        candidate.size_mb = sum(f.stat().st_size for f in files) / 1e6
        outputs = self.outputs(path)
        scores = self.task.score(self.heldout, outputs, self.model_config)
        candidate.accuracy = scores[self.task.primary_metric]
        candidate.delta_points = 100 * (candidate.accuracy - self.reference_accuracy)
        candidate.deltas = {m: 100 * (scores[m] - self.reference_scores[m]) for m in self.task.gated_metrics}
        candidate.fits = all(-d <= self.budget + 1e-9 for d in candidate.deltas.values())
        candidate.delta_intervals = self.delta_intervals(outputs)
        candidate.supported = candidate.fits and all(
            -candidate.delta_intervals[m][0] <= self.budget + 1e-9 for m in self.task.gated_metrics
        )
        session = OpenVinoSession(path) if isinstance(path, OpenVinoVariant) else create_session(path)
        names = [i.name for i in session.get_inputs()]
        run = lambda batch: session.run(None, {n: batch[n] for n in names})  # noqa: E731
        candidate.latency_b1_ms, candidate.latency_b32_ms = self._time(run, 1), self._time(run, 32)
        candidate.speedup_b32_vs_pytorch = self.torch_latency[32] / candidate.latency_b32_ms

    def delta_intervals(self, outputs: dict[str, np.ndarray]) -> dict[str, list[float]]:
        """Per gated score (and the primary one), the CONFIDENCE interval of (candidate - PyTorch) in points."""
        deltas = {m: [] for m in dict.fromkeys((self.task.primary_metric, *self.task.gated_metrics))}
        for draw, reference in zip(self.draws, self.reference_draw_scores):
            scores = self.task.score(*self.task.resampled(self.heldout, outputs, draw), self.model_config)
            for metric in deltas:
                deltas[metric].append(100 * (scores[metric] - reference[metric]))
        tail = 100 * (1 - CONFIDENCE) / 2
        return {m: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for m, v in deltas.items()}

    def layer_groups(self, graph: Path) -> dict[str, list[str]]:
        """Quantizable nodes grouped by encoder layer (embeddings and head apart)."""
        import onnx

        groups: dict[str, list[str]] = {}
        for node in onnx.load(str(graph)).graph.node:
            if node.op_type not in ("MatMul", "Gather", "Attention", "EmbedLayerNormalization", "Gemm"):
                continue
            layer = re.search(r"layer[._/](\d+)", node.name)
            key = f"layer {layer.group(1)}" if layer else ("embeddings" if "embedding" in node.name.lower() else "head")
            groups.setdefault(key, []).append(node.name)
        return groups

    def repair(self, candidate: Candidate, source: Path, target: Path, beat_latency: float | None) -> None:
        """Put the most accuracy-sensitive layer groups back in fp32 until the candidate fits."""
        groups = self.layer_groups(source)
        subset = self._examples(SENSITIVITY_EXAMPLES)
        reference = flat_logits(self.task.infer(self.torch_model, subset).outputs)
        errors = {}
        for name, nodes in groups.items():  # error left when only this group stays fp32
            trial = Candidate(**{**asdict(candidate), "nodes_in_fp32": nodes})
            self.build(trial, source, target)
            errors[name] = float(np.mean((self.score(target, subset) - reference) ** 2))
        ranking = sorted(groups, key=errors.get)
        kept_fp32: list[str] = []
        for step, name in enumerate(ranking[:-1], start=1):  # all groups in fp32 would be no int8 at all
            kept_fp32.append(name)
            candidate.nodes_in_fp32 = sorted(n for g in kept_fp32 for n in groups[g])
            self.build(candidate, source, target)
            self.measure(candidate, target)
            candidate.note = f"kept in fp32 by sensitivity: {', '.join(kept_fp32)}"
            if candidate.fits or (beat_latency is not None and candidate.latency_b32_ms >= beat_latency):
                return


def candidate_specs(graphs: dict[str, Path], per_channel: bool | None, method: str) -> list[Candidate]:
    channel_options = [False, True] if per_channel is None else [per_channel]
    specs = []
    for graph_name in graphs:
        for channel in channel_options:
            suffix = "/per-channel" if channel else ""
            specs.append(Candidate(f"dynamic/{graph_name}{suffix}", "dynamic", graph_name, channel))
    if "plain" in graphs:  # the optimized graph's fused Attention already covers these MatMuls
        specs.append(
            Candidate("dynamic/plain/all-matmuls", "dynamic", "plain", bool(per_channel), activation_matmuls=True)
        )
    for channel in channel_options:  # QDQ cannot wrap the fused ops of the optimized graph
        suffix = "/per-channel" if channel else ""
        specs.append(Candidate(f"static-{method}/plain{suffix}", "static", "plain", channel, method))
    return specs


def search_int8(
    search: Search,
    graphs: dict[str, Path],
    target: Path,
    per_channel: bool | None,
    openvino: list[OpenVinoVariant] = (),
) -> QuantizationReport:
    """Try every candidate, repair the promising ones, write the fastest onnxruntime file that
    fits to `target`. `openvino`: variants measured beside them (not repaired); when one is the
    fastest within budget it is the kept candidate, and `target` still gets onnxruntime's best."""
    search.workdir.mkdir(parents=True, exist_ok=True)
    candidates = candidate_specs(graphs, per_channel, search.calibration_method)
    files = _build_and_measure(search, candidates, graphs)
    _repair_promising(search, candidates, graphs, files)
    onnx_fitting = [c for c in candidates if c.fits]
    candidates += _measure_openvino(search, openvino)
    best, reason = _keep_fastest_fitting(search, candidates, onnx_fitting, files, target)
    skipped = [c.name for c in candidates if (c.error or "").startswith(SKIPPED_FOR_TIME)]
    if skipped:
        reason += f" Skipped for time ({search.minutes:g} min): {', '.join(skipped)}."
    shutil.rmtree(search.workdir)
    return QuantizationReport(
        search.budget,
        search.heldout.source,
        len(search.heldout),
        search.reference_accuracy,
        search.seq_len,
        search.torch_latency[1],
        search.torch_latency[32],
        candidates,
        best.name if best else None,
        reason,
        search.metric,
        search.task.primary_metric,
    )


def _build_and_measure(search: Search, candidates: list[Candidate], graphs: dict[str, Path]) -> dict[str, Path]:
    """Each onnxruntime recipe built and measured; one that fails is reported, not fatal."""
    files: dict[str, Path] = {}
    for index, candidate in enumerate(candidates):
        path = search.workdir / f"candidate_{index}.onnx"
        if search.out_of_time(candidate):
            continue
        try:
            search.build(candidate, graphs[candidate.graph], path)
            search.measure(candidate, path)
            files[candidate.name] = path
        except Exception as exc:  # one failing recipe must not end the search; it is reported
            candidate.error = _first_line(exc)
    return files


def _measure_openvino(search: Search, variants: list[OpenVinoVariant]) -> list[Candidate]:
    """The export's OpenVINO variants, measured as they are (not repaired)."""
    measured = []
    for variant in variants:
        candidate = Candidate(variant.name, "openvino", variant.file, False, runtime="openvino")
        candidate.note = f"OpenVINO, precision hint {variant.precision}"
        measured.append(candidate)
        if search.out_of_time(candidate):
            continue
        try:
            search.measure(candidate, variant)
        except Exception as exc:  # noqa: BLE001 - reported like a failing onnxruntime recipe
            candidate.error = _first_line(exc)
    return measured


def _repair_promising(search: Search, candidates: list[Candidate], graphs: dict[str, Path], files) -> None:
    """Candidates over budget, fastest first, get layers put back in fp32, as long as they could
    still beat the fastest candidate that already fits."""
    for index, candidate in sorted(enumerate(candidates), key=lambda item: item[1].latency_b32_ms or 1e18):
        if candidate.fits or candidate.error:
            continue
        fitting = [c.latency_b32_ms for c in candidates if c.fits]
        beat = min(fitting) if fitting else None
        if beat is not None and candidate.latency_b32_ms >= beat:
            candidate.note = "over budget, and slower than a candidate that fits: not repaired"
            continue
        if search.deadline is not None and time.monotonic() >= search.deadline:
            candidate.note = "over budget; not repaired: the search's time was spent"
            continue
        path = search.workdir / f"candidate_{index}.onnx"
        search.repair(candidate, graphs[candidate.graph], path, beat)
        files[candidate.name] = path


def _keep_fastest_fitting(search: Search, candidates, onnx_fitting, files, target: Path):
    """(the kept candidate or None, the sentence saying why). Candidates the evidence shows within
    budget come first; when none is, the fastest that fits on the point estimate is kept, and the
    reason says the data cannot confirm it. `target` gets onnxruntime's best either way."""
    fitting = [c for c in candidates if c.fits]
    if not fitting:
        return None, f"No candidate stayed within {search.budget} points, even with layers kept in fp32."
    shown = [c for c in fitting if c.supported]
    best, ties = pick_kept(shown or fitting)
    best.kept = True
    onnx_best = best if best.runtime == "onnxruntime" else _best_onnx(onnx_fitting)
    if onnx_best is not None:
        shutil.copy2(files[onnx_best.name], target)
    reason = _why_kept(search, best, ties, len(shown or fitting), len(fitting), bool(shown))
    if best.runtime == "openvino":
        kept_file = f"{target.name} holds {onnx_best.name}, onnxruntime's best" if onnx_best else (
            f"no onnxruntime candidate fits, so {target.name} is not written"
        )  # fmt: skip
        reason += f" It runs on OpenVINO: deploy it with `predict --variant {best.name}` ({kept_file})."
    return best, reason


def _why_kept(search: Search, best: Candidate, ties: list, pool: int, fitting: int, shown: bool) -> str:
    which = "shown within" if shown else "within"
    figures = f"{best.delta_points:+.2f} points, {best.speedup_b32_vs_pytorch:.2f}x PyTorch eager at batch 32"
    if len(ties) > 1:
        reason = (
            f"{len(ties)} of the {pool} candidate(s) {which} {search.budget} points run within "
            f"{100 * TIE_TOLERANCE:.0f}% of the fastest at batch 32, which is timing noise; it is the most "
            f"accurate of those ties ({figures})."
        )
    else:
        reason = f"It is the fastest at batch 32 of {pool} candidate(s) {which} {search.budget} points ({figures})."
    if not shown:
        return reason + (
            f" Caution: no candidate's {100 * CONFIDENCE:.0f}% interval stays within the budget on "
            f"{len(search.heldout)} held-out examples, so the data cannot show that the kept file loses "
            "less than that; validate it on more data."
        )
    reason += f" Its {100 * CONFIDENCE:.0f}% interval stays within the budget on every gated score"
    if fitting > pool:
        return reason + f"; {fitting - pool} faster or other candidate(s) fit only on the point estimate."
    return reason + "."


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def _best_onnx(fitting: list[Candidate]) -> Candidate | None:
    """onnxruntime's candidate for model_quantized.onnx when an OpenVINO variant won."""
    shown = [c for c in fitting if c.supported]
    return pick_kept(shown or fitting)[0] if fitting else None


def pick_kept(fitting: list[Candidate]) -> tuple[Candidate, list[Candidate]]:
    """(the candidate to keep, its ties). Speeds that differ by less than the timing noise are
    ties, and among ties the most accurate wins (its worst gated delta is the least negative):
    on BANKING77 the search once kept a file at -0.30 points over one at -0.10 that was 1%
    slower, and the kept file then lost 0.55 points on held-out data."""
    fastest = min(c.latency_b32_ms for c in fitting)
    ties = [c for c in fitting if c.latency_b32_ms <= fastest * (1 + TIE_TOLERANCE)]
    return max(ties, key=lambda c: (min(c.deltas.values(), default=0.0), -c.latency_b32_ms)), ties


def write_report(report: QuantizationReport, directory: Path) -> None:
    artifacts.write_json(directory / artifacts.QUANTIZATION_REPORT_JSON, report.to_json())
    (directory / artifacts.QUANTIZATION_REPORT_MD).write_text(report.to_markdown(), encoding="utf-8")
