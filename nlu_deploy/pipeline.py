"""`nlu-deploy run`: finetune -> export (fp32, optimized, int8) -> validate -> bench, with one
report that says which variant to ship. With --student-layers K the teacher's distilled student
goes through the same stages and is measured in the same bench run, against the teacher's PyTorch."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from nlu_deploy import artifacts
from nlu_deploy.config import BenchConfig, DistillConfig, ExportConfig, RunConfig, ValidateConfig
from nlu_deploy.evaluation.benchmark import BenchReport, bench, tradeoff_points
from nlu_deploy.evaluation.plots import plot_accuracy_vs_speed
from nlu_deploy.evaluation.recommendation import choose_shipped
from nlu_deploy.evaluation.validate import ValidationReport, validate
from nlu_deploy.export.onnx_export import export
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.reports import markdown_table, percent, signed_points
from nlu_deploy.stopping import Stopped
from nlu_deploy.training.checkpointing import TrainingInterrupted
from nlu_deploy.training.distill import distill
from nlu_deploy.training.loop import finetune
from nlu_deploy.training.search import best_dir, search, search_dir

CHECKPOINT_DIR = "checkpoint"
ONNX_DIR = "onnx"
STUDENT_DIR = "student"  # with --student-layers: the student's checkpoint and ONNX files
STUDENT_LABEL = "student"  # its variants in the benchmark: student/int8, ...
TRADEOFF_PLOT = "accuracy_vs_speed.png"


@dataclass
class RunReport:
    finetune_metrics: dict
    validation: ValidationReport
    benchmark: BenchReport
    seconds: dict[str, float]
    student_validation: ValidationReport | None = None
    student_metrics: dict | None = None
    choice: dict | None = None  # --recipe measured: what ships, and why (recommendation.choose_shipped)

    @property
    def recommended(self) -> str | None:
        """What ships: the measured choice, else the fastest variant that passed the accuracy gate."""
        if self.choice is not None:
            return self.choice["variant"]
        return self.benchmark.recommend(self.validation.to_json())

    def key_figures(self) -> list[dict]:
        largest = max(m.batch_size for m in self.benchmark.measurements)
        shortest = min(m.seq_len for m in self.benchmark.measurements)
        rows = []
        for v in self.validation.variants:
            rows.append(
                {
                    "variant": v.variant,
                    "file": v.file,
                    "score": v.score,
                    "scores": {m: v.scores[m] for m in self.validation.gated_metrics},
                    "delta_points": v.delta_points,
                    "passed": v.passed,
                    "batch_size": largest,
                    "seq_len": shortest,
                    "speedup_vs_pytorch": self.benchmark.speedup(v.variant, largest, shortest),
                }
            )
        return rows

    def teacher_and_student(self) -> list[dict]:
        """Every variant of both models at the largest batch and shortest length: its held-out
        score, the change from the teacher's PyTorch score and its speed-up over the teacher's
        PyTorch eager, from the same bench run."""
        if self.student_validation is None:
            return []
        largest = max(m.batch_size for m in self.benchmark.measurements)
        shortest = min(m.seq_len for m in self.benchmark.measurements)
        points = tradeoff_points(
            self.benchmark.to_json(),
            {"": self.validation.to_json(), STUDENT_LABEL: self.student_validation.to_json()},
            largest,
            shortest,
        )
        teacher_score = self.validation.pytorch_score
        return [{**p, "delta_vs_teacher_points": 100 * (p["score"] - teacher_score)} for p in points]

    def to_json(self) -> dict:
        report = {
            "recommended": self.recommended,
            "choice": self.choice,
            "key_figures": self.key_figures(),
            "seconds": self.seconds,
            "finetune": self.finetune_metrics,
            "validation": self.validation.to_json(),
            "benchmark": self.benchmark.to_json(),
        }
        if self.student_validation is not None:
            report.update(
                student={"finetune": self.student_metrics, "validation": self.student_validation.to_json()},
                teacher_and_student=self.teacher_and_student(),
            )
        return report

    def to_markdown(self) -> str:
        figures = self.key_figures()
        shape = f"batch {figures[0]['batch_size']}, seq len {figures[0]['seq_len']}" if figures else ""
        gated = self.validation.gated_metrics
        rows = [
            [
                f["variant"],
                *[percent(f["scores"][m]) for m in gated],
                *[signed_points(f["delta_points"][m]) for m in gated],
                "pass" if f["passed"] else "FAIL",
                f"{f['speedup_vs_pytorch']:.2f}x" if f["speedup_vs_pytorch"] else "n/a",
            ]
            for f in figures
        ]
        primary = self.finetune_metrics.get("primary_metric", "accuracy")
        best = self.finetune_metrics["best"]
        lines = [
            "# nlu-deploy run report",
            "",
            f"Recommended variant: **{self.recommended or 'none passed the accuracy gate'}** "
            "(fastest variant within the accuracy budget).",
            *(["", self.choice["why"]] if self.choice else []),
            "",
            f"PyTorch checkpoint: validation {DISPLAY_NAMES[primary]} {percent(best[primary])}% "
            f"(epoch {self.finetune_metrics['best_epoch']} of {len(self.finetune_metrics['epochs'])}).",
            "",
            markdown_table(
                [
                    "variant",
                    *[f"{DISPLAY_NAMES[m]} %" for m in gated],
                    *[f"delta {DISPLAY_NAMES[m]} (points)" for m in gated],
                    "gate",
                    f"speed-up vs PyTorch ({shape})",
                ],
                rows,
            ),
            *self._student_markdown(),
            "",
            "## Validation",
            "",
            self.validation.to_markdown(),
            "## Benchmark",
            "",
            self.benchmark.to_markdown(),
            "## Time per stage",
            "",
            markdown_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in self.seconds.items()]),
            "",
        ]
        return "\n".join(lines)

    def _student_markdown(self) -> list[str]:
        rows = self.teacher_and_student()
        if not rows:
            return []
        facts = self.student_metrics["distillation"]
        table = [
            [
                p["variant"] if p["model"] != "teacher" else f"teacher/{p['variant']}",
                percent(p["score"]),
                signed_points(p["delta_vs_teacher_points"]),
                f"{p['speedup_vs_pytorch']:.2f}x" if p["speedup_vs_pytorch"] else "n/a",
            ]
            for p in rows
        ]
        return [
            "",
            "## Teacher and student",
            "",
            f"The student keeps layers {facts['kept_layers']} of the teacher's {facts['teacher_layers']} "
            f"(temperature {facts['temperature']}, alpha {facts['alpha']}); its ONNX files were validated against "
            f"its own PyTorch weights in `{STUDENT_DIR}/`. Speed-ups are over the teacher's PyTorch eager, in the "
            f"same bench run ({TRADEOFF_PLOT} plots them).",
            "",
            markdown_table(
                [
                    "variant",
                    f"{rows[0]['metric']} %",
                    "vs teacher PyTorch (points)",
                    f"speed-up vs teacher PyTorch (batch {rows[0]['batch_size']}, seq len {rows[0]['seq_len']})",
                ],
                table,
            ),
        ]


def run(config: RunConfig, show_progress: bool = True, log=print) -> RunReport:
    """The chain into a staging folder that becomes config.output when the report is written. A
    run stopped by a signal after its fine-tune keeps the stages it finished (see _keep_done)."""
    seconds: dict[str, float] = {}
    stop = None
    if config.pt2:  # said before minutes of fine-tuning, not after
        from nlu_deploy.export.aoti_export import check_pt2_device

        check_pt2_device(config.pt2)
    with artifacts.staged_report(config.output, config.overwrite) as staged:
        try:
            report = _stages(config, staged.path, seconds, show_progress, log)
            staged.finish(True)
        except (Stopped, TrainingInterrupted) as interrupted:
            stop = _keep_done(staged, seconds, interrupted)
    if stop is not None:
        raise stop
    return report


def _stages(config: RunConfig, out: Path, seconds: dict[str, float], show_progress: bool, log) -> RunReport:
    student = config.student_layers is not None
    with _timed(seconds, "finetune"):
        _train_teacher(config, out, show_progress, log)
    if student:
        with _timed(seconds, "distill"):
            _train_student(config, out, show_progress, log)
    with _timed(seconds, "export"):
        measured = config.recipe == "measured"
        log(
            f"[2/4] exporting to ONNX (fp32, {config.optimize}, "
            + (f"the int8 recipes measured within {config.choose_minutes:g} min" if measured else "dynamic int8")
            + ")"
        )
        _export(config, out, measured)
        if student:
            _export(config, out / STUDENT_DIR, False)
    with _timed(seconds, "validate"):
        log("[3/4] validating every ONNX file against PyTorch on the held-out split")
        held_out = out / CHECKPOINT_DIR / artifacts.VALIDATION_SPLIT
        validation = _validate(config, out, held_out)
        # the student's files against its own weights, on the teacher's held-out split
        student_validation = _validate(config, out / STUDENT_DIR, held_out) if student else None
    with _timed(seconds, "bench"):
        log(
            "[4/4] benchmarking PyTorch and every variant"
            + (" (fixed shapes and real held-out lengths)" if measured else "")
        )
        benchmark = _bench(config, out, student, held_out if measured else None)
    choice = _ship(out, benchmark, validation, _held_out_texts(out, held_out)) if measured else None
    report = RunReport(
        artifacts.read_json(out / CHECKPOINT_DIR / artifacts.METRICS),
        validation,
        benchmark,
        seconds,
        student_validation,
        artifacts.read_json(out / STUDENT_DIR / CHECKPOINT_DIR / artifacts.METRICS) if student else None,
        choice,
    )
    _write_report(config, out, report)
    return report


def _keep_done(staged: artifacts.StagedReport, seconds: dict[str, float], interrupted) -> Stopped:
    """A stopped run keeps the stages it finished when its fine-tune is one of them (minutes or
    hours of training), with a report.md that says it is incomplete; an earlier complete output is
    never replaced by it (it goes to OUTPUT.incomplete). Stopped during the fine-tune, it keeps
    nothing: the training state lived in the staging folder, and run has no --resume."""
    stop = Stopped(interrupted.signal_name)
    if "finetune" not in seconds:
        stop.kept = "nothing was kept: run has no --resume (for a long training, finetune --output DIR has one)"
        return stop
    done = ", ".join(seconds)
    folder = staged.finish(False)
    (staged.path / artifacts.REPORT_MD).write_text(
        f"# nlu-deploy run report\n\n**INCOMPLETE: stopped by {stop.signal_name}.** Finished: {done}. "
        f"The checkpoint in `{CHECKPOINT_DIR}/` is complete; `nlu-deploy export {folder / CHECKPOINT_DIR}` "
        "continues from it.\n",
        encoding="utf-8",
    )
    stop.kept = f"the stages it finished ({done}) are in {folder}, marked incomplete in its report.md"
    return stop


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str):
    started = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - started


def _train_teacher(config: RunConfig, out: Path, show_progress: bool, log) -> None:
    if config.search:  # the study and its log stay in the run's output (checkpoint.search/)
        log(f"[1/4] fine-tuning: the best of a search of {config.search.trials} trials")
        search(
            replace(config.finetune, output=out / CHECKPOINT_DIR, overwrite=False, resume=False),
            config.search,
            show_progress,
            # a shared study records its best checkpoint where it will be once this run's output is in place
            final_directory=search_dir(config.output / CHECKPOINT_DIR),
        )
        if config.search.storage is None:  # a copy of checkpoint/ that nothing else reads
            shutil.rmtree(best_dir(search_dir(out / CHECKPOINT_DIR), config.search))
    else:
        log("[1/4] fine-tuning")
        finetune(replace(config.finetune, output=out / CHECKPOINT_DIR, overwrite=False), show_progress)


def _train_student(config: RunConfig, out: Path, show_progress: bool, log) -> None:
    log(f"[1/4] distilling a {config.student_layers}-layer student")
    distill(
        DistillConfig(
            teacher=out / CHECKPOINT_DIR,
            output=out / STUDENT_DIR / CHECKPOINT_DIR,
            layers=config.student_layers,
            epochs=config.student_epochs,
            seed=config.finetune.seed,
            device=config.finetune.device,
            compile=config.finetune.compile,
            precision=config.finetune.precision,
        ),
        show_progress,
    )
    _point_at_final_teacher(out / STUDENT_DIR / CHECKPOINT_DIR, out, config.output)


def _export(config: RunConfig, model_dir: Path, measured: bool) -> None:
    """model_dir holds checkpoint/ and receives onnx/ (the run's output, or its student/ folder).
    Measured: every int8 recipe of both graphs within the run's budget and time (the fastest that
    fits is model_quantized.onnx), and OpenVINO's variants wherever OpenVINO is installed."""
    from nlu_deploy.runtime.openvino_runtime import openvino_available

    export(
        ExportConfig(
            model_dir=model_dir / CHECKPOINT_DIR,
            output=model_dir / ONNX_DIR,
            optimize=config.optimize,
            quantize="auto" if measured else "dynamic",
            quantize_preset=config.quantize_preset,
            max_score_drop=config.max_score_drop if measured else ExportConfig.max_score_drop,
            search_minutes=config.choose_minutes if measured else None,
            openvino=config.openvino or (measured and openvino_available()),
            pt2=config.pt2,
        )
    )


