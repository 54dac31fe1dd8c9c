"""serve-bench: how a served model behaves under load, measured against a real server.

The server is either a local tritonserver started on a repository written from the exported
model (one server per configuration measured), or a running server at --url (measured only).
Each configuration gets a sweep of load levels (load_generator.py); each level gets the client's
view (requests/s, latency percentiles, errors) and the server's (server_metrics.py: per model of
the ensemble, queue and compute time and the batch it really executed). The same ONNX file then
runs in process at the batch sizes the server executed, so the report shows what serving costs.

With a p99 budget, a grid of server-side settings (dynamic batching, instances, length buckets)
is measured at the budget's level; the fastest configuration within the budget is written as the
repository, and always compared with the configuration `export --triton` writes by default.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from nlu_deploy import artifacts
from nlu_deploy.config import ServeBenchConfig
from nlu_deploy.errors import DataError, ModelError, NluDeployError, ProviderError
from nlu_deploy.progress import ProgressLog
from nlu_deploy.runtime.sessions import is_dynamic_int8
from nlu_deploy.serving import server_metrics
from nlu_deploy.serving.load_generator import (
    BATCH_DEPENDENT_DISAGREEMENT,
    BATCH_DEPENDENT_SCORE_TOLERANCE,
    FLOAT_SCORE_TOLERANCE,
    Level,
    LevelOutcome,
    ServedModelClient,
    Timing,
    answers_agree,
    run_level,
)
from nlu_deploy.serving.load_report import in_process_key, report_markdown, runner_window
from nlu_deploy.serving.repository import TritonOptions, export_triton_repository, served_name, served_variant
from nlu_deploy.stopping import Stopped, run_stoppable

REPORT_NAME = "serve-bench"
IN_PROCESS_SECONDS = 2.0


class ServerStopped(NluDeployError):
    """The server died or stopped answering during a level."""


@dataclass(frozen=True)
class Traffic:
    """The texts requests are drawn from, and what `predict --json` answers for each."""

    texts: list[str]
    expected: list[dict]
    served_file: str
    outputs: list[str]  # the ensemble's outputs to request
    words: bool  # the tokenizer splits whitespace words (slot and joint models)
    max_length: int
    facts: dict
    score_tolerance: float  # how far a served score may be from predict's (see load_generator)
    allowed_disagreement: float  # the share of answers that may differ from predict's


@dataclass(frozen=True)
class Server:
    """Where a measured server answers."""

    url: str
    protocol: str
    metrics_url: str | None
    description: str
    pid: int | None = None  # a local server's process


@dataclass
class Configuration:
    """One measured server configuration: its settings (None for a server at --url) and levels."""

    name: str
    options: TritonOptions | None
    levels: list[LevelOutcome] = field(default_factory=list)
    error: str | None = None  # it could not be measured (its repository did not load, ...)

    def describe(self) -> str:
        return self.options.describe() if self.options else "as served"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "settings": self.describe(),
            "options": _options_json(self.options),
            "levels": [level.to_json() for level in self.levels],
            "error": self.error,
        }


def _options_json(options: TritonOptions | None) -> dict | None:
    return None if options is None else {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}


@dataclass
class ServeBenchReport:
    config: ServeBenchConfig
    machine: dict
    traffic: dict
    configurations: list[Configuration] = field(default_factory=list)
    candidates: list[Configuration] = field(default_factory=list)  # measured at the budget's level only
    in_process: dict[str, float] = field(default_factory=dict)  # "batch/buckets" -> sequences/s
    choice: dict | None = None  # the search's outcome
    stopped: str | None = None  # why the run ended before its end
    signal: str | None = None  # the stop signal that ended it (SIGTERM, SIGINT), if one did

    @property
    def complete(self) -> bool:
        return self.stopped is None

    def to_json(self) -> dict:
        timing = {k: getattr(self.config, k) for k in ("warmup_s", "duration_s", "timeout_s")}
        return {
            "complete": self.complete,
            "ensemble": self.config.model,
            "stopped": self.stopped,
            "machine": self.machine,
            "traffic": self.traffic,
            "timing": timing,
            "configurations": [c.to_json() for c in self.configurations],
            "candidates": [c.to_json() for c in self.candidates],
            "in_process_sequences_per_s": self.in_process,
            "choice": self.choice,
        }

    def to_markdown(self) -> str:
        return report_markdown(self.to_json())


# -- the traffic ---------------------------------------------------------------------------------


def read_traffic(config: ServeBenchConfig, log: ProgressLog) -> Traffic:
    """Texts from --data with predict's answers; texts longer than the model's max length are sent
    truncated to a classifier and left out for word models (see below), counted either way."""
    from nlu_deploy.portable.light_tokenizer import LightTokenizer
    from nlu_deploy.predict import load_task_predictor

    onnx_dir = Path(config.onnx_dir)
    served = served_variant(onnx_dir, default_options(config), config.variant)
    served_file = served_name(onnx_dir, *served)
    # the answers checked against: predict on the device the server runs the model on
    try:
        predictor, _, task = load_task_predictor(onnx_dir, served_file, _provider(config))
    except ProviderError as exc:  # its advice names predict's --provider; serve-bench's option is --device
        if config.device != "gpu":
            raise
        reason = str(exc).split(";")[0]
        raise ProviderError(f"serve-bench --device gpu: {reason}; use --device cpu to serve on CPU.") from None
    texts, facts = _data_texts(config, onnx_dir)
    tokenizer = LightTokenizer(onnx_dir)
    max_length = predictor.max_length
    words = task.triton_words
    lengths = [len(ids) for ids in tokenizer([t.split() for t in texts] if words else texts,
                                             is_split_into_words=words)["input_ids"]]  # fmt: skip
    # Long texts are real traffic: a served classifier reads the first max_length tokens, as predict
    # does, so they are sent and counted. A word model's server also cuts there while predict reads
    # long texts whole in windows: their answers differ by design, so those are left out, and counted.
    long = sum(n > max_length for n in lengths)
    fitting = [t for t, n in zip(texts, lengths) if n <= max_length] if words else list(texts)
    facts["longer_than_max_length"] = long
    facts["long_texts"] = "left out (word models: predict reads them in windows)" if words else "sent truncated"
    if not fitting:
        raise DataError(f"every text in {config.data} is longer than the model's {max_length} tokens.")
    log.line(
        f"computing predict's answers for {len(fitting)} distinct texts (the served answers are checked against them)"
    )
    # each text alone, as `predict --json TEXT` answers it: a dynamic-int8 file's answer depends on
    # the batch it runs in, so a batched reference would itself differ from the single-text one
    expected = [task.prediction_json(t, predictor.predict([t])[0]) for t in fitting]
    sent = [min(n, max_length) for n in lengths if not words or n <= max_length]  # tokens the server reads
    facts.update(texts=len(fitting), mean_tokens=float(np.mean(sent)))
    outputs = [name for name, _ in task.triton_results]
    # activation scales computed per batch (OpenVINO's NNCF int8 has its scales fixed at calibration)
    dependent = served_file.endswith(".onnx") and is_dynamic_int8(onnx_dir / served_file)
    tolerance = BATCH_DEPENDENT_SCORE_TOLERANCE if dependent else FLOAT_SCORE_TOLERANCE
    allowed = BATCH_DEPENDENT_DISAGREEMENT if dependent else 0.0
    facts.update(batch_dependent=dependent, score_tolerance=tolerance, allowed_disagreement=allowed)
    return Traffic(fitting, expected, served_file, outputs, words, max_length, facts, tolerance, allowed)


def _data_texts(config: ServeBenchConfig, onnx_dir: Path) -> tuple[list[str], dict]:
    """Up to max_texts distinct texts of the data's text column, in a seeded random order."""
    from nlu_deploy.data.tables import column_texts
    from nlu_deploy.evaluation.validate import trained_text_column

    path = Path(config.data)
    usable, empty = column_texts(path, config.text_column or trained_text_column(onnx_dir))
    if not usable:
        raise DataError(f"{path} holds no non-empty texts to send.")
    distinct = list(dict.fromkeys(usable))
    random = np.random.default_rng(config.seed)
    chosen = [distinct[i] for i in random.permutation(len(distinct))[: config.max_texts]]
    facts = {"file": str(path), "rows": len(usable) + empty, "empty_or_not_text": empty, "distinct": len(distinct)}
    return chosen, facts


