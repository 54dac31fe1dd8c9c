"""The one place that knows the file names inside a stage directory, and how stage
directories come into being (atomically: a stage never leaves something that looks done)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nlu_deploy.errors import ModelError, NluDeployError

MODEL_CONFIG = "config.json"  # the model's Hugging Face config, with id2label and our keys (rules, task)
MANIFEST = "nlu_deploy.json"  # which stage, options and parent produced the directory
METRICS = "metrics.json"  # finetune: per-epoch loss, validation score, throughput
TRAINING_LOG = "training.log"  # finetune: the progress lines of the run, as they were printed
VALIDATION_SPLIT = "validation_split.jsonl"  # finetune: the held-out rows it scored on
CALIBRATION_SAMPLE = "calibration_sample.jsonl"  # finetune: training rows for static quantization
ONNX_FP32 = "model.onnx"
ONNX_OPTIMIZED = "model_optimized.onnx"
ONNX_QUANTIZED = "model_quantized.onnx"
ONNX_FP16 = "model_fp16.onnx"
QUANTIZATION_REPORT_JSON = "quantization_report.json"
QUANTIZATION_REPORT_MD = "quantization_report.md"
WEIGHTS = "model.safetensors"
VALIDATION_REPORT = "validation.json"  # validate: written into the ONNX directory it scored
RECOMMENDATION = "recommendation.json"  # run: the variant it ships, and the measurements that chose it
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
# The variants `predict` prefers when none is named: the fastest kinds first.
PREFERRED_ONNX_FILES = (ONNX_QUANTIZED, ONNX_OPTIMIZED, ONNX_FP32)


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader never sees half a file. Missing folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}).") from None


def read_model_config(directory: Path, missing_ok: bool = False) -> dict:
    """config.json of a checkpoint or ONNX directory: the one reader. With `missing_ok`, a
    missing or unreadable file gives {} (loading the model then says what is wrong)."""
    path = Path(directory) / MODEL_CONFIG
    if missing_ok:
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return config if isinstance(config, dict) else {}
    return read_json(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in (
        "nlu-deploy",
        "torch",
        "transformers",
        "optimum",
        "optimum-onnx",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "openvino",
        "nncf",
        "numpy",
    ):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    onnxruntime = sys.modules.get("onnxruntime")
    if onnxruntime is not None:  # the one that ran: a CPU and a GPU build can sit side by side
        versions["onnxruntime (imported)"] = f"{onnxruntime.__version__} from {Path(onnxruntime.__file__).parent}"
    return versions


def write_manifest(
    directory: Path, stage: str, options: dict[str, Any], parent: Path | None = None, **extra: Any
) -> None:
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "parent": str(parent.resolve()) if parent else None,
        "options": {key: str(value) if isinstance(value, Path) else value for key, value in options.items()},
        "versions": library_versions(),
        "command": " ".join(sys.argv),
        **extra,
    }
    write_json(directory / MANIFEST, manifest)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a stage directory, or {} for directories made by other tools."""
    path = directory / MANIFEST
    return read_json(path) if path.exists() else {}


def recommended_variant(directory: Path) -> str | None:
    """The variant `run` measured fastest within the accuracy gate on this export, if it chose one."""
    path = Path(directory) / RECOMMENDATION
    if not path.is_file():
        return None
    recommendation = read_json(path)
    if not isinstance(recommendation, dict) or not isinstance(recommendation.get("variant"), str):
        raise ModelError(
            f'{path} does not name a variant (it should be a JSON object with a "variant"); '
            "delete it, or name the variant with --variant."
        )
    return recommendation["variant"]


def onnx_files(directory: Path) -> list[Path]:
    """Every .onnx file in a directory, the plain fp32 export first."""
    if not directory.is_dir():
        raise ModelError(f"{directory} is not a directory.")
    files = sorted(directory.glob("*.onnx"), key=lambda p: (p.name != ONNX_FP32, p.name))
    if not files:
        raise ModelError(f"{directory} holds no .onnx files; run `nlu-deploy export` first.")
    return files


_VARIANT_NAMES = {ONNX_FP32: "fp32", ONNX_OPTIMIZED: "optimized", ONNX_QUANTIZED: "int8", ONNX_FP16: "fp16"}