def _validate(config: RunConfig, model_dir: Path, held_out: Path):
    validation = validate(
        ValidateConfig(
            model_dir=model_dir / CHECKPOINT_DIR,
            onnx_dir=model_dir / ONNX_DIR,
            data=held_out,
            max_score_drop=config.max_score_drop,
        )
    )
    validation.data = str(config.output / CHECKPOINT_DIR / artifacts.VALIDATION_SPLIT)  # its final path
    return validation


def _bench(config: RunConfig, out: Path, student: bool, held_out: Path | None):
    """Every variant and PyTorch in one run: the fixed shapes, and with `held_out` batches of its
    texts at their real lengths."""
    real_texts = _held_out_texts(out, held_out) if held_out is not None else ()
    return bench(
        BenchConfig(
            onnx_dir=out / ONNX_DIR,
            model_dir=out / CHECKPOINT_DIR,
            batch_sizes=config.batch_sizes,
            seq_lens=config.seq_lens,
            min_seconds=config.bench_min_seconds,
            also=((STUDENT_LABEL, out / STUDENT_DIR / ONNX_DIR),) if student else (),
            real_texts=real_texts,
        )
    )


# Variants whose real-length speed is within this of the fastest are timed again, longer: on this
# 2-core VM one bench run put OpenVINO int8 2% ahead of onnxruntime int8 and a later one put
# onnxruntime's 23% ahead (2026-12-07, bench/results/ship-choice-cpu), so a first look decides nothing.
FINALIST_BAND = 0.15
FINALIST_SECONDS = 3.0  # per batch size and variant, in interleaved rounds


