"""`predict --file IN --output OUT --ray ADDRESS`: the same chunks, answered by a pool of Ray
actors through Ray Data's `map_batches`, written in input order by this process.

The driver reads the input once to cut it into chunks (byte or row ranges; only one chunk's rows
are held at a time) and hands Ray the ranges, not the rows. Each actor loads the model once,
with its runtime's threads set to the CPUs Ray gave it, reads its chunks from the path or URI
the cluster sees, and answers them with `answer_chunk`, the step the local run uses: the output
is byte for byte the local run's. The model folder, the input and the output must be readable
(and the output writable) at the same path or URI on every node.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from nlu_deploy.artifacts import output_lock
from nlu_deploy.bulk.answer_sinks import AnswerFile, exists, move, remove
from nlu_deploy.bulk.chunk_answers import ChunkAnswers, answer_chunk
from nlu_deploy.bulk.local_run import BulkResult, answer_schema_for, log_path, odd_rows_path
from nlu_deploy.bulk.row_sources import Chunk, ParquetSource, open_source
from nlu_deploy.config import BulkPredictConfig
from nlu_deploy.errors import DataError
from nlu_deploy.progress import ProgressLog
from nlu_deploy.stopping import Stopped

LOCAL = "local"  # --ray local: start a Ray instance in this process, on this machine's CPUs


class ChunkPredictor:
    """A Ray actor: the model loaded once; each call answers the chunks it is given."""

    def __init__(self, config: BulkPredictConfig, threads: int):
        from nlu_deploy.predict import load_task_predictor

        self.config = config
        self.source = open_source(config.input, config.text_column, config.id_column)
        self.predictor, _, self.task = load_task_predictor(config.model_dir, config.variant, config.provider, threads)

    def __call__(self, batch: dict) -> dict:
        answered = []
        for index, start, end, first_line in zip(batch["index"], batch["start"], batch["end"], batch["first_line"]):
            rows = self.source.read(Chunk(int(index), int(start), int(end), int(first_line)))
            answers = answer_chunk(
                self.predictor, self.task, rows, self.config.batch_size, self.config.id_column is not None
            )
            answered.append(answers)
        return {
            "index": [a.chunk.index for a in answered],
            "answers": ["\n".join(a.answers) for a in answered],
            "odd_rows": ["\n".join(a.odd_rows) for a in answered],
            "counts": [json.dumps(a.counts()) for a in answered],
        }


def predict_file_on_ray(config: BulkPredictConfig) -> BulkResult:
    try:
        import ray
    except ImportError:
        raise DataError('--ray needs Ray Data: pip install "ray[data]" (or this package\'s [ray] extra).') from None
    from nlu_deploy.predict import load_task_predictor

    if exists(config.output) and not config.overwrite:
        raise DataError(f"{config.output} already exists; pass --overwrite to replace it.")
    source = open_source(config.input, config.text_column, config.id_column)
    _, used, task = load_task_predictor(
        config.model_dir, config.variant, config.provider, threads=1
    )  # fails here, not in an actor
    local_output = "://" not in config.output
    log = ProgressLog(Path(log_path(config.output)) if local_output else None, terminal=False, every_seconds=30)
    started_here = not ray.is_initialized()
    if started_here:
        _start_ray(ray, config.ray_address)
    try:
        actors, threads = _pool_size(ray, config.ray_actors)
        log.line(f"planning chunks of {config.input} for {actors} Ray actor(s) of {threads} thread(s)")
        plan = [rows.chunk.to_json() for rows in source.chunks(config.rows_per_chunk)]
        if not plan:
            raise DataError(f"{config.input} holds no rows to answer.")
        id_type = source.id_type() if isinstance(source, ParquetSource) else None
        schema = answer_schema_for(task, config, id_type)
        started = time.monotonic()
        with output_lock(Path(config.output)) if local_output else contextlib.nullcontext():
            counts = _answer_and_write(ray, config, plan, actors, threads, schema, log)
        seconds = time.monotonic() - started
    finally:
        if started_here:
            ray.shutdown()
    odd = odd_rows_path(config.output) if counts["bad"] or counts["truncated"] else None
    result = BulkResult(config.output, odd, counts, seconds, counts["rows"], 0, f"{used} on Ray ({actors} actors)")
    log.line(result.summary())
    return result


def _start_ray(ray, address: str | None) -> None:
    options = {"logging_level": "WARNING", "include_dashboard": False, "log_to_driver": True}
    try:
        if address == LOCAL:
            ray.init(num_cpus=os.cpu_count(), **options)
        else:
            ray.init(address=address, **options)
    except ConnectionError as exc:
        raise DataError(f"no Ray cluster answers at {address!r} ({str(exc).splitlines()[0]}).") from None


def _pool_size(ray, wanted: int | None) -> tuple[int, int]:
    """(actors, CPUs each): by default one actor per two CPUs of the cluster (onnxruntime and
    OpenVINO use two threads well on short texts), at least one."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = wanted or max(1, cpus // 2)
    if actors > cpus:
        raise DataError(f"--ray-actors {actors} is more than the cluster's {cpus} CPU(s); each actor needs one.")
    return actors, max(1, cpus // actors)


def _answer_and_write(ray, config, plan: list[dict], actors: int, threads: int, schema, log: ProgressLog) -> dict:
    """Chunks through the actor pool, and their answers into the output in input order (Ray Data
    keeps the order; a chunk that still arrived early waits in `pending`)."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    dataset = ray.data.from_items(plan, override_num_blocks=max(1, len(plan))).map_batches(
        ChunkPredictor,
        fn_constructor_kwargs={"config": config, "threads": threads},
        batch_size=1,
        concurrency=actors,
        num_cpus=threads,
    )
    counts = {key: 0 for key in ChunkAnswers(None).counts()}
    suffix = ".parquet" if str(config.output).lower().endswith(".parquet") else ".jsonl"  # AnswerFile writes by it
    staged = f"{config.output}.partial-{os.getpid()}{suffix}"
    staged_odd = f"{odd_rows_path(config.output)}.partial-{os.getpid()}"
    pending, next_index = {}, 0
    try:
        with AnswerFile(staged, schema) as answers, AnswerFile(staged_odd + ".jsonl") as odd:
            for row in dataset.iter_rows():
                pending[int(row["index"])] = row
                while next_index in pending:
                    done = pending.pop(next_index)
                    answers.write(done["answers"].split("\n") if done["answers"] else [])
                    odd.write(done["odd_rows"].split("\n") if done["odd_rows"] else [])
                    for key, value in json.loads(done["counts"]).items():
                        counts[key] += value
                    next_index += 1
                    log.periodic(f"{counts['rows']:,} rows answered ({next_index} of {len(plan)} chunks)")
        if next_index != len(plan):
            raise DataError(f"Ray returned {next_index} of {len(plan)} chunks; the output was not written.")
        move(staged, config.output)
        if counts["bad"] or counts["truncated"]:
            move(staged_odd + ".jsonl", odd_rows_path(config.output))
        else:
            remove(odd_rows_path(config.output))
    except Stopped as stop:
        stop.kept = f"{next_index} of {len(plan)} chunks were answered; a Ray run keeps nothing half-written"
        raise
    finally:
        remove(staged)
        remove(staged_odd + ".jsonl")
    return counts