CUDA_GRAPH = "+cuda-graph"  # a file's variant timed with CUDA graphs (bench --cuda-graphs)


def gated_variant(variant: str) -> str:
    """The variant whose validation gates this one: a CUDA-graph replay computes what its file does."""
    return variant.removesuffix(CUDA_GRAPH)


def variant_name(path: Path) -> str:
    """Short names for reports: model.onnx -> fp32, model_quantized.onnx -> int8."""
    return _VARIANT_NAMES.get(path.name, path.stem.removeprefix("model_"))


def check_output(output: Path, overwrite: bool = False) -> None:
    """Refuse, before a stage does any work, an output it could not or should not write: a
    symbolic link (the stage replaces the directory, which would cut the link or write
    through it), a file, a non-empty directory without --overwrite, a place without write
    permission."""
    output = Path(output)
    if output.is_symlink():
        raise NluDeployError(f"{output} is a symbolic link; give the directory it should be written to itself.")
    if output.exists() and not output.is_dir():
        raise NluDeployError(f"{output} exists and is not a directory.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise NluDeployError(f"{output} already exists and is not empty; pass --overwrite to replace it.")
    existing = output.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise NluDeployError(f"{output} cannot be written: {existing} is not a writable directory.")


_HELD_LOCKS: dict[Path, Any] = {}  # output -> this process's lock on it (stages nest: run -> export)


def lock_path(output: Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.lock"


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """One writer per output for the whole stage. A second writer is refused at once with a
    sentence naming the first. The lock is the kernel's (flock on a file beside the output), so
    it dies with its process: a killed run's lock file is simply taken by the next run. The file
    is removed on release, so nothing is left beside a finished output. (Windows has no flock:
    there, outputs are not locked.)"""
    output = Path(output)
    key = output.absolute()
    if key in _HELD_LOCKS or sys.platform == "win32":
        yield
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(output)
    descriptor = _take_lock(path, output)
    try:
        _refuse_nested_writers(key)
    except NluDeployError:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(descriptor)
        raise
    _HELD_LOCKS[key] = descriptor
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it: a run that opened the old file sees it is gone
        os.close(descriptor)


def _refuse_nested_writers(output: Path) -> None:
    """Outputs nest (`run` writes OUT, `export` may be pointed at OUT/onnx): a writer of a folder
    above this output or inside it would delete or be deleted by this one, so it is refused too.
    Locks this process holds (run's own export into its staging folder) are not in the way."""
    ancestors = [folder for folder in output.parents if folder != folder.parent]
    inside = output.rglob(".*.lock") if output.is_dir() else []
    for lock in [lock_path(folder) for folder in ancestors] + list(inside):
        owner = lock.parent / lock.name.removeprefix(".").removesuffix(".lock")
        if owner.absolute() in _HELD_LOCKS or not lock.is_file():
            continue
        holder = _holder_if_locked(lock)
        if holder is not None:
            where = "inside" if owner.is_relative_to(output) else "around"
            raise NluDeployError(
                f"{owner} ({where} {output}) is being written by another run ({holder}); wait for it to end "
                "or choose an output outside it."
            )


def _holder_if_locked(lock: Path) -> str | None:
    """Who holds `lock`, or None when nobody does (a shared lock taken for a moment tells)."""
    import fcntl

    try:
        descriptor = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(descriptor, 1000).decode("utf-8", "replace").strip() or "another process"
    finally:
        os.close(descriptor)  # closing releases the shared lock when it was taken
    return None


def _take_lock(path: Path, output: Path) -> int:
    import fcntl

    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 1000).decode("utf-8", "replace").strip() or "another process"
            os.close(descriptor)
            raise NluDeployError(
                f"{output} is being written by another run ({holder}); wait for it to end or choose another output."
            ) from None
        try:  # the previous holder may have removed the file after we opened it: lock the new one
            current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(descriptor, 0)
            os.write(
                descriptor,
                f"process {os.getpid()} on {platform.node()}, `nlu-deploy "
                f"{' '.join(sys.argv[1:2])}`, since {time.strftime('%H:%M:%S')}".encode(),
            )
            return descriptor
        os.close(descriptor)


@contextlib.contextmanager
def staged_output(output: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `output` only if the block succeeds.

    A failed or interrupted stage therefore leaves either the previous output or nothing,
    never a half-written directory under the requested name. The output is locked meanwhile.
    """
    output = Path(output)
    check_output(output, overwrite)
    with output_lock(output):
        check_output(output, overwrite)  # again: a writer that held the lock may have finished meanwhile
        yield from _staged(output, overwrite)


class StagedReport:
    """A report being written in `path`; `finish(complete)` says where it goes when the block ends."""

    INCOMPLETE_SUFFIX = ".incomplete"

    def __init__(self, output: Path, path: Path) -> None:
        self.output, self.path, self.complete = output, path, None

    def finish(self, complete: bool) -> Path:
        """Where the report will be: the output, unless the run stopped early and the output holds an
        earlier report, which an incomplete one never replaces (it goes to OUTPUT.incomplete)."""
        self.complete = complete
        return self.destination

    @property
    def destination(self) -> Path:
        if self.complete or not (self.output.is_dir() and any(self.output.iterdir())):
            return self.output
        return self.output.with_name(self.output.name + self.INCOMPLETE_SUFFIX)


@contextlib.contextmanager
def staged_report(output: Path, overwrite: bool = False) -> Iterator[StagedReport]:
    """staged_output for a report that a stopped run still keeps, marked incomplete: the block
    writes into report.path and calls report.finish(complete); the folder then takes its place.
    A block that raises leaves nothing, and the output as it was."""
    output = Path(output)
    check_output(output, overwrite)
    with output_lock(output):
        check_output(output, overwrite)
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(output)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-{os.getpid()}-", dir=output.parent))
        report = StagedReport(output, staging)
        try:
            yield report
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if report.complete is None:
            shutil.rmtree(staging, ignore_errors=True)
            return
        staging.chmod(0o777 & ~_umask())
        destination = report.destination
        _record_final_paths(staging, destination)
        _clear_for_swap(destination, staging, overwrite or destination != output)
        staging.rename(destination)


def _staged(output: Path, overwrite: bool) -> Iterator[Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(output)
    # the process id in the name tells a later run whether the stage that wrote it still runs
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-{os.getpid()}-", dir=output.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; outputs should not be
    _record_final_paths(staging, output)
    _clear_for_swap(output, staging, overwrite)
    staging.rename(output)


def _record_final_paths(staging: Path, destination: Path) -> None:
    """Stages nested in a staged one (run's fine-tune and export) record paths inside the staging
    folder, which is renamed in a moment: the manifests and reports must name where the files will
    be. The staging folder's name is unique (a process id and a random suffix), so replacing it in
    the text of each JSON and markdown file that holds it changes nothing else."""
    final = json.dumps(destination.name)[1:-1]  # as a JSON string holds it (quotes and backslashes escaped)
    for path in staging.rglob("*"):
        if path.suffix not in (".json", ".md") or not path.is_file() or path.stat().st_size > 50_000_000:
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if staging.name in text:
            new_name = final if path.suffix == ".json" else destination.name
            path.write_text(text.replace(staging.name, new_name), encoding="utf-8", errors="surrogateescape")


def _clear_for_swap(output: Path, staging: Path, overwrite: bool) -> None:
    """Make room for the staged folder. Without --overwrite the output was empty or absent when
    the stage began; if something is there now, another program wrote it meanwhile: it is not
    ours to delete, so the staged result is kept beside it and the stage fails saying where."""
    if not output.exists():
        return
    if overwrite or (output.is_dir() and not any(output.iterdir())):
        shutil.rmtree(output)
        return
    kept = output.with_name(f"{output.name}.kept-{time.strftime('%Y%m%d-%H%M%S')}")
    staging.rename(kept)
    raise NluDeployError(
        f"{output} was written by another program while this stage ran; it was left as it is, and this "
        f"stage's result is in {kept}."
    )


def remove_stale_partials(output: Path) -> list[Path]:
    """Remove the staging directories of `output` left by stages that were killed hard (SIGKILL,
    out of memory: no cleanup ran), and say so. A staging directory whose process still runs is
    left alone; one without a process id in its name (older versions) counts as stale."""
    removed = []
    for partial in Path(output).parent.glob(f".{Path(output).name}.partial-*"):
        pid = partial.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and _process_alive(int(pid)):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
        print(f"note: removed {partial}, left behind by an earlier run of this stage that was killed.", file=sys.stderr)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
