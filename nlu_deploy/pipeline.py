"""`nlu-deploy run`: finetune -> export (fp32, optimized, int8) -> validate -> bench, with one
report that says which variant to ship."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

from nlu_deploy import artifacts
from nlu_deploy.benchmark import BenchReport, bench
from nlu_deploy.config import BenchConfig, ExportConfig, RunConfig, ValidateConfig
from nlu_deploy.export import export
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.reports import markdown_table, percent, signed_points
from nlu_deploy.train import finetune
from nlu_deploy.validate import ValidationReport, validate

CHECKPOINT_DIR = "checkpoint"
ONNX_DIR = "onnx"


@dataclass
class RunReport:
    finetune_metrics: dict
    validation: ValidationReport
    benchmark: BenchReport
    seconds: dict[str, float]

    @property
    def recommended(self) -> str | None:
        """The fastest ONNX variant that passed the accuracy gate."""
        return self.benchmark.recommend(self.validation.to_json())

    def key_figures(self) -> list[dict]:
        largest = max(m.batch_size for m in self.benchmark.measurements)
        shortest = min(m.seq_len for m in self.benchmark.measurements)
        rows = []
        for v in self.validation.variants:
            rows.append({"variant": v.variant, "file": v.file, "score": v.score, "scores": {
                             m: v.scores[m] for m in self.validation.gated_metrics}, "delta_points": v.delta_points,
                         "passed": v.passed, "batch_size": largest, "seq_len": shortest,
                         "speedup_vs_pytorch": self.benchmark.speedup(v.variant, largest, shortest)})
        return rows

    def to_json(self) -> dict:
        return {"recommended": self.recommended, "key_figures": self.key_figures(), "seconds": self.seconds,
                "finetune": self.finetune_metrics, "validation": self.validation.to_json(),
                "benchmark": self.benchmark.to_json()}

    def to_markdown(self) -> str:
        figures = self.key_figures()
        shape = f"batch {figures[0]['batch_size']}, seq len {figures[0]['seq_len']}" if figures else ""
        gated = self.validation.gated_metrics
        rows = [[f["variant"], *[percent(f["scores"][m]) for m in gated],
                 *[signed_points(f["delta_points"][m]) for m in gated], "pass" if f["passed"] else "FAIL",
                 f"{f['speedup_vs_pytorch']:.2f}x" if f["speedup_vs_pytorch"] else "n/a"] for f in figures]
        primary = self.finetune_metrics.get("primary_metric", "accuracy")
        best = self.finetune_metrics["best"]
        lines = [
            "# nlu-deploy run report", "",
            f"Recommended variant: **{self.recommended or 'none passed the accuracy gate'}** "
            "(fastest ONNX file within the accuracy budget).", "",
            f"PyTorch checkpoint: validation {DISPLAY_NAMES[primary]} {percent(best[primary])}% "
            f"(epoch {self.finetune_metrics['best_epoch']} of {len(self.finetune_metrics['epochs'])}).", "",
            markdown_table(["variant", *[f"{DISPLAY_NAMES[m]} %" for m in gated],
                            *[f"delta {DISPLAY_NAMES[m]} (points)" for m in gated], "gate",
                            f"speed-up vs PyTorch ({shape})"], rows),
            "", "## Validation", "", self.validation.to_markdown(),
            "## Benchmark", "", self.benchmark.to_markdown(),
            "## Time per stage", "",
            markdown_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in self.seconds.items()]), "",
        ]
        return "\n".join(lines)


def run(config: RunConfig, show_progress: bool = True, log=print) -> RunReport:
    seconds: dict[str, float] = {}
    with artifacts.staged_output(config.output, config.overwrite) as out:
        started = time.perf_counter()
        log("[1/4] fine-tuning")
        finetune(replace(config.finetune, output=out / CHECKPOINT_DIR, overwrite=False), show_progress)
        seconds["finetune"] = time.perf_counter() - started

        started = time.perf_counter()
        log(f"[2/4] exporting to ONNX (fp32, {config.optimize}, dynamic int8)")
        export(ExportConfig(model_dir=out / CHECKPOINT_DIR, output=out / ONNX_DIR, optimize=config.optimize,
                            quantize="dynamic", quantize_preset=config.quantize_preset))
        seconds["export"] = time.perf_counter() - started

        started = time.perf_counter()
        log("[3/4] validating every ONNX file against PyTorch on the held-out split")
        validation = validate(ValidateConfig(model_dir=out / CHECKPOINT_DIR, onnx_dir=out / ONNX_DIR,
                                             data=out / CHECKPOINT_DIR / artifacts.VALIDATION_SPLIT,
                                             max_score_drop=config.max_score_drop))
        validation.data = str(config.output / CHECKPOINT_DIR / artifacts.VALIDATION_SPLIT)  # final path
        seconds["validate"] = time.perf_counter() - started

        started = time.perf_counter()
        log("[4/4] benchmarking PyTorch and every ONNX file")
        benchmark = bench(BenchConfig(onnx_dir=out / ONNX_DIR, model_dir=out / CHECKPOINT_DIR,
                                      batch_sizes=config.batch_sizes, seq_lens=config.seq_lens,
                                      min_seconds=config.bench_min_seconds))
        seconds["bench"] = time.perf_counter() - started

        metrics = artifacts.read_json(out / CHECKPOINT_DIR / artifacts.METRICS)
        report = RunReport(metrics, validation, benchmark, seconds)
        (out / artifacts.REPORT_MD).write_text(report.to_markdown(), encoding="utf-8")
        (out / artifacts.REPORT_JSON).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        artifacts.write_manifest(out, "run", {"output": config.output, "optimize": config.optimize,
                                              "max_score_drop": config.max_score_drop})
    return report