# -- one server, one sweep -----------------------------------------------------------------------


def check_server(server: Server, model: str, outputs: list[str]) -> list[str]:
    """One sentence for a server that does not answer or lacks the model; else the ensemble's
    models (its steps), whose metrics the report shows."""
    if server.protocol == "grpc":
        import tritonclient.grpc as wire
    else:
        import tritonclient.http as wire
    try:
        client = (
            wire.InferenceServerClient(server.url, network_timeout=10.0, connection_timeout=5.0)
            if server.protocol == "http"
            else wire.InferenceServerClient(server.url)
        )
        live = client.is_server_live(**({"client_timeout": 5.0} if server.protocol == "grpc" else {}))
    except Exception as error:  # noqa: BLE001 - tritonclient raises several kinds for a closed port
        raise ServerStopped(f"nothing answers at {server.url} over {server.protocol} ({_short(error)}).") from None
    if not live:
        raise ServerStopped(f"the server at {server.url} says it is not live.")
    try:
        ready = client.is_model_ready(model)
    except Exception:  # noqa: BLE001
        ready = False
    if not ready:
        raise ModelError(f"the server at {server.url} has no ready model {model!r}; it has: {_model_names(client)}.")
    metadata = client.get_model_metadata(model)
    served_outputs = {o["name"] if isinstance(o, dict) else o.name for o in _field(metadata, "outputs")}
    missing = [name for name in outputs if name not in served_outputs]
    if missing:
        raise ModelError(f"{model!r} at {server.url} has no output {', '.join(missing)}: it serves another task.")
    return [model, *_ensemble_steps(client, model)]


