"""`predict --file IN --output OUT` in this process: the input streamed a chunk at a time, each
chunk's answers kept on disk as soon as it is done, the output renamed into place only when
complete.

While it runs, OUT's folder holds `.OUT.chunks/`: a state file saying what the run is (input,
model, file, columns, chunk size), and per finished chunk its answers, its odd rows and a
`done` marker written last. Stopped (SIGTERM, Ctrl-C, a crash, a full disk) and run again with
the same command, it goes on after the last chunk with a marker; the output is byte for byte
the one an uninterrupted run writes, because chunks and the batches inside them are the same.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nlu_deploy.artifacts import output_lock
from nlu_deploy.bulk.answer_sinks import AnswerFile, answer_schema
from nlu_deploy.bulk.chunk_answers import ChunkAnswers, answer_chunk
from nlu_deploy.bulk.row_sources import Chunk, ParquetSource, open_source
from nlu_deploy.config import BulkPredictConfig
from nlu_deploy.errors import DataError
from nlu_deploy.progress import ProgressLog
from nlu_deploy.stopping import Stopped

STATE_FILE = "state.json"


def odd_rows_path(output: str) -> str:
    """The side file listing rows without an answer and rows answered from a truncated text."""
    return f"{output}.odd-rows.jsonl"


def log_path(output: str) -> str:
    return f"{output}.log"


def chunks_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.chunks"


@dataclass
class BulkResult:
    output: str
    odd_rows_file: str | None  # None when every row was answered from its whole text
    counts: dict  # rows, answered, bad, truncated, windowed: over the whole input
    seconds: float  # this run's time (resumed chunks were answered before it)
    rows_this_run: int
    resumed_chunks: int
    used: str  # the file that answered

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        c = self.counts
        parts = [f"answered {c['answered']:,} of {c['rows']:,} rows into {self.output}"]
        if self.rows_this_run:
            parts.append(f"{self.rows_this_run:,} in this run at {self.rows_per_second:,.0f} rows/s")
        if self.resumed_chunks:
            parts.append(f"going on after {self.resumed_chunks} chunk(s) finished before")
        odd = []
        if c["bad"]:
            odd.append(f"{c['bad']:,} row(s) could not be read and have no answer")
        if c["truncated"]:
            odd.append(
                f"{c['truncated']:,} text(s) were longer than the model reads and were answered from their start"
            )
        line = "; ".join(parts) + "."
        return line + (f" {' and '.join(odd).capitalize()}: see {self.odd_rows_file}." if odd else "")


def check_destination(config: BulkPredictConfig) -> None:
    """Refuse, before anything is loaded, an output that is there already (without --overwrite)
    or that is the input itself."""
    output = Path(config.output)
    if output.is_dir():
        raise DataError(f"{output} is a directory; --output names the file to write (.jsonl or .parquet).")
    if "://" not in config.input and output.resolve() == Path(config.input).resolve():
        raise DataError(f"--output {output} is the input file; choose another name.")
    if output.exists() and not config.overwrite:
        raise DataError(f"{output} already exists; pass --overwrite to replace it.")


def predict_file(config: BulkPredictConfig) -> BulkResult:
    from nlu_deploy.predict import load_task_predictor

    output = Path(config.output)
    check_destination(config)
    with output_lock(output):
        check_destination(config)  # again: a writer that held the lock may have finished meanwhile
        source = open_source(config.input, config.text_column, config.id_column)
        predictor, used, task = load_task_predictor(config.model_dir, config.variant, config.provider)
        folder = chunks_folder(output)
        finished = _resume_point(folder, _run_identity(config, used), config.overwrite)
        log = ProgressLog(Path(log_path(config.output)), terminal=config.show_progress and sys.stderr.isatty())
        log.line(f"predicting {config.input} with {used} into {output} ({config.rows_per_chunk:,} rows a chunk)")
        if finished:
            rows = sum(done["counts"]["rows"] for done in finished)
            log.line(f"going on after chunk {len(finished)} ({rows:,} rows answered before)")
        started, rows_this_run, resumed = time.monotonic(), 0, len(finished)
        after = Chunk.from_json(finished[-1]["chunk"]) if finished else None
        with _ChunkProgress(source, finished, log, config.show_progress) as progress:
            try:
                for rows in source.chunks(config.rows_per_chunk, after):
                    answers = answer_chunk(predictor, task, rows, config.batch_size, config.id_column is not None)
                    finished.append(_keep_chunk(folder, answers))
                    rows_this_run += answers.rows
                    progress.advance(answers)
            except Stopped as stop:
                stop.kept = (
                    f"{len(finished)} finished chunk(s) are kept in {folder}; run the same command again to go on"
                )
                raise
        seconds = time.monotonic() - started
        if not finished:
            shutil.rmtree(folder, ignore_errors=True)
            raise DataError(f"{config.input} holds no rows to answer.")
        id_type = source.id_type() if isinstance(source, ParquetSource) else None
        counts = _assemble(folder, finished, config, answer_schema_for(task, config, id_type))
        shutil.rmtree(folder, ignore_errors=True)
    odd = odd_rows_path(config.output) if counts["bad"] or counts["truncated"] else None
    result = BulkResult(str(output), odd, counts, seconds, rows_this_run, resumed, used)
    log.line(result.summary())
    return result


def answer_schema_for(task, config: BulkPredictConfig, id_type=None):
    """The Parquet schema (None for JSONL): the task's answer fields, and the id column's type
    (a Parquet input's own type; ids read from text formats are text)."""
    if not str(config.output).lower().endswith(".parquet"):
        return None
    if config.id_column is None:
        return answer_schema(task.answer_fields)
    import pyarrow as pa

    return answer_schema(task.answer_fields, id_type or pa.string())


def _run_identity(config: BulkPredictConfig, used: str) -> dict:
    """What must match for a rerun to go on from another run's chunks."""
    identity = {
        "input": config.input if "://" in config.input else str(Path(config.input).resolve()),
        "model": str(Path(config.model_dir).resolve()),
        "file": used,
        "text_column": config.text_column,
        "id_column": config.id_column,
        "rows_per_chunk": config.rows_per_chunk,
        "batch_size": config.batch_size,
    }
    if "://" not in config.input:
        stat = os.stat(config.input)
        identity["input_size"], identity["input_modified_ns"] = stat.st_size, stat.st_mtime_ns
    return identity


def _resume_point(folder: Path, identity: dict, overwrite: bool) -> list[dict]:
    """The finished chunks of an earlier run of this very command, in order (none with
    --overwrite, or when there is no earlier run). Parts of a chunk without its marker are
    removed. A folder left by a different command is refused, not mixed in."""
    state_path = folder / STATE_FILE
    if overwrite or not state_path.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        _write_atomic(state_path, json.dumps(identity, indent=2))
        return []
    try:
        earlier = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if earlier != identity:
        differs = sorted(k for k in identity if not isinstance(earlier, dict) or earlier.get(k) != identity[k])
        raise DataError(
            f"{folder} holds an unfinished run of a different command ({', '.join(differs) or 'its state'} "
            "differ); pass --overwrite to start over."
        )
    finished = []
    while (folder / f"{len(finished):06d}.done.json").exists():
        finished.append(json.loads((folder / f"{len(finished):06d}.done.json").read_text(encoding="utf-8")))
    for part in folder.iterdir():  # a chunk cut short: its parts have no marker (and half-written .tmp files)
        index = part.name.split(".")[0]
        if part.name != STATE_FILE and (not index.isdigit() or int(index) >= len(finished)):
            part.unlink()
    return finished


def _write_atomic(path: Path, text: str) -> None:
    staging = path.with_name(f"{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def _keep_chunk(folder: Path, answers: ChunkAnswers) -> dict:
    """Write a chunk's answers and odd rows, then its marker: a chunk without one is redone."""
    stem = f"{answers.chunk.index:06d}"
    _write_atomic(folder / f"{stem}.answers.jsonl", "".join(line + "\n" for line in answers.answers))
    _write_atomic(folder / f"{stem}.odd.jsonl", "".join(line + "\n" for line in answers.odd_rows))
    done = {"chunk": answers.chunk.to_json(), "counts": answers.counts()}
    _write_atomic(folder / f"{stem}.done.json", json.dumps(done))
    return done


def _assemble(folder: Path, finished: list[dict], config: BulkPredictConfig, schema) -> dict:
    """The output and the odd-rows file from the chunks, each renamed into place when whole."""
    output, odd_path = Path(config.output), Path(odd_rows_path(config.output))
    counts = {key: sum(done["counts"][key] for done in finished) for key in ChunkAnswers(None).counts()}
    staged = output.with_name(f".{output.name}.assembling-{os.getpid()}{output.suffix}")
    staged_odd = odd_path.with_name(f".{odd_path.name}.assembling-{os.getpid()}")
    try:
        with AnswerFile(str(staged), schema) as answers, staged_odd.open("w", encoding="utf-8") as odd:
            for index in range(len(finished)):
                answers.write((folder / f"{index:06d}.answers.jsonl").read_text(encoding="utf-8").splitlines())
                odd.write((folder / f"{index:06d}.odd.jsonl").read_text(encoding="utf-8"))
        os.replace(staged, output)
        if counts["bad"] or counts["truncated"]:
            os.replace(staged_odd, odd_path)
        else:  # nothing odd: no side file, and none left from an earlier run over other input
            odd_path.unlink(missing_ok=True)
    finally:
        staged.unlink(missing_ok=True)
        staged_odd.unlink(missing_ok=True)
    return counts


class _ChunkProgress:
    """A bar in rows with rows/s and the time left (the total estimated from the bytes read so
    far where the format does not know its rows), and timed lines in the log."""

    def __init__(self, source, finished: list[dict], log: ProgressLog, show: bool):
        self.log, self.show, self.source = log, show, source
        self.size = source.size()
        self.rows = sum(done["counts"]["rows"] for done in finished)
        self.position = Chunk.from_json(finished[-1]["chunk"]).end if finished else 0
        self.bar = None

    def __enter__(self) -> _ChunkProgress:
        if self.show and self.log.terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self._total(), initial=self.rows, unit="rows", unit_scale=True, dynamic_ncols=True)
        return self

    def _total(self) -> int | None:
        if self.source.total_hint is not None:
            return self.source.total_hint
        if not self.position:
            return None
        return max(self.rows, round(self.rows * self.size / self.position))

    def advance(self, answers: ChunkAnswers) -> None:
        self.rows += answers.rows
        self.position = answers.chunk.end
        total = self._total()
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(answers.rows)
        share = (
            f" of about {total:,}" if total and self.source.total_hint is None else f" of {total:,}" if total else ""
        )
        self.log.periodic(f"{self.rows:,}{share} rows answered (chunk {answers.chunk.index + 1})")

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()
