"""Parity: score the PyTorch checkpoint and every ONNX file on the same labelled data, and
gate on how many points of each of the task's gated scores an ONNX variant may lose (accuracy
for intents, entity F1 for slot filling / NER, intent accuracy, entity F1 and exact match for
the joint task). Labels the model never had are scored as errors and reported."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import ValidateConfig
from nlu_deploy.errors import ConfigError
from nlu_deploy.metrics import DISPLAY_NAMES
from nlu_deploy.reports import markdown_table, percent, signed_points
from nlu_deploy.runtime.modeling import check_finite_weights, check_vocabulary_fits, inference_tokenizer, load_tokenizer
from nlu_deploy.runtime.runtime_variants import RuntimeVariant, runtime_variants
from nlu_deploy.runtime.sessions import cuda_only_graph
from nlu_deploy.tasks import Task, onnx_backend, task_of, torch_backend

NONFINITE = "finite_outputs"  # in failed_on: the file gives NaN or inf where PyTorch gives numbers


@dataclass
class VariantScore:
    variant: str
    file: str
    primary_metric: str
    scores: dict  # the task's scores: accuracy, entity_f1, per_type, ...
    delta_points: dict[str, float]  # per gated score: minus PyTorch's, in percentage points
    max_abs_logit_diff: dict[str, float]  # per output, over the scored rows (texts or words)
    agreement: dict[str, float]  # per output: share of rows whose best label equals PyTorch's
    passed: bool
    failed_on: list[str] = field(default_factory=list)  # the gated scores that lost too much
    precision: str | None = None  # OpenVINO variants: the INFERENCE_PRECISION_HINT they ran with

    @property
    def score(self) -> float:
        return self.scores[self.primary_metric]


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b|, skipping what is NaN on both sides (words no sub-word reached); 0 when
    nothing compares. A value that is a finite number on one side only is an infinite
    difference: NaN minus anything is NaN, which would otherwise pass every threshold."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if (np.isfinite(a) != np.isfinite(b)).any():
        return float("inf")
    difference = np.abs(a - b)[~(np.isnan(a) & np.isnan(b))]
    return float(np.nanmax(difference)) if difference.size and not np.isnan(difference).all() else 0.0


@dataclass
class ValidationReport:
    task: str
    data: str
    examples: int
    truncated: int  # texts cut at the model's max length
    windowed: int  # sentences longer than the max length, tagged whole in overlapping windows
    max_score_drop: float
    primary_metric: str
    gated_metrics: list[str]
    table_metrics: list[str]
    pytorch: dict
    variants: list[VariantScore]
    unseen: dict[str, dict] = field(default_factory=dict)  # head -> {"rows", "labels": {label: count}}
    provider: str = "cpu"  # where the ONNX files ran (PyTorch: fp32 on the CPU)
    not_scored: list[str] = field(default_factory=list)  # "file (why and how to score it)": files not run here

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.variants)

    @property
    def failures(self) -> list[VariantScore]:
        return [v for v in self.variants if not v.passed]

    @property
    def metric_name(self) -> str:
        return " / ".join(DISPLAY_NAMES[m] for m in self.gated_metrics)

    @property
    def pytorch_score(self) -> float:
        return self.pytorch[self.primary_metric]

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def write_json(self, path: Path) -> None:
        artifacts.write_json(Path(path), self.to_json())

    def to_markdown(self) -> str:
        names = [DISPLAY_NAMES[m] for m in self.table_metrics]
        deltas = [f"delta {DISPLAY_NAMES[m]} (points)" for m in self.gated_metrics]
        rows = [
            [
                "pytorch",
                "(checkpoint)",
                *[percent(self.pytorch[m]) for m in self.table_metrics],
                *[""] * (len(deltas) + 3),
            ]
        ]
        for v in self.variants:
            rows.append(
                [
                    v.variant,
                    v.file,
                    *[percent(v.scores[m]) for m in self.table_metrics],
                    *[signed_points(v.delta_points[m]) for m in self.gated_metrics],
                    "; ".join(f"{value:.2e}" for value in v.max_abs_logit_diff.values()),
                    "; ".join(percent(value) for value in v.agreement.values()),
                    "pass" if v.passed else f"FAIL ({', '.join(DISPLAY_NAMES[m] for m in v.failed_on)})",
                ]
            )
        outputs = ", ".join(self.variants[0].max_abs_logit_diff) if self.variants else ""
        table = markdown_table(
            [
                "variant",
                "file",
                *[f"{n} %" for n in names],
                *deltas,
                f"max abs logit diff ({outputs})",
                "agreement %",
                f"gate (max drop {self.max_score_drop})",
            ],
            rows,
        )
        notes = self._notes()
        entities = (
            f", {self.pytorch['entities']} gold entities (exact-span matching, conlleval rules)"
            if "entities" in self.pytorch
            else ""
        )
        where = "" if self.provider == "cpu" else f" ONNX files ran on {self.provider}, PyTorch in fp32 on the CPU."
        text = f"Validation on {self.data}: {self.examples} examples{entities}.{where} {' '.join(notes)}\n\n{table}\n"
        if "per_type" in self.pytorch:
            text += "\nPer entity type:\n\n" + self._per_type_table() + "\n"
        return text

    def _notes(self) -> list[str]:
        """What the reader should know about the data and the runtimes, one sentence each."""
        notes = []
        if self.not_scored:
            notes.append(f"Not scored here: {'; '.join(self.not_scored)}.")
        if self.truncated:
            notes.append(f"{self.truncated} texts were truncated to the model's max length.")
        if self.windowed:
            notes.append(
                f"{self.windowed} sentences were longer than the model's max length and were tagged "
                "whole, in overlapping windows."
            )
        hints = [
            f"{v.variant} {v.precision}" for v in self.variants if v.precision and v.variant.startswith("openvino-")
        ]
        if hints:
            from nlu_deploy.runtime.openvino_runtime import bf16_features

            features = ", ".join(bf16_features()) or "none (bf16 would be emulated, so it is not run)"
            notes.append(
                f"OpenVINO ran on CPU with the precision hints {', '.join(hints)}; CPU bf16 features: {features}."
            )
        for head, found in self.unseen.items():
            shown = ", ".join(f"{label!r} ({n})" for label, n in sorted(found["labels"].items()))
            notes.append(
                f"{found['rows']} examples hold {head} the model was never trained on, scored as errors: {shown}."
            )
        return notes

    def _per_type_table(self) -> str:
        per_type = self.pytorch["per_type"]
        return markdown_table(
            ["entity type", "gold", "pytorch F1 %", *[f"{v.variant} F1 %" for v in self.variants]],
            [
                [
                    kind,
                    per_type[kind]["support"],
                    percent(per_type[kind]["f1"]),
                    *[percent(v.scores["per_type"].get(kind, {}).get("f1", 0.0)) for v in self.variants],
                ]
                for kind in sorted(per_type)
            ],
        )


def default_columns(model_dir: Path, task: Task | None = None) -> tuple[str, ...]:
    """The data columns the checkpoint was trained with, else the task's defaults."""
    task = task or task_of(model_dir)
    options = artifacts.read_manifest(Path(model_dir)).get("options", {})
    keys = ("text_column", "label_column", "intent_column")[: len(task.columns)]
    return tuple(options.get(key) or default for key, default in zip(keys, task.columns))