def _held_out_texts(out: Path, held_out: Path) -> tuple[str, ...]:
    from nlu_deploy.data.tables import column_texts
    from nlu_deploy.evaluation.validate import trained_text_column

    return tuple(column_texts(held_out, trained_text_column(out / ONNX_DIR))[0])


def _ship(out: Path, benchmark: BenchReport, validation: ValidationReport, real_texts: tuple[str, ...]) -> dict:
    """The variant to ship, written beside the files as recommendation.json (predict and export
    --triton read it). When others come close, the finalists are timed again, longer, and that
    second look decides."""
    gate = validation.to_json()
    choice = choose_shipped(benchmark, gate)
    rates = choice["sequences_per_s"]
    best = choice["variant"]
    finalists = [v for v in choice.get("beats", {}) if rates[best] / rates[v] <= 1 + FINALIST_BAND]
    if best is not None and finalists and real_texts:
        second_look = bench(BenchConfig(onnx_dir=out / ONNX_DIR, variants=(best, *finalists), real_texts=real_texts,
                                        fixed_shapes=False, min_seconds=FINALIST_SECONDS, rounds=5))  # fmt: skip
        first = choice
        choice = choose_shipped(second_look, gate)
        choice["first_look"], choice["failed_gate"] = first["sequences_per_s"], first["failed_gate"]
        if first["failed_gate"]:
            choice["why"] += f" Over the accuracy gate: {', '.join(first['failed_gate'])}."
        choice["why"] += (f" Timed again, {FINALIST_SECONDS:g} s per batch size each, against the variants within "
                          f"{100 * FINALIST_BAND:.0f}% of the first look's fastest ({best}).")  # fmt: skip
    artifacts.write_json(out / ONNX_DIR / artifacts.RECOMMENDATION, {**choice, "chosen_by": "nlu-deploy run"})
    return choice


def _write_report(config: RunConfig, out: Path, report: RunReport) -> None:
    if config.student_layers is not None:
        plot_accuracy_vs_speed(
            report.teacher_and_student(), out / TRADEOFF_PLOT, f"Teacher and {config.student_layers}-layer student"
        )
    (out / artifacts.REPORT_MD).write_text(report.to_markdown(), encoding="utf-8")
    (out / artifacts.REPORT_JSON).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    artifacts.write_manifest(
        out,
        "run",
        {
            "output": config.output,
            "optimize": config.optimize,
            "max_score_drop": config.max_score_drop,
            "student_layers": config.student_layers,
        },
    )


def _point_at_final_teacher(student: Path, staging: Path, output: Path) -> None:
    """The student's manifest names its teacher by the path it will have once the run's output is
    in place, not by the staging directory it was trained in."""
    manifest = artifacts.read_manifest(student)
    final = str((output / CHECKPOINT_DIR).resolve())
    manifest["parent"] = manifest["distillation"]["teacher"] = final
    artifacts.write_json(student / artifacts.MANIFEST, manifest)
