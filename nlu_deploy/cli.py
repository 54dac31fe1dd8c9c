"""The `nlu-deploy` command line: options -> config -> one library call -> short summary.

Heavy libraries are imported inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from nlu_deploy import __version__, artifacts
from nlu_deploy.cli_options import (
    BULK_PREDICT_OPTIONS,
    PROCESS_OPTIONS,
    RUN_CONTROL_OPTIONS,
    apply,
    choice_list,
    count_list,
    default_of,
    echo_search_result,
    finetune_options,
    float_list,
    given_options,
    int_list,
    labelled_directory,
    launch_torchrun,
    make_finetune_config,
    make_search_config,
    overwrite_option,
    shape_list,
    with_search_options,
)
from nlu_deploy.config import (
    CALIBRATION_METHODS,
    OPTIMIZATION_LEVELS,
    PROVIDERS,
    QUANTIZATION_MODES,
    QUANTIZATION_PRESETS,
    RUN_RECIPES,
    TRITON_LAYOUTS,
    BenchConfig,
    DistillConfig,
    ExportConfig,
    RunConfig,
    ServeBenchConfig,
    ValidateConfig,
)
from nlu_deploy.errors import ConfigError, NluDeployError, ValidationFailed, out_of_space
from nlu_deploy.stopping import Stopped, signals_stop
from nlu_deploy.training.checkpointing import TrainingInterrupted


class NluDeployCommand(click.Command):
    """Turns the library's errors into one-sentence messages instead of tracebacks, with the
    command's own usage line (the group's context would show `nlu-deploy [OPTIONS] COMMAND`)."""

    def invoke(self, ctx: click.Context):
        try:
            with signals_stop():
                return super().invoke(ctx)
        except Stopped as stop:
            raise _exit_with(stop.sentence(ctx.info_name or self.name), stop.exit_code) from None
        except ConfigError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except TrainingInterrupted as exc:  # the shell's convention: 128 + the signal's number
            raise _exit_with(str(exc), 128 + signal.Signals[exc.signal_name]) from None
        except NluDeployError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            if not out_of_space(exc):
                raise
            where = f" while writing {exc.filename}" if exc.filename else ""
            raise click.ClickException(
                f"the disk is full{where} ({exc.strerror}); free some space and run the "
                "command again (nothing half-written was kept)."
            ) from None


def _exit_with(message: str, code: int) -> click.ClickException:
    error = click.ClickException(message)
    error.exit_code = code
    return error


class NluDeployGroup(click.Group):
    command_class = NluDeployCommand


@click.group(cls=NluDeployGroup)
@click.version_option(__version__, prog_name="nlu-deploy")
def main() -> None:
    """Take a transformer encoder to a fast, validated ONNX deployment for intent classification
    and slot filling / NER."""


@main.command()
@finetune_options
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Checkpoint directory to write.")
@apply(RUN_CONTROL_OPTIONS)
@with_search_options
@overwrite_option
def finetune(output, overwrite, compile_flag, nproc, search_trials, search_time, study_storage, study_name, **options):
    """Fine-tune an encoder for intent classification or (--task token-classification) slot tagging.

    Writes a Hugging Face checkpoint (safetensors, tokenizer, config.json with the labels),
    metrics.json with per-epoch loss and validation scores, the validation split it scored
    on, and nlu_deploy.json recording how it was made.

    An interrupted run (Ctrl-C, SIGTERM, crash) keeps its state beside OUTPUT; the same command
    with --resume continues it and ends with the same result as an uninterrupted run.

    Example: nlu-deploy finetune --train data/train.csv --label-column intent --output models/intents

    Example: nlu-deploy finetune --task token-classification --train snips/train.jsonl --output models/slots

    Example: nlu-deploy finetune --train data/train.csv --label-column intent --search 20 --search-time 60 --output models/tuned
    """
    from nlu_deploy.training.loop import finetune as run_finetune

    config = make_finetune_config(output, overwrite, compile_flag, **options)
    search = make_search_config(search_trials, search_time, study_storage, study_name)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(launch_torchrun(nproc))
    if search is not None:  # under torchrun: one trial after another, each with every process
        from nlu_deploy.training.search import search as run_search

        found = run_search(config, search, show_progress=sys.stderr.isatty())
        if found is not None:  # the main process reports
            echo_search_result(found)
        return
    result = run_finetune(config, show_progress=sys.stderr.isatty())
    if "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0") != "0":
        return  # the main process reports
    from nlu_deploy.tasks import get_task

    scores = get_task(config.task).training_summary(result.best_scores)
    metrics = artifacts.read_json(result.output / artifacts.METRICS)
    unseen = metrics.get("unseen_in_validation", {})
    for head, found in unseen.items():
        click.echo(
            f"note: {found['rows']} validation example(s) hold {head} the training data never had "
            f"({', '.join(sorted(found['labels']))}); they are scored as errors.",
            err=True,
        )
    click.echo(
        f"Best epoch {result.best_epoch}: validation {scores} ({result.device}, "
        f"compile {'on' if result.compiled else 'off'}). Checkpoint: {result.output}"
    )
    if "out_of_scope" in metrics:
        from nlu_deploy.training.oos_calibration import describe_rule

        click.echo(describe_rule(metrics["out_of_scope"]))


@main.command()
@click.argument("teacher", type=click.Path(path_type=Path))
@click.option(
    "--layers",
    type=int,
    required=True,
    help="Layers the student keeps, evenly spaced over the teacher's (the top one always).",
)
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Student checkpoint directory to write.")
@click.option(
    "--train",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled training data. Default: the teacher's, split exactly as the teacher's was.",
)
@click.option(
    "--validation",
    type=click.Path(path_type=Path),
    default=None,
    help="With --train: held-out data. Default: a seeded 10% of --train.",
)
@click.option(
    "--unlabeled",
    type=click.Path(path_type=Path),
    default=None,
    help="Extra texts only the teacher labels (soft targets): one per line, or a column of a data file.",
)
@click.option(
    "--unlabeled-column",
    default=default_of(DistillConfig, "unlabeled_column"),
    show_default=True,
    help="The column of --unlabeled to read.",
)
@click.option("--text-column", default=None, help="Columns of --train. Default: the teacher's.")
@click.option("--label-column", default=None)
@click.option("--intent-column", default=None)
@click.option(
    "--temperature",
    type=float,
    default=default_of(DistillConfig, "temperature"),
    show_default=True,
    help="Softmax temperature of the soft targets.",
)
@click.option(
    "--alpha",
    type=float,
    default=default_of(DistillConfig, "alpha"),
    show_default=True,
    help="Share of the loss that matches the teacher; the rest is the hard-label loss.",
)
@click.option("--epochs", type=int, default=default_of(DistillConfig, "epochs"), show_default=True)
@click.option("--batch-size", type=int, default=None, help="Default: the teacher's.")
@click.option("--lr", type=float, default=None, help="Default: the teacher's.")
@apply(PROCESS_OPTIONS)
@apply(RUN_CONTROL_OPTIONS)
@with_search_options
@overwrite_option
def distill(teacher, compile_flag, nproc, search_trials, search_time, study_storage, study_name, **options):
    """Distil a fine-tuned checkpoint into a shallower, faster student with the same heads.

    The student keeps --layers of the teacher's layers and learns the teacher's softened
    outputs (KL at --temperature) mixed with the labels (--alpha), on the teacher's own
    training split unless told otherwise. It writes a normal checkpoint: export, validate,
    bench, predict and --triton take it unchanged; its nlu_deploy.json names the teacher.

    Example: nlu-deploy distill models/intents --layers 3 --output models/intents-3l
    """
    from nlu_deploy.config import DistillConfig
    from nlu_deploy.tasks import get_task
    from nlu_deploy.training.distill import distill as run_distill

    config = DistillConfig(teacher=teacher, compile={None: "auto", True: "on", False: "off"}[compile_flag], **options)
    search = make_search_config(search_trials, search_time, study_storage, study_name)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(launch_torchrun(nproc, "distill"))
    result = run_distill(config, show_progress=sys.stderr.isatty(), search=search)
    if search is not None:
        if result is not None:  # None on the other processes under torchrun
            echo_search_result(result)
        return
    if "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0") != "0":
        return  # the main process reports
    metrics = artifacts.read_json(result.output / artifacts.METRICS)
    facts = metrics["distillation"]
    scores = get_task(metrics["task"]).training_summary(result.best_scores)
    click.echo(
        f"Student with layers {facts['kept_layers']} of the teacher's {facts['teacher_layers']}: best epoch "
        f"{result.best_epoch}, validation {scores}; soft-target loss to the teacher on held-out rows "
        f"{facts['kl_to_teacher_before']:.4f} before, {facts['kl_to_teacher_after']:.4f} after. "
        f"Checkpoint: {result.output}"
    )


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory for the ONNX files. Leave it out to write only the --triton repository of MODEL_DIR when it "
    "is an export directory already (a run's onnx/ folder: its measured variants and recommendation stay as they are).",
)
@click.option("--opset", type=int, default=None, help="ONNX opset. Default: Optimum's choice for the model.")
@click.option(
    "--optimize",
    type=click.Choice(OPTIMIZATION_LEVELS),
    default=None,
    help="Also write model_optimized.onnx with onnxruntime's fusions at this level.",
)
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZATION_MODES),
    default=None,
    help="dynamic / static: also write model_quantized.onnx (int8). fp16: model_fp16.onnx for "
    "CUDA/TensorRT. auto: the fastest int8 candidate within --max-score-drop, with a report.",
)
@click.option(
    "--max-score-drop",
    type=float,
    default=default_of(ExportConfig, "max_score_drop"),
    show_default=True,
    help="auto: points of accuracy (entity F1 for a slot tagger) the kept int8 model may lose.",
)
@click.option(
    "--search-minutes",
    type=float,
    default=None,
    help="auto: minutes the candidates may take; those left then are skipped and named in the report.",
)
@click.option(
    "--validation",
    type=click.Path(path_type=Path),
    default=None,
    help="auto: held-out data to score candidates. Default: the checkpoint's validation split.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="static/auto: texts to calibrate on. Default: the training sample finetune recorded.",
)
@click.option(
    "--calibration-samples", type=int, default=default_of(ExportConfig, "calibration_samples"), show_default=True
)
@click.option(
    "--calibration-method",
    type=click.Choice(CALIBRATION_METHODS),
    default=default_of(ExportConfig, "calibration_method"),
    show_default=True,
)
@click.option(
    "--quantize-preset",
    type=click.Choice(QUANTIZATION_PRESETS),
    default=default_of(ExportConfig, "quantize_preset"),
    show_default=True,
    help="Instruction-set preset; auto picks the one this CPU supports.",
)
@click.option(
    "--per-channel/--no-per-channel", default=None, help="Per-channel weight scales. Default: off; auto tries both."
)
@click.option(
    "--openvino",
    is_flag=True,
    help="Also write OpenVINO IR files (fp32, NNCF int8): the openvino-f32/-bf16/-int8 variants. "
    'Needs pip install -e ".[openvino]".',
)
@click.option(
    "--gpu-fp16",
    is_flag=True,
    help="Also write fp16 graphs for CUDA that keep onnxruntime's fused attention: model_fp16_fused.onnx (1-D "
    "mask) and model_fp16_packed.onnx (padding removed). They run on the CUDA provider only: validate and bench "
    "them with --provider cuda.",
)
@click.option(
    "--pt2",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Also compile a PyTorch AOTInductor package (model.pt2) for this device: cpu gives the pt2-fp32 "
    "variant, cuda (on a GPU machine) pt2-bf16. Needs a C++ compiler; predicting from it imports torch.",
)
@click.option(
    "--triton",
    "triton_repo",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a Triton Inference Server model repository here (text in, label out).",
)
@click.option("--triton-name", default="nlu", show_default=True, help="Name of the ensemble clients call.")
@click.option(
    "--triton-device",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Where Triton runs the ONNX model (cpu serves the int8 file, gpu the float one).",
)
@click.option("--triton-tensorrt", is_flag=True, help="gpu: let onnxruntime hand the graph to TensorRT (fp16).")
@click.option(
    "--triton-layout",
    type=click.Choice(TRITON_LAYOUTS),
    default="auto",
    show_default=True,
    help="ensemble: tokenizer, model and post-processor chained by a Triton ensemble; pipeline: one "
    "Python-backend model that does all three in one process (needs --triton-onnx-backend python); auto: "
    "pipeline with --triton-onnx-backend python, else ensemble.",
)
@click.option(
    "--triton-variant",
    default=None,
    help="The variant Triton serves: an ONNX file or variant (int8, optimized) or an OpenVINO variant. Default: "
    "the one `run` recommended for this export, else int8 on CPU and the float graphs on GPU.",
)
@click.option(
    "--triton-threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Intra-op threads of each Python-backend model instance (0: the runtime's default).",
)
@click.option(
    "--triton-onnx-backend",
    type=click.Choice(["onnxruntime", "python"]),
    default="onnxruntime",
    show_default=True,
    help="python: run the ONNX file with onnxruntime in a Python-backend model (CPU), "
    "for servers without the onnxruntime backend (nvidia-pytriton's tritonserver).",
)
@overwrite_option
@click.option(
    "--triton-backend",
    type=click.Choice(["onnxruntime", "openvino"]),
    default="onnxruntime",
    show_default=True,
    help="The runtime the served model runs on: the ONNX file on onnxruntime, or the OpenVINO IR (needs --openvino).",
)
@click.option(
    "--triton-openvino-variant",
    type=click.Choice(["openvino-f32", "openvino-bf16", "openvino-int8"]),
    default="openvino-f32",
    show_default=True,
    help="With --triton-backend openvino: the IR and precision hint served.",
)
def export(
    model_dir, output, triton_repo, triton_name, triton_device, triton_tensorrt, triton_onnx_backend, triton_backend,
    triton_openvino_variant, triton_layout, triton_variant, triton_threads, **options,
):  # fmt: skip
    """Export a fine-tuned checkpoint to ONNX and check it against PyTorch.

    Writes model.onnx, plus model_optimized.onnx with --optimize, and the quantized variant
    --quantize asks for, each loadable with Optimum's ORTModelForSequenceClassification.

    Given an export directory (a run's onnx/ folder) and --triton without --output, it writes the
    Triton repository of that directory as it is, serving what its recommendation.json names.

    Example: nlu-deploy export models/intents --output models/intents-onnx --optimize O2 --quantize auto
    """
    from nlu_deploy.export.onnx_export import export as run_export

    if output is None:
        exported = Path(model_dir).is_dir() and any(Path(model_dir).glob("*.onnx"))
        if triton_repo is None or not exported:
            raise click.UsageError(
                "give --output, the directory for the ONNX files (without it, export writes only the --triton "
                "repository of a directory that holds ONNX files already)."
            )
        export_only = [o for o in given_options(click.get_current_context()) if not o.startswith("--triton")]
        if set(export_only) - {"--overwrite"}:
            raise click.UsageError(f"{', '.join(export_only)} describe a new export: give --output too.")

    if triton_repo is None and (given := given_options(click.get_current_context(), "triton_")):
        raise click.UsageError(f"{', '.join(given)} describe the Triton repository: add --triton REPO.")
    if triton_backend != "openvino" and "--triton-openvino-variant" in given_options(click.get_current_context()):
        raise click.UsageError("--triton-openvino-variant chooses what --triton-backend openvino serves: add it.")
    if triton_tensorrt and triton_device != "gpu":
        raise click.UsageError("--triton-tensorrt needs --triton-device gpu.")
    if triton_onnx_backend == "python" and triton_device != "cpu" and triton_layout == "ensemble":
        raise click.UsageError(
            "--triton-onnx-backend python serves a GPU from the pipeline layout: drop --triton-layout ensemble."
        )
    if triton_repo is not None:  # every output is checked before the first is written
        from nlu_deploy.serving.repository import TritonOptions

        triton_options = TritonOptions(
            name=triton_name, device=triton_device, tensorrt=triton_tensorrt, onnx_backend=triton_onnx_backend,
            runtime=triton_backend, openvino_variant=triton_openvino_variant, layout=triton_layout,
            threads=triton_threads,
        )  # fmt: skip
        if triton_backend == "openvino" and not options["openvino"] and output is not None:
            raise click.UsageError("--triton-backend openvino serves the OpenVINO files: add --openvino.")
        artifacts.check_output(triton_repo, options["overwrite"])
    if output is None:  # the repository of an export directory, which is only read
        from nlu_deploy.serving.repository import export_triton_repository

        served = export_triton_repository(
            model_dir, triton_repo, triton_options, onnx_file=triton_variant, overwrite=options["overwrite"]
        )
        click.echo(f"Triton repository {triton_repo} ({triton_options.layout} {triton_name!r} serves {served})")
        return
    result = run_export(ExportConfig(model_dir=model_dir, output=output, **options))
    for variant, file_name in result.files.items():
        diff = result.max_abs_logit_diff.get(variant)
        detail = (
            f"max |logit diff| vs PyTorch {diff:.2e}" if diff is not None else "CUDA only: validate --provider cuda"
        )
        click.echo(f"{variant:13s} {output / file_name}  ({detail})")
    for variant, why in result.skipped.items():
        click.echo(f"{variant:13s} not written: {why}.")
    if triton_repo is not None:
        from nlu_deploy.serving.repository import export_triton_repository

        served = export_triton_repository(
            output, triton_repo, triton_options, onnx_file=triton_variant, overwrite=options["overwrite"]
        )
        click.echo(f"Triton repository {triton_repo} ({triton_options.layout} {triton_name!r} serves {served})")
    if result.search is not None:
        click.echo(result.search.to_markdown())
        if result.search.kept is None:
            raise ValidationFailed(
                f"no int8 candidate stayed within {options['max_score_drop']} points; "
                f"the fp32 export is in {output}, the evidence in quantization_report.md."
            )


@main.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="The PyTorch checkpoint (finetune output).",
)
@click.option(
    "--onnx",
    "onnx_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory whose every .onnx file is scored.",
)
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Labelled data to score on.")
@click.option("--text-column", default=None, help="Default: the column the checkpoint was trained with.")
@click.option("--label-column", default=None, help="Default: the column the checkpoint was trained with.")
@click.option("--intent-column", default=None, help="joint: default: the column the checkpoint was trained with.")
@click.option(
    "--oos-label",
    default=None,
    help="The label of out-of-scope rows in --data, if not the one the model answers (its rule's).",
)
@click.option(
    "--max-score-drop",
    type=float,
    default=default_of(ValidateConfig, "max_score_drop"),
    show_default=True,
    help="Points of accuracy (intents), entity F1 (tagging) or each of intent accuracy, entity F1 and "
    "exact match (joint) an ONNX file may lose against PyTorch.",
)
@click.option("--batch-size", type=int, default=default_of(ValidateConfig, "batch_size"), show_default=True)
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default=default_of(ValidateConfig, "provider"),
    show_default=True,
    help="Where the ONNX files run (fp16 files are meant for cuda). PyTorch stays in fp32 on the CPU.",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the report as JSON."
)
def validate(
    model_dir,
    onnx_dir,
    data,
    text_column,
    label_column,
    intent_column,
    oos_label,
    max_score_drop,
    batch_size,
    provider,
    json_path,
):
    """Score PyTorch and every ONNX file on the same data; fail if any loses too much.

    Exits with status 1 when a file's accuracy (entity F1 for a slot tagger) is more than
    --max-score-drop points below PyTorch. Tagged data may be JSONL/JSON/Parquet word and tag
    lists or a CoNLL file.
    The report is also saved as validation.json in the ONNX directory, for `bench --recommend`.

    Example: nlu-deploy validate --model models/intents --onnx models/intents-onnx --data data/dev.csv
    """
    from nlu_deploy.evaluation.validate import validate as run_validate

    report = run_validate(
        ValidateConfig(
            model_dir=model_dir,
            onnx_dir=onnx_dir,
            data=data,
            text_column=text_column,
            label_column=label_column,
            intent_column=intent_column,
            oos_label=oos_label,
            max_score_drop=max_score_drop,
            batch_size=batch_size,
            provider=provider,
        )
    )
    click.echo(report.to_markdown())
    report.write_json(onnx_dir / artifacts.VALIDATION_REPORT)  # read by `bench --recommend`
    if json_path:
        report.write_json(json_path)
    if not report.passed:
        from nlu_deploy.evaluation.validate import NONFINITE
        from nlu_deploy.metrics import DISPLAY_NAMES

        broken = [v.file for v in report.failures if NONFINITE in v.failed_on]
        if broken:
            raise ValidationFailed(
                f"{', '.join(broken)} gave outputs that are not finite numbers (NaN or inf) "
                "where PyTorch gives numbers."
            )
        lost = " and ".join(
            DISPLAY_NAMES[m] for m in report.gated_metrics if any(m in v.failed_on for v in report.failures)
        )
        files = ", ".join(
            f"{v.file} ({', '.join(f'{v.delta_points[m]:+.2f}' for m in v.failed_on)} points)" for v in report.failures
        )
        raise ValidationFailed(f"{lost} dropped by more than {max_score_drop} points for {files}.")


@main.command()
@click.argument("onnx_dir", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="PyTorch checkpoint to benchmark in the same run, as the baseline.",
)
@click.option(
    "--provider", type=click.Choice(PROVIDERS), default=default_of(BenchConfig, "provider"), show_default=True
)
@click.option("--fallback", is_flag=True, help="Run on CPU if the provider cannot start (the report says so).")
@click.option(
    "--batch-sizes", callback=int_list, default=shape_list(default_of(BenchConfig, "batch_sizes")), show_default=True
)
@click.option(
    "--seq-lens", callback=int_list, default=shape_list(default_of(BenchConfig, "seq_lens")), show_default=True
)
@click.option("--variants", default=None, help="Comma-separated variants or file names. Default: every .onnx file.")
@click.option(
    "--real-lengths",
    type=click.Path(path_type=Path),
    default=None,
    help="Also time batches of this data's texts, each padded to its longest (a held-out split: real traffic).",
)
@click.option(
    "--real-batch-sizes",
    callback=int_list,
    default=shape_list(default_of(BenchConfig, "real_batch_sizes")),
    show_default=True,
    help="With --real-lengths: the batch sizes of real texts.",
)
@click.option(
    "--text-column", default=None, help="With --real-lengths: its text column. Default: the model's training column."
)
@click.option("--threads", type=int, default=None, help="Intra-op threads. Default: the runtime's choice.")
@click.option(
    "--warmup",
    type=int,
    default=default_of(BenchConfig, "warmup_iters"),
    show_default=True,
    help="Untimed calls per shape.",
)
@click.option("--min-iters", type=int, default=default_of(BenchConfig, "min_iters"), show_default=True)
@click.option(
    "--min-seconds",
    type=float,
    default=default_of(BenchConfig, "min_seconds"),
    show_default=True,
    help="Minimum timed seconds per shape.",
)
@click.option(
    "--io-binding/--no-io-binding",
    default=True,
    show_default=True,
    help="CUDA/TensorRT: keep inputs and outputs on the GPU.",
)
@click.option(
    "--trt-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="TensorRT engine and timing cache directory (reused across runs).",
)
@click.option("--trt-fp16", is_flag=True, help="Let TensorRT build fp16 engines.")
@click.option(
    "--int8-on-gpu",
    is_flag=True,
    help="CUDA/TensorRT: measure dynamic int8 files too (CPU kernels: never recommended for a GPU).",
)
@click.option(
    "--cuda-graphs",
    is_flag=True,
    help="CUDA: also time each float file with a CUDA graph captured per shape (VARIANT+cuda-graph): the "
    "same numbers, fewer kernel launches; --recommend can choose it.",
)
@click.option(
    "--tf32/--no-tf32",
    default=False,
    show_default=True,
    help="CUDA: TF32 matmuls, the same setting for PyTorch and onnxruntime; recorded in the report.",
)
@click.option(
    "--torch-compile/--no-torch-compile",
    "torch_compile",
    default=None,
    help="Also time PyTorch with torch.compile. Default: on for CUDA, off for CPU.",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the report as JSON."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Draw latency and throughput against batch size into this PNG.",
)
@click.option(
    "--recommend",
    is_flag=True,
    help="Name the fastest variant that passed validation (reads validation.json in DIR, or --validation-report).",
)
@click.option(
    "--validation-report",
    type=click.Path(path_type=Path),
    default=None,
    help="A `validate --json` report to recommend from.",
)
@click.option(
    "--also",
    "also",
    multiple=True,
    metavar="[LABEL=]DIR",
    help="Another ONNX directory sharing the tokenizer (a distilled student), measured in the same run; "
    "its variants are named LABEL/variant (LABEL defaults to the directory's name). Repeatable.",
)
@click.option(
    "--accuracy-plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Draw each variant's validated score against its throughput (at the largest batch and shortest "
    "length) into this PNG; reads validation.json in DIR and in each --also directory.",
)
def bench(
    onnx_dir,
    model_dir,
    provider,
    fallback,
    batch_sizes,
    seq_lens,
    variants,
    real_lengths,
    real_batch_sizes,
    text_column,
    threads,
    warmup,
    min_iters,
    min_seconds,
    io_binding,
    trt_cache,
    trt_fp16,
    int8_on_gpu,
    cuda_graphs,
    tf32,
    torch_compile,
    json_path,
    plot_path,
    recommend,
    validation_report,
    also,
    accuracy_plot,
):
    """Measure latency and throughput of every ONNX file (and PyTorch with --model).

    Example: nlu-deploy bench models/demo/onnx --model models/demo/checkpoint --json r.json --plot r.png --recommend
    """
    from nlu_deploy.evaluation import recommendation as bench_extras
    from nlu_deploy.evaluation.benchmark import bench as run_bench

    compared = tuple(labelled_directory(value) for value in also)
    # the reports are read before minutes of timing, so that a missing one is said at once
    reports = bench_extras.validation_reports(onnx_dir, compared) if accuracy_plot else {}
    validation = bench_extras.recommendation_source(onnx_dir, validation_report) if recommend else None
    config = BenchConfig(
        onnx_dir=onnx_dir,
        model_dir=model_dir,
        provider=provider,
        batch_sizes=batch_sizes,
        seq_lens=seq_lens,
        warmup_iters=warmup,
        min_iters=min_iters,
        min_seconds=min_seconds,
        threads=threads,
        fallback=fallback,
        io_binding=io_binding,
        trt_cache_dir=trt_cache,
        trt_fp16=trt_fp16,
        torch_compile={None: "auto", True: "on", False: "off"}[torch_compile],
        int8_on_gpu=int8_on_gpu,
        cuda_graphs=cuda_graphs,
        tf32=tf32,
        also=compared,
        variants=tuple(v.strip() for v in variants.split(",")) if variants else (),
        real_texts=tuple(_real_texts(onnx_dir, real_lengths, text_column)) if real_lengths else (),
        real_batch_sizes=real_batch_sizes,
    )
    try:
        report = run_bench(
            config,
            on_result=lambda m: click.echo(
                f"  {m.variant:10s} batch {m.batch_size:3d} seq {m.seq_len:4d}: p50 {m.p50_ms:8.2f} ms", err=True
            ),
        )
    except Stopped as stop:
        _keep_measured(stop, json_path)
        raise
    click.echo(report.to_markdown())
    shape = (max(batch_sizes), min(seq_lens))
    for line in bench_extras.write_outputs(report, json_path, plot_path, accuracy_plot, reports, shape):
        click.echo(line)
    if validation is not None:
        click.echo(bench_extras.recommendation(report, validation))


def _real_texts(onnx_dir: Path, data: Path, text_column: str | None) -> list[str]:
    from nlu_deploy.data.tables import column_texts
    from nlu_deploy.evaluation.validate import trained_text_column

    texts, empty = column_texts(data, text_column or trained_text_column(onnx_dir))
    if not texts:
        raise click.ClickException(f"{data} holds no texts to time.")
    if empty:
        click.echo(f"note: {empty} row(s) of {data} hold no text; left out of the real-length batches.", err=True)
    return texts


def _keep_measured(stop: Stopped, json_path: Path | None) -> None:
    """A stopped bench prints what it measured and writes it to --json, marked incomplete."""
    partial = getattr(stop, "report", None)
    if partial is None or not partial.measurements:
        return
    click.echo(partial.to_markdown())
    if json_path:
        partial.write_json(json_path)
    where = f"in {json_path}" if json_path else "printed above"
    stop.kept = f"the {len(partial.measurements)} measurements taken are {where}, marked incomplete"


def _size_sets(ctx, param, values: tuple[str, ...]) -> tuple[tuple[int, ...], ...] | None:
    """Repeated options like --buckets 16,32,64 --buckets none: each a set of sizes, none: empty."""
    if not values:
        return None
    return tuple(() if value.strip().lower() == "none" else int_list(ctx, param, value) for value in values)


@main.command("serve-bench")
@click.argument("onnx_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--data", type=click.Path(path_type=Path), required=True, help="Texts to send: a data file or a .txt, one per line."
)
@click.option(
    "--text-column", default=None, help="The data's text column. Default: the model's training column, else text."
)
@click.option(
    "--output", type=click.Path(path_type=Path), required=True, help="Report directory (.md, .json, .png, .log)."
)
@click.option(
    "--url",
    default=None,
    metavar="HOST:PORT",
    help="Measure a running server (Open Inference Protocol) instead of starting one.",
)
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--model", default="nlu", show_default=True, help="The ensemble's name on the server.")
@click.option(
    "--metrics-url", default=None, help="With --url: the server's Prometheus metrics. Default: port 8002 of its host."
)
@click.option(
    "--variant",
    default=None,
    help="The ONNX file served (and checked against). Default: what export --triton serves on CPU.",
)
@click.option(
    "--tritonserver",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Start this tritonserver binary instead of nvidia-pytriton's.",
)
@click.option(
    "--triton-onnx-backend",
    "onnx_backend",
    type=click.Choice(["python", "onnxruntime"]),
    default="python",
    show_default=True,
    help="The local server's ONNX runner (nvidia-pytriton's server has the python one only).",
)
@click.option(
    "--concurrency",
    callback=int_list,
    default="1,2,4,8,16",
    show_default=True,
    help="Closed-loop levels: users, each waiting for its answer.",
)
@click.option("--rates", callback=float_list, default=None, help="Open-loop levels: Poisson arrivals, requests/s.")
@click.option(
    "--warmup",
    "warmup_s",
    type=float,
    default=default_of(ServeBenchConfig, "warmup_s"),
    show_default=True,
    help="Seconds of warm-up per level.",
)
@click.option(
    "--duration",
    "duration_s",
    type=float,
    default=default_of(ServeBenchConfig, "duration_s"),
    show_default=True,
    help="Seconds measured per level.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=default_of(ServeBenchConfig, "timeout_s"),
    show_default=True,
    help="Seconds a request may take.",
)
@click.option(
    "--max-texts",
    type=int,
    default=default_of(ServeBenchConfig, "max_texts"),
    show_default=True,
    help="Distinct texts drawn from --data.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--p99-ms",
    type=float,
    default=None,
    help="Search the server's settings for the most requests/s within this p99 (local server only).",
)
@click.option(
    "--at-concurrency",
    type=int,
    default=None,
    help="The level the budget holds at. Default: the highest --concurrency.",
)
@click.option("--at-rate", type=float, default=None, help="Or an open-loop rate the budget holds at.")
@click.option(
    "--batching",
    default=",".join(default_of(ServeBenchConfig, "batching")),
    show_default=True,
    help="Search: dynamic batching settings, off or a queue delay in microseconds.",
)
@click.option(
    "--instances", callback=int_list, default="1,2", show_default=True, help="Search: instances of the ONNX model."
)
@click.option(
    "--helper-instances",
    callback=int_list,
    default="1",
    show_default=True,
    help="Search: instances of the tokenizer and post-processor.",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "gpu"]),
    default=default_of(ServeBenchConfig, "device"),
    show_default=True,
    help="Where the served model runs: gpu puts the pipeline model's instances on the GPU with onnxruntime's "
    "CUDA provider, and checks every answer against predict --provider cuda.",
)
@click.option(
    "--layout",
    type=click.Choice(TRITON_LAYOUTS),
    default=default_of(ServeBenchConfig, "layout"),
    show_default=True,
    help="The repository swept: an ensemble of tokenizer, model and post-processor, or one pipeline model; "
    "auto: the pipeline where the model runs in the Python backend, else the ensemble.",
)
@click.option(
    "--layouts",
    callback=choice_list(TRITON_LAYOUTS),
    default=",".join(default_of(ServeBenchConfig, "layouts")),
    show_default=True,
    help="Search: the layouts tried.",
)
@click.option(
    "--threads",
    callback=count_list,
    default="0",
    show_default=True,
    help="Search: intra-op threads per model instance (0: the runtime's default, one per core).",
)
@click.option(
    "--buckets",
    multiple=True,
    callback=_size_sets,
    help="Search: a set of length buckets, or none; repeat. Default: 16,32,64,128 and none.",
)
@click.option(
    "--preferred-batch-sizes",
    multiple=True,
    callback=_size_sets,
    help="Search: preferred batch sizes, or none; repeat. Default: none.",
)
@click.option(
    "--search-repeats",
    type=int,
    default=default_of(ServeBenchConfig, "search_repeats"),
    show_default=True,
    help="Search: extra runs of the best candidates and the default, interleaved; they are judged on medians.",
)
@click.option(
    "--write-repository",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the chosen configuration's repository here.",
)
@overwrite_option
def serve_bench(onnx_dir, output, overwrite, concurrency, rates, batching, buckets, preferred_batch_sizes, **options):
    """Load a served model with real texts and measure it: requests/s and latency per level, the
    server's own queue and compute time per model, every answer checked against predict, and the
    same file in process. With --p99-ms, measure server settings and keep the fastest within it.

    Without --url, a local tritonserver (nvidia-pytriton's, or --tritonserver) serves a repository
    written from ONNX_DIR, restarted for each configuration measured.

    Example: nlu-deploy serve-bench models/demo/onnx --data data/valid.csv --output reports/serving --p99-ms 25
    """
    import importlib.util

    from nlu_deploy.serving import load_bench

    for package, name in (("tritonclient", "tritonclient"), ("prometheus_client", "prometheus-client")):
        if importlib.util.find_spec(package) is None:
            raise click.ClickException(f'serve-bench needs {name}: pip install -e ".[serve]"')
    # the options carry ServeBenchConfig's field names; these four need shaping first
    config = ServeBenchConfig(
        onnx_dir=onnx_dir, output=output, overwrite=overwrite, concurrency=concurrency, rates=rates or (),
        batching=tuple(b.strip() for b in batching.split(",") if b.strip()),
        buckets=buckets or default_of(ServeBenchConfig, "buckets"),
        preferred_batch_sizes=preferred_batch_sizes or ((),),
        **options,
    )  # fmt: skip
    if config.write_repository is not None and config.p99_ms is None:
        raise click.UsageError("--write-repository writes the configuration a search chose: give --p99-ms.")
    search_only = [o for o in given_options(click.get_current_context()) if o in SERVE_SEARCH_ONLY]
    if search_only and config.p99_ms is None:
        raise click.UsageError(f"{', '.join(search_only)} only apply to a search: give --p99-ms, or leave them out.")
    finished = load_bench.serve_bench_report(config)
    click.echo(finished.report.to_markdown())
    click.echo(f"report: {', '.join(str(p) for p in finished.files)}", err=True)
    if finished.report.signal is not None:
        stop = Stopped(finished.report.signal)
        measured = sum(len(c.levels) for c in finished.report.configurations + finished.report.candidates)
        stop.kept = f"the {measured} level(s) measured are in {finished.folder}, marked incomplete"
        raise stop
    problem = load_bench.verdict(finished.report.to_json())
    if problem:
        raise click.ClickException(f"{problem} ({finished.folder})")


# serve-bench's options that only its --p99-ms search reads (refused without it, not ignored)
SERVE_SEARCH_ONLY = ("--at-concurrency", "--at-rate", "--batching", "--instances", "--helper-instances", "--layouts",
                     "--threads", "--buckets", "--preferred-batch-sizes", "--search-repeats")  # fmt: skip


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option(
    "--file",
    "input_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Texts to classify: one per line (.txt), or the text column of a .csv, .tsv, .jsonl or .parquet file. "
    "With --output, a local path or (with --ray) any URI pyarrow reads.",
)
@click.option(
    "--variant",
    default=None,
    help="ONNX file in MODEL_DIR to use (or its variant name: int8, optimized, fp32), an OpenVINO variant "
    "(openvino-f32, openvino-bf16, openvino-int8) or pt2-fp32. Default: the variant MODEL_DIR's "
    "recommendation.json names (what run measured fastest and shipped), else model_quantized.onnx, else "
    "optimized, else fp32.",
)
@click.option("--provider", type=click.Choice(PROVIDERS), default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@apply(BULK_PREDICT_OPTIONS)
def predict(model_dir, texts, input_file, variant, provider, as_json, output, **bulk):
    """Classify texts, or find their slots/entities, with an exported model (or a PyTorch checkpoint).

    A slot tagger prints each entity's type, text, character offsets [start, end) into the
    input and score; texts are split into words at whitespace, as in the training data.

    With --output, a file of any size is answered in chunks into a .jsonl or .parquet file (one
    `--json` object per readable row, in input order), with a progress bar and a log; a stopped
    run goes on from its last finished chunk when run again; rows that cannot be read are listed
    in OUTPUT.odd-rows.jsonl. --ray runs it on a Ray cluster. See docs/bulk.md.

    Example: nlu-deploy predict models/demo/onnx "wake me up at 7" "play some jazz"
    """
    from nlu_deploy.data.tables import read_texts
    from nlu_deploy.predict import load_task_predictor

    if output is not None:
        return _predict_to_file(model_dir, texts, input_file, variant, provider, output, **bulk)
    only_with_output = [o for o in given_options(click.get_current_context()) if o in BULK_ONLY_FLAGS]
    if only_with_output:
        raise click.UsageError(f"{', '.join(only_with_output)} only apply with --output (a file of answers).")
    all_texts = list(texts) + (read_texts(input_file, bulk["text_column"]) if input_file else [])
    if not all_texts:
        raise click.UsageError("give texts as arguments or with --file.")
    predictor, used, task = load_task_predictor(model_dir, variant, provider)
    click.echo(f"using {used}", err=True)
    predictions = predictor.predict(all_texts, bulk["batch_size"])
    if predictor.last_truncated:
        click.echo(
            f"note: {predictor.last_truncated} text(s) exceed the model's max length of "
            f"{predictor.max_length} tokens; the rest of each was not read.",
            err=True,
        )
    for text, prediction in zip(all_texts, predictions):
        if as_json:
            click.echo(json.dumps(task.prediction_json(text, prediction), ensure_ascii=False))
        else:
            click.echo(task.prediction_line(text, prediction))


BULK_ONLY_FLAGS = ("--id-column", "--chunk-rows", "--overwrite", "--ray", "--ray-actors")


def _predict_to_file(model_dir, texts, input_file, variant, provider, output, **bulk):
    from nlu_deploy.config import BulkPredictConfig

    if input_file is None:
        raise click.UsageError("--output writes the answers of a --file; give the input with --file.")
    if texts:
        raise click.UsageError("with --output, give the texts in --file only, not as arguments.")
    ray_address = bulk.pop("ray_address")
    config = BulkPredictConfig(
        model_dir, str(input_file), str(output), variant, provider, ray_address=ray_address,
        show_progress=True, **bulk,
    )  # fmt: skip
    if ray_address is None:
        from nlu_deploy.bulk.local_run import predict_file

        result = predict_file(config)
    else:
        from nlu_deploy.bulk.ray_run import predict_file_on_ray

        result = predict_file_on_ray(config)
    click.echo(result.summary(), err=True)


@main.command()
@click.option(
    "--require",
    type=click.Choice(["cuda", "tensorrt"]),
    default=None,
    help="Exit 1 unless this provider really starts here.",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the report as JSON."
)
def doctor(require, json_path):
    """Check the GPU stack: torch and onnxruntime builds and their CUDA versions, the CUDA,
    cuDNN, cuBLAS and TensorRT libraries, TF32, and which execution providers really start.

    Each missing piece comes with the command that installs it.

    Example: nlu-deploy doctor --require tensorrt
    """
    from nlu_deploy.runtime.machine import CHECKED_PROVIDERS, diagnose

    report = diagnose()
    click.echo(report.to_markdown())
    if json_path:
        artifacts.write_json(json_path, report.to_json())
    started = [p for p in CHECKED_PROVIDERS if report.starts(p)]
    click.echo(f"Providers that start here: {', '.join(started)}.")
    if require:
        from nlu_deploy.config import EXECUTION_PROVIDERS

        wanted = EXECUTION_PROVIDERS[require]
        if not report.starts(wanted):
            problems = " ".join(report.problems())
            raise click.ClickException(
                f"{wanted} does not start here ({report.providers[wanted]}).{' ' + problems if problems else ''}"
            )


@main.command("search-result")
@click.option("--study-storage", required=True, metavar="URL", help="The shared study's database URL.")
@click.option("--study-name", default=None, help="The study's name. Default: nlu-deploy.")
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Directory to write.")
@overwrite_option
def search_result(study_storage, study_name, output, overwrite):
    """Write the report over every trial of a shared search, and the best trial's checkpoint.

    The workers (`finetune --search N --study-storage URL`) keep their checkpoints on their own
    machines; this reads the best one from the path its worker recorded, so run it where that
    path is readable (a shared filesystem, or that machine).

    Example: nlu-deploy search-result --study-storage postgresql://nlu@db/search --study-name intents --output models/intents
    """
    from nlu_deploy.training.search import search_result as write_search_result

    echo_search_result(write_search_result(study_storage, study_name, output, overwrite))


@main.command("bench-training")
@finetune_options
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the result as JSON."
)
def bench_training(json_path, compile_flag, **options):
    """Time our training loop against the Hugging Face Trainer on the same model, data and settings.

    Needs the `accelerate` package (pip install -e ".[bench]"). Nothing is kept but the figures.

    Example: nlu-deploy bench-training --train ../shared/data/snips/train.jsonl --label-column intent --epochs 1
    """
    from nlu_deploy.training.versus_trainer import compare_with_trainer

    config = make_finetune_config(Path("unused"), True, compile_flag, **options)
    comparison = compare_with_trainer(config)
    click.echo(comparison.to_markdown())
    if json_path:
        artifacts.write_json(json_path, comparison.to_json())


@main.command()
@finetune_options
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=Path("models/demo"),
    show_default=True,
    help="Directory for the checkpoint, ONNX files and report.",
)
@click.option(
    "--optimize", type=click.Choice(OPTIMIZATION_LEVELS), default=default_of(RunConfig, "optimize"), show_default=True
)
@click.option(
    "--max-score-drop",
    type=float,
    default=default_of(RunConfig, "max_score_drop"),
    show_default=True,
    help="Points of accuracy (entity F1 for tagging) an ONNX file may lose against PyTorch.",
)
@click.option(
    "--batch-sizes", callback=int_list, default=shape_list(default_of(RunConfig, "batch_sizes")), show_default=True
)
@click.option("--seq-lens", callback=int_list, default=shape_list(default_of(RunConfig, "seq_lens")), show_default=True)
@click.option(
    "--min-seconds",
    type=float,
    default=default_of(RunConfig, "bench_min_seconds"),
    show_default=True,
    help="Minimum timed seconds per shape.",
)
@click.option(
    "--student-layers",
    type=int,
    default=None,
    help="Also distil a student with this many of the teacher's layers, export, validate and benchmark it "
    "beside the teacher (see `nlu-deploy distill`).",
)
@click.option("--student-epochs", type=int, default=default_of(RunConfig, "student_epochs"), show_default=True)
@click.option(
    "--openvino",
    is_flag=True,
    help="Also the OpenVINO variants, and fail if OpenVINO is missing (--recipe measured uses them when installed).",
)
@click.option(
    "--pt2",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Also a PyTorch AOTInductor package for this device (export --pt2): validated, timed and shippable "
    "like the ONNX and OpenVINO variants.",
)
@click.option(
    "--recipe",
    type=click.Choice(RUN_RECIPES),
    default=default_of(RunConfig, "recipe"),
    show_default=True,
    help="measured: ship the variant that measures fastest here within the accuracy gate (int8 recipes of both "
    "graphs, OpenVINO when installed, timed on real held-out lengths); fixed: dynamic int8 from the O2 graph, "
    "no measurement.",
)
@click.option(
    "--choose-minutes",
    type=float,
    default=default_of(RunConfig, "choose_minutes"),
    show_default=True,
    help="measured: minutes the int8 candidates may take; the report names any skipped for time.",
)
@with_search_options
@overwrite_option
def run(
    output,
    optimize,
    openvino,
    pt2,
    recipe,
    choose_minutes,
    max_score_drop,
    batch_sizes,
    seq_lens,
    min_seconds,
    student_layers,
    student_epochs,
    overwrite,
    compile_flag,
    search_trials,
    search_time,
    study_storage,
    study_name,
    **options,
):
    """Fine-tune, export (fp32, optimized, int8, OpenVINO), validate, benchmark, and choose what to ship.

    Writes OUTPUT/checkpoint, OUTPUT/onnx, OUTPUT/report.md and OUTPUT/report.json. With no
    options it trains the packaged MiniLM on the built-in demo data. The variant that measured
    fastest on this machine within the accuracy gate is named in OUTPUT/onnx/recommendation.json,
    which predict and export --triton then use by default.

    Example: nlu-deploy run --train data/train.jsonl --label-column intent --output models/snips

    Example: nlu-deploy run --task token-classification --output models/demo-slots

    Example: nlu-deploy run --train data/train.jsonl --label-column intent --student-layers 3 --output models/snips
    """
    from nlu_deploy.pipeline import run as run_pipeline

    if openvino:  # said before the training, not after it
        from nlu_deploy.runtime.openvino_runtime import require_openvino

        require_openvino("run --openvino")
    finetune_config = make_finetune_config(output / "checkpoint", False, compile_flag, **options)
    config = RunConfig(
        output=output,
        finetune=finetune_config,
        optimize=optimize,
        openvino=openvino,
        pt2=pt2,
        recipe=recipe,
        choose_minutes=choose_minutes,
        max_score_drop=max_score_drop,
        batch_sizes=batch_sizes,
        seq_lens=seq_lens,
        bench_min_seconds=min_seconds,
        student_layers=student_layers,
        student_epochs=student_epochs,
        search=make_search_config(search_trials, search_time, study_storage, study_name),
        overwrite=overwrite,
    )
    report = run_pipeline(config, show_progress=sys.stderr.isatty(), log=lambda line: click.echo(line, err=True))
    click.echo(report.to_markdown())
    click.echo(f"Report: {output / 'report.md'}")
    if not report.validation.passed or (report.student_validation and not report.student_validation.passed):
        raise ValidationFailed(
            f"at least one ONNX file lost more {report.validation.metric_name} than allowed; see the report."
        )