def trained_text_column(onnx_dir: Path) -> str:
    """The text column an exported model was trained on: from its checkpoint's manifest when the
    export names one (its parent), else the task's default."""
    parent = artifacts.read_manifest(Path(onnx_dir)).get("parent")
    source = Path(parent) if parent and Path(parent).is_dir() else Path(onnx_dir)
    return default_columns(source, task_of(Path(onnx_dir)))[0]


def validate(config: ValidateConfig) -> ValidationReport:
    model_dir, onnx_dir = Path(config.model_dir), Path(config.onnx_dir)
    onnx_files = artifacts.onnx_files(onnx_dir)
    task = task_of(model_dir)
    if config.oos_label:
        if task.rejection is None:
            raise ConfigError(
                f"{model_dir} has no out-of-scope rule to validate; train it with --oos-label or --oos-validation."
            )
        task = task.with_rejection(replace(task.rejection, label=config.oos_label))
    model = task.load_model(model_dir)
    check_finite_weights(model, model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    given = (config.text_column, config.label_column, config.intent_column)
    columns = tuple(g or trained for g, trained in zip(given, default_columns(model_dir, task)))
    data = task.read(config.data, columns)
    unseen = {head: u for head, u in task.unseen(data, task.label2ids(model.config)).items() if u.rows}
    max_length = config.max_length or tokenizer.model_max_length
    examples = task.examples(data)

    reference = task.infer(torch_backend(model, tokenizer, max_length), examples, config.batch_size)
    reference_scores = task.score(data, reference.outputs, model.config)
    variants = []
    runs, not_scored = _what_runs_here(onnx_dir, onnx_files, config.provider)
    # the export directory's own tokenizer, as predict and the Triton models read it (a directory
    # whose tokenizer differs from the checkpoint's must fail here, not once it is served)
    served_tokenizer = inference_tokenizer(onnx_dir) if runs else None
    if runs:
        check_vocabulary_fits(served_tokenizer, artifacts.read_model_config(onnx_dir, missing_ok=True), onnx_dir)
    for name, path in runs:
        session = onnx_backend(path, served_tokenizer, model.config, max_length, config.provider)
        inference = task.infer(session, examples, config.batch_size)
        scores = task.score(data, inference.outputs, model.config)
        deltas = {m: 100 * (scores[m] - reference_scores[m]) for m in task.gated_metrics}
        failed = [m for m, d in deltas.items() if -d > config.max_score_drop + 1e-9]
        differences = {
            name: max_abs_difference(out, reference.outputs[name]) for name, out in inference.outputs.items()
        }
        if not all(np.isfinite(list(differences.values()))):
            failed.append(NONFINITE)  # NaN or inf where PyTorch gives numbers: never a pass
        variants.append(
            VariantScore(
                variant=name,
                file=path.file if isinstance(path, RuntimeVariant) else path.name,
                precision=getattr(session.session, "precision", None),
                primary_metric=task.primary_metric,
                scores=scores,
                delta_points=deltas,
                max_abs_logit_diff=differences,
                agreement=task.agreement(inference.outputs, reference.outputs),
                passed=not failed,
                failed_on=failed,
            )
        )
    return ValidationReport(
        task.name,
        str(config.data),
        len(data),
        reference.truncated,
        reference.windowed,
        config.max_score_drop,
        task.primary_metric,
        list(task.gated_metrics),
        list(task.report_metrics),
        reference_scores,
        variants,
        {head: {"rows": u.rows, "labels": u.counts} for head, u in unseen.items()},
        config.provider,
        not_scored,
    )


def _what_runs_here(onnx_dir: Path, onnx_files: list[Path], provider: str) -> tuple[list[tuple], list[str]]:
    """(variant name, file or runtime variant) for every file that runs on `provider`, and every
    other one named with why it is not scored and how to score it."""
    on_cuda_only = [path for path in onnx_files if provider == "cpu" and cuda_only_graph(path)]
    runs = [(artifacts.variant_name(path), path) for path in onnx_files if path not in on_cuda_only]
    not_scored = [f"{path.name} (fp16 fused ops only the CUDA provider runs; validate it with --provider cuda)"
                  for path in on_cuda_only]  # fmt: skip
    # other runtimes' variants where they run: OpenVINO's on CPU (bf16 only where the CPU has
    # it), an AOTInductor package on the device it was compiled for; every other one is named
    for variant in runtime_variants(onnx_dir):
        if variant.device == provider:
            runs.append((variant.name, variant))
        else:
            not_scored.append(f"{variant.file} ({variant.name} runs on {variant.device}; validate it with "
                              f"--provider {variant.device})")  # fmt: skip
    not_scored += _unreadable_packages(onnx_dir)
    return runs, not_scored


def _unreadable_packages(onnx_dir: Path) -> list[str]:
    """An AOTInductor package that no stage can run (its description missing or foreign), named."""
    from nlu_deploy.runtime.aoti_runtime import PT2_FILE, pt2_problem

    if not (onnx_dir / PT2_FILE).is_file():
        return []
    problem = pt2_problem(onnx_dir)
    return [f"{PT2_FILE} ({problem}; export it again with --pt2)"] if problem else []