def _field(message, name: str):
    return message[name] if isinstance(message, dict) else getattr(message, name)


def _model_names(client) -> str:
    try:
        index = client.get_model_repository_index()
        entries = index if isinstance(index, list) else index.models
        names = sorted({_field(e, "name") for e in entries})
    except Exception:  # noqa: BLE001
        return "(its model index cannot be read)"
    return ", ".join(names) or "no models"


def _ensemble_steps(client, model: str) -> list[str]:
    try:
        config = client.get_model_config(model)
        config = config if isinstance(config, dict) else _as_dict(config.config)
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        return [step.get("model_name") for step in steps if step.get("model_name")]
    except Exception:  # noqa: BLE001 - not an ensemble, or no config API: the model's own metrics only
        return []


def _as_dict(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def sweep(
    server: Server,
    model: str,
    traffic: Traffic,
    levels: list[Level],
    timing: Timing,
    log: ProgressLog,
    name: str,
    done: list[LevelOutcome],
    on_level=None,
) -> None:
    """Every level against one server, each outcome appended to `done` as it is measured (so a
    fault or a stop keeps the levels before it); a level cut short raises ServerStopped."""
    models = check_server(server, model, traffic.outputs)
    run_stoppable(_sweep(server, model, models, traffic, levels, timing, log, name, done, on_level))


async def _sweep(server, model, models, traffic, levels, timing, log, name, done, on_level) -> None:
    client = ServedModelClient(server.url, server.protocol, model, traffic.outputs)
    try:
        for number, level in enumerate(levels, start=1):
            log.line(
                f"{name}: {level.label()} ({number}/{len(levels)}), {timing.warmup_s:g} s warm-up + {timing.duration_s:g} s"
            )
            outcome = await _measured_level(client, server, models, traffic, level, timing)
            if outcome.stopped is not None:
                raise ServerStopped(
                    f"the server at {server.url} stopped answering during {level.label()} of {name}: {outcome.stopped}."
                )
            done.append(outcome)
            log.line(f"{name}: {level.label()}: {_level_line(outcome)}")
            if on_level is not None:  # (server, outcome): progress for callers, and the tests' fault injection
                on_level(server, outcome)
    finally:
        await client.close()


async def _measured_level(
    client, server: Server, models, traffic: Traffic, level: Level, timing: Timing
) -> LevelOutcome:
    loop = asyncio.get_running_loop()
    snapshots = {}

    async def before() -> None:
        if server.metrics_url:
            snapshots["before"] = await loop.run_in_executor(None, _scrape_or_none, server.metrics_url)

    outcome = await run_level(client, traffic.texts, traffic.expected, level, timing, before, traffic.score_tolerance)
    if server.metrics_url and snapshots.get("before") is not None:
        after = await loop.run_in_executor(None, _scrape_or_none, server.metrics_url)
        if after is not None:
            outcome.server = server_metrics.window(snapshots["before"], after, models)
    return outcome


def _scrape_or_none(url: str):
    try:
        return server_metrics.scrape(url, timeout_s=5.0)
    except NluDeployError:
        return None


def _level_line(outcome: LevelOutcome) -> str:
    data = outcome.to_json()
    p99 = f"{data['p99_ms']:.1f} ms" if data["p99_ms"] is not None else "-"
    line = f"{data['requests_per_s']:.1f} req/s, p99 {p99}, {outcome.errors} errors, {outcome.timeouts} timeouts"
    if outcome.wrong_answers or outcome.crossed:
        line += f", {outcome.wrong_answers} answers differ from predict, {outcome.crossed} crossed"
    return line


# -- local servers -------------------------------------------------------------------------------


SERVER_LOGS = "server-logs"  # in the report: the logs of local servers that did not start


@dataclass(frozen=True)
class Workspace:
    """Where local servers run (removed at the end) and where a failed one's log is kept."""

    servers: Path
    kept_logs: Path


@contextmanager
def local_server(config: ServeBenchConfig, traffic: Traffic, options: TritonOptions, work: Workspace, name: str):
    """A local tritonserver on a repository written for `options`, stopped on leaving. A server
    that does not start keeps its log in the report, named after the configuration."""
    from nlu_deploy.serving.local_server import ServerNotReady, local_triton_server

    slug = name.replace(" ", "-")
    workdir = work.servers / slug
    workdir.mkdir(parents=True, exist_ok=True)
    repository = Path(tempfile.mkdtemp(prefix="repository-", dir=workdir))
    shutil.rmtree(repository)
    export_triton_repository(Path(config.onnx_dir), repository, options, onnx_file=traffic.served_file)
    try:
        with local_triton_server(repository, workdir / "server", binary=config.tritonserver) as running:
            url = running.grpc_url if config.protocol == "grpc" else running.http_url
            yield Server(
                url, config.protocol, running.metrics_url, f"local tritonserver ({options.describe()})", running.pid
            )
    except ServerNotReady as error:
        kept = work.kept_logs / f"{slug}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(error.log, kept)
        first = f" Its first error: {error.first_error}" if error.first_error else ""
        raise NluDeployError(
            f"tritonserver {error.why} ({name}).{first} Its whole log is kept in the report folder as "
            f"{SERVER_LOGS}/{kept.name}."
        ) from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def default_options(config: ServeBenchConfig) -> TritonOptions:
    """What `export --triton` writes, with the backend this server has, the layout asked for and
    the device the model runs on."""
    return _as_laid_out(
        TritonOptions(name=config.model, onnx_backend=config.onnx_backend, layout=config.layout, device=config.device)
    )


def _provider(config: ServeBenchConfig) -> str:
    """onnxruntime's provider for what the server runs on the device (--device gpu: CUDA)."""
    return "cuda" if config.device == "gpu" else "cpu"


def _as_laid_out(options: TritonOptions) -> TritonOptions:
    """A pipeline has no helper models and pads a batch to its longest text: those settings go."""
    return replace(options, helper_instances=1, length_buckets=()) if options.layout == "pipeline" else options


def candidate_options(config: ServeBenchConfig) -> list[TritonOptions]:
    """The search grid; the default configuration and the no-batching baseline always in it."""
    base = default_options(config)
    grid = []
    for layout, threads, batching, instances, helpers, buckets, preferred in itertools.product(
        config.layouts, config.threads, config.batching, config.instances, config.helper_instances, config.buckets,
        config.preferred_batch_sizes,
    ):  # fmt: skip
        if batching == "off" and preferred:
            continue  # preferred sizes belong to the batcher
        options = replace(
            base,
            layout=layout,
            threads=threads,
            dynamic_batching=batching != "off",
            queue_delay_us=base.queue_delay_us if batching == "off" else int(batching),
            instances=instances,
            helper_instances=helpers,
            length_buckets=tuple(buckets),
            preferred_batch_sizes=tuple(preferred),
        )
        grid.append(_as_laid_out(options))
    return list(dict.fromkeys([base, no_batching(config), *grid]))


def no_batching(config: ServeBenchConfig) -> TritonOptions:
    """The baseline batching is measured against: every request run on its own, at its own length."""
    return replace(default_options(config), dynamic_batching=False, length_buckets=())


# -- in process ----------------------------------------------------------------------------------


def in_process_throughput(config: ServeBenchConfig, traffic: Traffic, batch: int, buckets: tuple[int, ...]) -> float:
    """Sequences/s of the served ONNX file run by onnxruntime in this process, batches of `batch`
    texts of one length bucket (as the server's batcher forms them), the runtime's default threads."""
    from nlu_deploy.portable.light_tokenizer import LightTokenizer
    from nlu_deploy.runtime.runtime_variants import find_runtime_variant
    from nlu_deploy.runtime.sessions import create_session, graph_feed

    onnx_dir = Path(config.onnx_dir)
    other_runtime = find_runtime_variant(onnx_dir, traffic.served_file)
    if other_runtime is not None:
        session = other_runtime.session()
    else:
        session = create_session(onnx_dir / traffic.served_file, _provider(config))
    names = [i.name for i in session.get_inputs()]
    batches = _bucketed_batches(LightTokenizer(onnx_dir), traffic, batch, buckets, names, config.seed)
    batches = [graph_feed(session.get_inputs(), feed) for feed in batches]  # int32 where the graph says so
    for feed in batches[:3]:  # warm-up
        session.run(None, feed)
    done, started = 0, time.perf_counter()
    for feed in itertools.cycle(batches):
        session.run(None, feed)
        done += batch
        if time.perf_counter() - started >= IN_PROCESS_SECONDS:
            break
    return done / (time.perf_counter() - started)


def _bucketed_batches(tokenizer, traffic: Traffic, batch: int, buckets, names, seed: int) -> list[dict]:
    texts = traffic.texts
    encoded = tokenizer([t.split() for t in texts] if traffic.words else texts, is_split_into_words=traffic.words,
                        truncation=True, max_length=traffic.max_length)  # fmt: skip
    widths = [len(ids) for ids in encoded["input_ids"]]
    edges = sorted(b for b in buckets if b < traffic.max_length) + [traffic.max_length]
    bucket_of = [next(b for b in edges if b >= w) if buckets else w for w in widths]
    by_bucket: dict[int, list[int]] = {}
    for row, bucket in enumerate(bucket_of):
        by_bucket.setdefault(bucket, []).append(row)
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(32):  # batches drawn as traffic arrives: a random text, others of its bucket
        bucket = bucket_of[int(rng.integers(len(texts)))]
        rows = rng.choice(by_bucket[bucket], size=batch, replace=True)
        width = bucket if buckets else max(widths[r] for r in rows)
        feed = {}
        for name in names:
            padded = np.zeros((batch, width), dtype=np.int64)
            for position, row in enumerate(rows):
                values = encoded[name][row]
                padded[position, : len(values)] = values
            feed[name] = padded
        feeds.append(feed)
    return feeds


# -- the whole run -------------------------------------------------------------------------------


def serve_bench(
    config: ServeBenchConfig, log: ProgressLog, on_level=None, report_dir: Path | None = None
) -> ServeBenchReport:
    """Measure, search when asked, compare with in process; a fault or a stop signal ends the run
    with the report of what was done (report.stopped says why, report.signal which signal),
    never a traceback. Local servers work in `report_dir` (default: the output), and the log of
    one that did not start is kept there, in server-logs/."""
    from nlu_deploy.evaluation.benchmark import machine_facts

    traffic = read_traffic(config, log)
    report = ServeBenchReport(config, machine_facts(), {**traffic.facts, "served_file": traffic.served_file})
    timing = Timing(config.warmup_s, config.duration_s, config.timeout_s)
    levels = [Level("concurrency", c) for c in config.concurrency] + [Level("rate", r) for r in config.rates]
    try:
        try:
            if config.url is not None:
                _measure_remote(config, traffic, levels, timing, report, log, on_level)
            else:
                _measure_local(config, traffic, levels, timing, report, log, on_level, report_dir or config.output)
        except NluDeployError as error:
            report.stopped = str(error)
        _compare_in_process(config, traffic, report, log)
    except Stopped as stop:  # the servers are stopped by now (their context managers ran)
        report.stopped, report.signal = f"stopped by {stop.signal_name}.", stop.signal_name
        log.line(f"{stop.signal_name}: stopping; the levels measured so far are kept")
    return report


def _measure_remote(config, traffic, levels, timing, report, log, on_level) -> None:
    metrics_url = config.metrics_url or f"http://{config.url.rsplit(':', 1)[0]}:8002/metrics"
    server = Server(config.url, config.protocol, metrics_url, f"server at {config.url}")
    configuration = Configuration("as served", None)
    report.configurations.append(configuration)
    sweep(server, config.model, traffic, levels, timing, log, "as served", configuration.levels, on_level)


def _measure_local(config, traffic, levels, timing, report, log, on_level, report_dir: Path) -> None:
    work = Workspace(Path(report_dir) / ".servers", Path(report_dir) / SERVER_LOGS)
    try:
        swept = [Configuration("default", default_options(config))]
        if config.p99_ms is not None:
            swept.append(Configuration("no batching", no_batching(config)))
        for configuration in swept:
            _sweep_local(config, traffic, configuration, levels, timing, report, log, work, on_level)
        if config.p99_ms is not None:
            chosen = _search(config, traffic, timing, report, log, work)
            if chosen.options not in [c.options for c in swept]:
                _sweep_local(config, traffic, Configuration("chosen", chosen.options), levels, timing, report, log,
                             work, on_level)  # fmt: skip
    finally:
        shutil.rmtree(work.servers, ignore_errors=True)


def _sweep_local(config, traffic, configuration, levels, timing, report, log, work, on_level) -> None:
    report.configurations.append(configuration)
    with local_server(config, traffic, configuration.options, work, configuration.name) as server:
        log.line(f"{configuration.name}: {server.description}")
        sweep(server, config.model, traffic, levels, timing, log, configuration.name, configuration.levels, on_level)


# The first pass measures every candidate once; the best few and the default are then measured
# again, interleaved (A B C, A B C), and judged on their medians. One 10 s window on a shared
# 2-core VM can be 25% off: on 2026-12-01 a first-pass winner at 797 req/s swept at 486.
FINALISTS = 3


def _search(config, traffic, timing, report, log, work) -> Configuration:
    """Each candidate at the budget's level; the finalists again; the fastest within the budget wins."""
    kind, value = config.budget_level
    level = Level(kind, value)
    candidates = candidate_options(config)
    for number, options in enumerate(candidates, start=1):
        candidate = Configuration(f"candidate {number}", options)
        report.candidates.append(candidate)
        measured = _already_measured(report, options, level)
        if measured is not None:
            candidate.levels = [measured]
            continue
        _measure_candidate(config, traffic, candidate, level, timing, log, work, f"{number}/{len(candidates)}")
    allowed = traffic.allowed_disagreement
    finalists = _finalists(report.candidates, config.p99_ms, allowed, default_options(config))
    for repeat in range(1, config.search_repeats + 1):
        for index in finalists:
            _measure_candidate(config, traffic, report.candidates[index], level, timing, log, work,
                               f"{index + 1}, repeat {repeat}/{config.search_repeats}")  # fmt: skip
    report.choice = choose(report.candidates, config.p99_ms, level, default_options(config), allowed, finalists)
    log.line(report.choice["why"])
    if report.choice["chosen"] is None:
        raise NluDeployError(report.choice["why"])
    chosen = report.candidates[report.choice["chosen"]]
    if config.write_repository is not None:
        export_triton_repository(Path(config.onnx_dir), Path(config.write_repository), chosen.options,
                                 onnx_file=traffic.served_file, overwrite=config.overwrite)  # fmt: skip
        report.choice["repository"] = str(config.write_repository)
    return chosen


def _measure_candidate(config, traffic, candidate: Configuration, level, timing, log, work, label: str) -> None:
    """One more measurement of a candidate on a fresh server; one that fails does not end the search."""
    if candidate.error is not None:
        return
    try:
        with local_server(config, traffic, candidate.options, work, candidate.name) as server:
            sweep(server, config.model, traffic, [level], timing, log, f"candidate {label} [{candidate.describe()}]",
                  candidate.levels)  # fmt: skip
    except NluDeployError as error:
        candidate.error = _short(error)
        log.line(f"candidate {label}: not measured: {candidate.error}")


def _already_measured(report: ServeBenchReport, options: TritonOptions, level: Level) -> LevelOutcome | None:
    for configuration in report.configurations:
        if configuration.options == options:
            return next((o for o in configuration.levels if o.level == level), None)
    return None


def clean(level: dict, allowed_disagreement: float) -> bool:
    """No errors, timeouts or skipped arrivals, and answers that agree with predict."""
    failures = level["errors"] or level["timeouts"] or level["skipped"]
    return not failures and answers_agree(level, allowed_disagreement)


@dataclass(frozen=True)
class Summary:
    """A candidate's measurements at the budget's level: medians, and whether every run was clean."""

    runs: int
    requests_per_s: float
    p99_ms: float | None
    clean: bool

    def passes(self, budget_ms: float) -> bool:
        return self.clean and self.p99_ms is not None and self.p99_ms <= budget_ms


def summarize(candidate: Configuration, allowed: float) -> Summary | None:
    if not candidate.levels or candidate.error is not None:
        return None
    runs = [outcome.to_json() for outcome in candidate.levels]
    p99s = [run["p99_ms"] for run in runs if run["p99_ms"] is not None]
    return Summary(
        len(runs),
        float(np.median([run["requests_per_s"] for run in runs])),
        float(np.median(p99s)) if p99s else None,
        all(clean(run, allowed) for run in runs),
    )


def _finalists(candidates: list[Configuration], budget_ms: float, allowed: float, default: TritonOptions) -> list[int]:
    """The FINALISTS fastest candidates within budget after one run each, and the default."""
    summaries = [(i, summarize(c, allowed)) for i, c in enumerate(candidates)]
    passing = sorted(
        (i for i, s in summaries if s and s.passes(budget_ms)), key=lambda i: -summaries[i][1].requests_per_s
    )
    default_index = next((i for i, c in enumerate(candidates) if c.options == default and c.levels), None)
    return list(dict.fromkeys([*passing[:FINALISTS], *([] if default_index is None else [default_index])]))


def choose(
    candidates: list[Configuration],
    budget_ms: float,
    level: Level,
    default: TritonOptions,
    allowed: float = 0.0,
    finalists: list[int] | None = None,
) -> dict:
    """The finalist with the most requests/s (median) among those within the budget (every run
    clean, median p99 within it), and a sentence saying why it won, or which came closest."""
    summaries = {i: summarize(c, allowed) for i, c in enumerate(candidates)}
    measured = {i: s for i, s in summaries.items() if s is not None}
    eligible = [i for i in (finalists if finalists is not None else measured) if i in measured]
    passing = [i for i in eligible if measured[i].passes(budget_ms)]
    where = f"p99 <= {budget_ms:g} ms at {level.label()}"
    choice = {"chosen": None, "budget_ms": budget_ms, "level": level.label(), "finalists": eligible,
              "summaries": {str(i): asdict(s) for i, s in measured.items()}}  # fmt: skip
    if not passing:
        if not measured:
            return {**choice, "why": "no configuration could be measured."}
        closest = min(measured, key=lambda i: measured[i].p99_ms if measured[i].p99_ms is not None else float("inf"))
        s = measured[closest]
        why = (f"no configuration met {where}; the closest was {candidates[closest].describe()} with p99 "
               f"{_ms_text(s.p99_ms)} at {s.requests_per_s:.1f} req/s.")  # fmt: skip
        return {**choice, "closest": closest, "why": why}
    index = max(passing, key=lambda i: measured[i].requests_per_s)
    best = measured[index]
    why = (f"{candidates[index].describe()} won: {best.requests_per_s:.1f} req/s at p99 {best.p99_ms:.1f} ms "
           f"(medians of {best.runs} runs), the most of the {len(passing)} finalists of {len(measured)} "
           f"configurations that met {where} with every answer right.")  # fmt: skip
    default_index = next((i for i in measured if candidates[i].options == default), None)
    if default_index == index:
        why += " That is the configuration `export --triton` writes by default."
    elif default_index is not None:
        d = measured[default_index]
        verdict = "within" if d.passes(budget_ms) else "outside"
        why += (f" The default ({candidates[default_index].describe()}): {d.requests_per_s:.1f} req/s at p99 "
                f"{_ms_text(d.p99_ms)} over {d.runs} runs, {verdict} the budget.")  # fmt: skip
    return {**choice, "chosen": index, "why": why, "settings": candidates[index].describe()}


def _ms_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _compare_in_process(config, traffic, report: ServeBenchReport, log: ProgressLog) -> None:
    """The ONNX file in process at each batch size the server's model executed (rounded)."""
    wanted = set()
    for configuration in report.configurations:
        buckets = configuration.options.length_buckets if configuration.options else TritonOptions().length_buckets
        for outcome in configuration.levels:
            batch = _executed_batch(outcome, config.model)
            if batch is not None:
                wanted.add((batch, tuple(buckets)))
    for batch, buckets in sorted(wanted):
        key = in_process_key(batch, buckets)
        log.line(f"in process: batch {batch}, buckets {key.split('/')[1]}")
        report.in_process[key] = in_process_throughput(config, traffic, batch, buckets)


def _executed_batch(outcome: LevelOutcome, model: str) -> int | None:
    """The batch the model that runs the file executed: the ensemble's {model}_model, or the
    pipeline model itself."""
    window = runner_window(outcome.to_json(), model)
    batch = window.get("average_batch")
    return max(1, round(batch)) if batch else None


# -- the command's output ------------------------------------------------------------------------


@dataclass
class Finished:
    """What the command prints: the report, the files written, and where they are."""

    report: ServeBenchReport
    files: list[Path]
    folder: Path


def serve_bench_report(config: ServeBenchConfig, terminal: bool = False) -> Finished:
    """serve-bench from start to report folder. The run works in a staging folder beside the
    output (one writer at a time), which becomes the output only once the report is written: a
    bad --data or a crash leaves an earlier report as it was, and a run stopped early replaces
    it only with a complete one (an incomplete report goes beside it, to OUTPUT.incomplete)."""
    from nlu_deploy.serving.load_report import write_report

    if config.write_repository is not None:
        artifacts.check_output(config.write_repository, config.overwrite)
    with artifacts.staged_report(config.output, config.overwrite) as staged:
        log = ProgressLog(staged.path / f"{REPORT_NAME}.log", terminal=terminal, every_seconds=0)
        log.line(f"serve-bench: working in {staged.path}; the report goes to {config.output} when the run ends")
        report = serve_bench(config, log, report_dir=staged.path)
        data = report.to_json()
        folder = staged.finish(report.complete)
        files = write_report(data, staged.path, REPORT_NAME)
    return Finished(report, [folder / f.name for f in files], folder)


def verdict(report: dict) -> str | None:
    """One sentence when the run must exit non-zero: it stopped, or answers were wrong."""
    levels = [lv for c in report["configurations"] + report["candidates"] for lv in c["levels"]]
    wrong = sum(lv["wrong_answers"] for lv in levels)
    crossed = sum(lv["crossed"] for lv in levels)
    checked = sum(lv["checked"] for lv in levels)
    if not report["complete"]:
        return f"{report['stopped']} The report keeps what was measured before, marked incomplete."
    allowed = report["traffic"].get("allowed_disagreement", 0.0)
    if not all(answers_agree(lv, allowed) for lv in levels):
        example = next((e for lv in levels for e in lv["wrong_examples"]), None)
        detail = f" (e.g. {example['text']!r}: {example['difference']})" if example else ""
        return (f"{wrong} of {checked} served answers differ from predict --json and {crossed} carried another "
                f"request's id{detail}: the served model does not answer as the exported one.")  # fmt: skip
    return None
