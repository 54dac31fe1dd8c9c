"""What `bench` does around the timing: the validation reports it recommends and plots from
(checked before minutes of timing), the files it writes, and the sentence that names the
fastest variant that passed validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.errors import ConfigError
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.runtime.runtime_variants import runtime_label


def validation_reports(onnx_dir: Path, compared: tuple[tuple[str, Path], ...]) -> dict[str, dict]:
    """validation.json of the benchmarked directory (label "") and of each --also directory."""
    reports = {}
    for label, directory in (("", Path(onnx_dir)), *compared):
        path = directory / artifacts.VALIDATION_REPORT
        if not path.exists():
            raise ConfigError(f"--accuracy-plot needs {path}: run `nlu-deploy validate --onnx {directory}` first.")
        reports[label] = artifacts.read_json(path)
    return reports


def recommendation_source(onnx_dir: Path, validation_report: Path | None) -> dict:
    path = Path(validation_report) if validation_report else Path(onnx_dir) / artifacts.VALIDATION_REPORT
    if not path.exists():
        raise ConfigError(
            f"--recommend needs a validation report: run `nlu-deploy validate` first "
            f"or pass --validation-report ({path} does not exist)."
        )
    return artifacts.read_json(path)


def write_outputs(report, json_path=None, plot_path=None, accuracy_plot=None, reports=None, shape=None) -> list[str]:
    """Write the JSON and plots asked for; return a line per plot drawn. The accuracy plot shows
    each variant at one `shape` (batch size, sequence length)."""
    lines = []
    if json_path:
        report.write_json(json_path)
    if plot_path:
        from nlu_deploy.evaluation.plots import plot_benchmark

        lines.append(f"Plot: {plot_benchmark(report.to_json(), plot_path)}")
    if accuracy_plot:
        from nlu_deploy.evaluation.benchmark import tradeoff_points
        from nlu_deploy.evaluation.plots import plot_accuracy_vs_speed

        points = tradeoff_points(report.to_json(), reports or {}, *shape)
        lines.append(f"Plot: {plot_accuracy_vs_speed(points, accuracy_plot, 'Held-out score against throughput')}")
    return lines


def recommendation(report, validation: dict) -> str:
    best = report.recommend(validation)
    budget = validation.get("max_score_drop")
    metric = " / ".join(DISPLAY_NAMES[m] for m in validation.get("gated_metrics", ["accuracy"]))
    if best:
        return f"Recommended: {best} (fastest variant within {budget} {metric} points of PyTorch{_across(report, validation, best)})."
    return f"Recommended: none (no measured variant passed validation within {budget} points)."


def runtime_of(variant: str) -> str:
    return runtime_label(variant.rsplit("/", 1)[-1])


def _across(report, validation: dict, best: str) -> str:
    """Why across runtimes: the winner against the best passing variant of the other runtime."""
    passed = {v["variant"] for v in validation.get("variants", []) if v["passed"]}
    others = [v for v in report.variants() if v in passed and runtime_of(v) not in (runtime_of(best), "PyTorch")]
    if not others:
        return ""
    rival = max(others, key=report.geomean_throughput)
    ratio = report.geomean_throughput(best) / report.geomean_throughput(rival)
    return (
        f"; {runtime_of(best)} {best} runs {ratio:.2f}x the geometric-mean throughput of {runtime_of(rival)}'s "
        f"best passing variant, {rival}"
    )


def choose_shipped(report, validation: dict) -> dict:
    """The variant to ship: the fastest that passed the accuracy gate on real-length batches (the
    geometric mean of sequences/s over the real batch sizes; fixed shapes when none were timed),
    with every other variant's figure and a sentence saying what it beat and by how much."""
    lengths = "real" if any(m.lengths == "real" for m in report.measurements) else "fixed"
    rates: dict[str, list[float]] = {}
    for m in report.measurements:
        if m.lengths == lengths:
            rates.setdefault(m.variant, []).append(m.sequences_per_second)
    rate = {variant: float(np.exp(np.mean(np.log(values)))) for variant, values in rates.items()}
    by_name = {v["variant"]: v for v in validation.get("variants", [])}
    gate = {
        v: by_name[artifacts.gated_variant(v)] for v in rate if artifacts.gated_variant(v) in by_name
    }  # a CUDA-graph run: its file's
    passing = [v for v in rate if v in gate and gate[v]["passed"] and v not in report.cpu_only_variants]
    failed = sorted(v for v in rate if v in gate and not gate[v]["passed"])
    choice = {"variant": None, "lengths": lengths, "sequences_per_s": rate, "failed_gate": failed,
              "max_score_drop": validation.get("max_score_drop"), "machine": report.machine.get("cpu")}  # fmt: skip
    if not passing:
        return {**choice, "why": "No variant passed the accuracy gate; nothing is recommended."}
    best = max(passing, key=rate.get)
    others = sorted((v for v in passing if v != best), key=rate.get, reverse=True)
    where = "real-length held-out batches" if lengths == "real" else "the fixed shapes"
    why = f"{best} ships: {rate[best]:.0f} sequences/s on {where} (geometric mean over batch sizes)"
    if others:
        why += f", {rate[best] / rate[others[0]]:.2f}x the next fastest variant within the gate ({others[0]})"
    if "pytorch" in rate:
        why += f" and {rate[best] / rate['pytorch']:.2f}x PyTorch eager"
    why += "." + (f" Over the accuracy gate: {', '.join(failed)}." if failed else "")
    return {**choice, "variant": best, "file": gate[best]["file"], "runtime": runtime_of(best),
            "beats": {v: rate[best] / rate[v] for v in others}, "why": why}  # fmt: skip
