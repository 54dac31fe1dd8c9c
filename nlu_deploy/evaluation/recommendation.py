"""What `bench` does around the timing: the validation reports it recommends and plots from
(checked before minutes of timing), the files it writes, and the sentence that names the
fastest variant that passed validation."""

from __future__ import annotations

from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.errors import ConfigError
from nlu_deploy.metrics import DISPLAY_NAMES


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
    name = variant.rsplit("/", 1)[-1]
    return "OpenVINO" if name.startswith("openvino-") else "PyTorch" if name.startswith("pytorch") else "onnxruntime"


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
