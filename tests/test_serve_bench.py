"""serve-bench against a real tritonserver (nvidia-pytriton's, on localhost) serving the tiny
models: a sweep's report and the server metrics in it, the answer check, the configuration
search, and each fault the command must name in one sentence. Levels are short (0.3 s warm-up,
1.5 s measured) and every request has a timeout, so the module takes well under two minutes."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from nlu_deploy.cli import main
from nlu_deploy.config import ServeBenchConfig
from nlu_deploy.progress import ProgressLog
from nlu_deploy.serving.load_bench import serve_bench, verdict
from nlu_deploy.serving.local_server import local_triton_server
from nlu_deploy.serving.repository import TritonOptions, export_triton_repository

pytest.importorskip("tritonclient.http.aio", reason="tritonclient[http] is a test dependency")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

SHORT = ["--warmup", "0.3", "--duration", "1.5", "--timeout", "5"]


def serve_bench_cli(onnx_dir, data, output, *arguments):
    command = ["serve-bench", str(onnx_dir), "--data", str(data), "--output", str(output), "--variant", "model.onnx"]
    return CliRunner().invoke(main, [*command, *SHORT, *arguments])


@pytest.fixture(scope="module")
def running_server(tmp_path_factory, tiny_onnx):
    """A server at a URL, as a user's would be: the intents ensemble `nlu`, and `broken`, whose
    post-processor has its labels rotated (every answer names the wrong intent)."""
    root = tmp_path_factory.mktemp("served")
    repository = root / "repository"
    repository.mkdir()
    for name in ("nlu", "broken"):
        options = TritonOptions(name=name, onnx_backend="python", layout="ensemble")  # its post-processor is broken
        export_triton_repository(tiny_onnx, root / name, options, "model.onnx")
        for model in (root / name).iterdir():
            shutil.move(str(model), repository / model.name)
    labels_file = repository / "broken_postprocess" / "1" / "labels.json"
    labels = json.loads(labels_file.read_text())
    names = [labels[str(i)] for i in range(len(labels))]
    labels_file.write_text(json.dumps({str(i): names[(i + 1) % len(names)] for i in range(len(names))}))
    with local_triton_server(repository, root / "server") as server:
        yield server


@pytest.mark.parametrize(
    "model_fixture,data_fixture,layout",
    # the joint model in both layouts: its ensemble has the most steps (the text and WORD_IDS go to
    # the post-processor too); the intent model's ensemble is served in test_triton_server.py
    [("tiny_joint_onnx", "tiny_joint_dev", "ensemble"), ("tiny_joint_onnx", "tiny_joint_dev", "pipeline")],
)  # fmt: skip
def test_a_two_level_sweep_writes_the_report_with_the_server_metrics(
    request, tmp_path, model_fixture, data_fixture, layout
):
    onnx_dir, data = request.getfixturevalue(model_fixture), request.getfixturevalue(data_fixture)
    result = serve_bench_cli(onnx_dir, data, tmp_path / "report", "--concurrency", "1,4", "--rates", "20",
                             "--layout", layout)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "serve-bench.json").read_text())
    assert report["complete"] and (tmp_path / "report" / "serve-bench.png").stat().st_size > 0
    assert "concurrency 4" in (tmp_path / "report" / "serve-bench.md").read_text()
    assert "in process" in (tmp_path / "report" / "serve-bench.log").read_text()
    [default] = report["configurations"]
    assert [level["level"]["label"] for level in default["levels"]] == ["concurrency 1", "concurrency 4", "20 req/s"]
    for level in default["levels"]:
        assert level["answered"] > 0 and level["errors"] == level["timeouts"] == 0
        assert level["wrong_answers"] == level["crossed"] == 0 and level["checked"] >= level["answered"]
        assert 0 < level["p50_ms"] <= level["p99_ms"] <= level["max_ms"]
        server = level["server"]
        if layout == "pipeline":  # one model tokenizes, runs the file and decodes
            assert set(server) == {"nlu"}
        else:
            assert set(server) == {"nlu", "nlu_tokenizer", "nlu_model", "nlu_postprocess"}
        model = server["nlu_model" if layout == "ensemble" else "nlu"]
        # the server's own count of what the client sent in the window (the window's edges blur by
        # the requests in flight when it opened and closed)
        assert abs(model["requests"] - level["sent"]) <= 8
        assert model["average_batch"] >= 1 and model["queue_ms"] >= 0 and model["compute_ms"] > 0
    assert report["in_process_sequences_per_s"] and all(v > 0 for v in report["in_process_sequences_per_s"].values())
    open_loop = default["levels"][2]
    assert 10 < open_loop["requests_per_s"] < 40  # Poisson arrivals at 20/s over 1.5 s


def test_the_answer_check_catches_a_broken_postprocessor(tmp_path, running_server, tiny_onnx, tiny_dev_csv):
    result = serve_bench_cli(tiny_onnx, tiny_dev_csv, tmp_path / "r", "--url", running_server.http_url,
                             "--model", "broken", "--metrics-url", running_server.metrics_url, "--concurrency", "2")  # fmt: skip
    assert result.exit_code == 1
    assert "served answers differ from predict --json" in result.output
    report = json.loads((tmp_path / "r" / "serve-bench.json").read_text())
    [level] = report["configurations"][0]["levels"]
    assert level["wrong_answers"] == level["checked"] > 0 and level["crossed"] == 0
    assert "broken_postprocess" in level["server"]  # the ensemble's steps, read from the server


def test_a_server_at_a_url_is_measured_over_grpc(tmp_path, running_server, tiny_onnx, tiny_dev_csv):
    result = serve_bench_cli(tiny_onnx, tiny_dev_csv, tmp_path / "r", "--url", running_server.grpc_url,
                             "--protocol", "grpc", "--metrics-url", running_server.metrics_url, "--concurrency", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    [level] = json.loads((tmp_path / "r" / "serve-bench.json").read_text())["configurations"][0]["levels"]
    assert level["answered"] > 0 and level["wrong_answers"] == 0 and level["server"]["nlu_model"]["requests"] > 0


def test_the_search_picks_between_two_candidates_and_writes_the_winner(tmp_path, tiny_onnx, tiny_dev_csv):
    # the grid is the default alone, so the candidates are the default and the no-batching baseline;
    # both are finalists and run once more, and the medians decide
    result = serve_bench_cli(tiny_onnx, tiny_dev_csv, tmp_path / "r", "--concurrency", "4", "--p99-ms", "2000",
                             "--batching", "2000", "--instances", "1", "--buckets", "16,32,64,128",
                             "--search-repeats", "1", "--write-repository", str(tmp_path / "repo"),
                             "--layout", "ensemble", "--layouts", "ensemble")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "serve-bench.json").read_text())
    candidates = report["candidates"]
    assert [c["settings"].split(",")[0] for c in candidates] == ["batching 2000 us", "no batching"]
    assert [len(c["levels"]) for c in candidates] == [2, 2]  # the sweep's run, then the repeat
    summaries = report["choice"]["summaries"]
    medians = [summaries[str(i)]["requests_per_s"] for i in range(2)]
    assert medians[0] == pytest.approx(sum(lv["requests_per_s"] for lv in candidates[0]["levels"]) / 2)
    chosen = report["choice"]["chosen"]
    assert medians[chosen] == max(medians) and "won" in report["choice"]["why"]
    config = text_format.Parse(
        (tmp_path / "repo" / "nlu_model" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.HasField("dynamic_batching") == (chosen == 0)
    assert [c["name"] for c in report["configurations"]] == ["default", "no batching"]  # both swept


def test_a_budget_nothing_meets_names_the_closest(tmp_path, tiny_onnx, tiny_dev_csv):
    result = serve_bench_cli(tiny_onnx, tiny_dev_csv, tmp_path / "r", "--concurrency", "2", "--p99-ms", "0.001",
                             "--batching", "2000", "--instances", "1", "--buckets", "16,32,64,128",
                             "--search-repeats", "0")  # fmt: skip
    assert result.exit_code == 1
    assert "no configuration met p99 <= 0.001 ms at concurrency 2; the closest was" in result.output
    assert json.loads((tmp_path / "r" / "serve-bench.json").read_text())["complete"] is False


def test_a_url_where_nothing_listens(tmp_path, tiny_onnx, tiny_dev_csv):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = serve_bench_cli(tiny_onnx, tiny_dev_csv, tmp_path / "r", "--url", f"127.0.0.1:{port}")
    assert result.exit_code == 1 and f"nothing answers at 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


def test_a_model_the_server_does_not_have(tmp_path, running_server, tiny_onnx, tiny_dev_csv):
    result = serve_bench_cli(
        tiny_onnx, tiny_dev_csv, tmp_path / "r", "--url", running_server.http_url, "--model", "nope"
    )
    assert result.exit_code == 1
    assert "has no ready model 'nope'; it has: broken, broken_model" in result.output


def test_a_repository_that_does_not_load_shows_the_server_error(tmp_path, tiny_onnx, tiny_dev_csv):
    # nvidia-pytriton's server has no onnxruntime backend: a repository that asks for it fails to load
    result = serve_bench_cli(tiny_onnx, tiny_dev_csv, tmp_path / "r", "--triton-onnx-backend", "onnxruntime")
    assert result.exit_code == 1
    assert "tritonserver exited" in result.output and "Its first error:" in result.output
    assert "onnxruntime" in result.output.split("Its first error:")[1].splitlines()[0]
    # the server's whole log outlives the server's work folder: it is kept in the report
    assert "kept in the report folder as server-logs/default.log" in result.output
    assert "failed to load" in (tmp_path / "r" / "server-logs" / "default.log").read_text()
    assert not (tmp_path / "r" / ".servers").exists()


def _config(tmp_path, onnx_dir, data, **changes):
    fields = dict(onnx_dir=onnx_dir, data=data, output=tmp_path, variant="model.onnx", concurrency=(1, 2, 4),
                  warmup_s=0.3, duration_s=1.5, timeout_s=0.5)  # fmt: skip
    return ServeBenchConfig(**{**fields, **changes})


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_a_server_that_dies_or_hangs_mid_run_ends_the_run_with_the_levels_done(
    tmp_path, tiny_onnx, tiny_dev_csv, fault
):
    stopped = []

    def after_first_level(server, outcome):
        if not stopped:
            stopped.append(server.pid)
            os.kill(server.pid, signal.SIGKILL if fault == "dies" else signal.SIGSTOP)

    log = ProgressLog(tmp_path / "log", terminal=False)
    try:
        report = serve_bench(_config(tmp_path, tiny_onnx, tiny_dev_csv), log, on_level=after_first_level)
    finally:
        if fault == "hangs" and stopped:
            with contextlib.suppress(ProcessLookupError):  # stopping the server also resumed it
                os.kill(stopped[0], signal.SIGCONT)
    assert "stopped answering during concurrency 2 of default" in report.stopped
    assert ("no answer within 0.5 s" if fault == "hangs" else "requests in a row failed") in report.stopped
    data = report.to_json()
    assert data["complete"] is False
    assert [lv["level"]["label"] for lv in data["configurations"][0]["levels"]] == ["concurrency 1"]
    assert "marked incomplete" in verdict(data)


# -- stopping: SIGTERM and Ctrl-C are ordinary events, SIGKILL leaves no server behind ------------


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line names `text` (a server started for this test names its folder)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if text.encode() in handle.read():
                        found.append(int(entry))
    return found


def _wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _start_serve_bench(tmp_path, onnx_dir, data, output, *extra) -> subprocess.Popen:
    """serve-bench in a process of its own, with levels long enough to be stopped in the second one."""
    command = [sys.executable, "-m", "nlu_deploy", "serve-bench", str(onnx_dir), "--data", str(data), "--output",
               str(output), "--variant", "model.onnx", "--concurrency", "1,2,4", "--warmup", "0.3", "--duration",
               "3", "--timeout", "5", *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def _first_level_done(output) -> bool:
    logs = list(output.parent.glob(f".{output.name}.partial-*/serve-bench.log"))
    return any("concurrency 1: " in log.read_text() for log in logs if log.exists())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_keeps_the_levels_measured_and_leaves_nothing_running(
    tmp_path, tiny_onnx, tiny_dev_csv, stop_signal
):
    output = tmp_path / "report"
    process = _start_serve_bench(tmp_path, tiny_onnx, tiny_dev_csv, output)
    try:
        assert _wait_until(lambda: _first_level_done(output), 120), process.stderr.read() if process.poll() else ""
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + stop_signal
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: nlu-deploy serve-bench was stopped by {signal.Signals(stop_signal).name}")
    assert f"are in {output}, marked incomplete" in last and "Traceback" not in stderr
    report = json.loads((output / "serve-bench.json").read_text())
    assert report["complete"] is False and report["stopped"].startswith("stopped by SIG")
    assert report["configurations"][0]["levels"][0]["level"]["label"] == "concurrency 1"
    assert (output / "serve-bench.md").read_text().count("INCOMPLETE") >= 1
    assert not _processes_mentioning(str(tmp_path)), "a server or stub of the stopped run is still running"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging folder, no lock
    assert not (output / ".servers").exists()


def test_a_killed_run_takes_its_server_with_it(tmp_path, tiny_onnx, tiny_dev_csv):
    output = tmp_path / "report"
    process = _start_serve_bench(tmp_path, tiny_onnx, tiny_dev_csv, output)
    try:
        assert _wait_until(lambda: _first_level_done(output), 120)
        assert _processes_mentioning(str(tmp_path))  # the server and its stubs, named by their folder
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    assert _wait_until(lambda: not _processes_mentioning(str(tmp_path)), 30), "the server outlived its SIGKILLed run"
    # the next run removes the killed run's staging folder and says so
    rerun = serve_bench_cli(tiny_onnx, tiny_dev_csv, output, "--concurrency", "1", "--duration", "0.5")
    assert rerun.exit_code == 0, rerun.output
    assert "left behind by an earlier run of this stage that was killed" in rerun.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_overwrite_keeps_the_earlier_report_until_a_new_one_exists(tmp_path, tiny_onnx, tiny_dev_csv):
    output = tmp_path / "report"
    output.mkdir()
    (output / "serve-bench.json").write_text('{"complete": true}')  # an earlier run's report
    bad = serve_bench_cli(tiny_onnx, tmp_path / "nope.csv", output, "--overwrite")
    assert bad.exit_code == 1 and "nope.csv is not a file" in bad.output
    assert (output / "serve-bench.json").read_text() == '{"complete": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging folder, no lock file
    # a second run on an output another run is writing is refused at once, naming the first
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from nlu_deploy.artifacts import output_lock\n"
                               f"with output_lock({str(output)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        second = serve_bench_cli(tiny_onnx, tiny_dev_csv, output, "--overwrite")
    finally:
        holder.kill()
    assert second.exit_code == 1 and "is being written by another run (process" in second.output
    assert (output / "serve-bench.json").read_text() == '{"complete": true}'


def test_a_stopped_run_does_not_replace_a_complete_report(tmp_path, tiny_onnx, tiny_dev_csv):
    output = tmp_path / "report"
    output.mkdir()
    (output / "serve-bench.json").write_text('{"complete": true}')
    process = _start_serve_bench(tmp_path, tiny_onnx, tiny_dev_csv, output, "--overwrite")
    try:
        assert _wait_until(lambda: _first_level_done(output), 120)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143 and f"are in {output}.incomplete, marked incomplete" in stderr
    assert (output / "serve-bench.json").read_text() == '{"complete": true}'
    assert json.loads((tmp_path / "report.incomplete" / "serve-bench.json").read_text())["complete"] is False


def test_a_near_tie_is_told_apart_from_a_wrong_label():
    from nlu_deploy.serving.load_generator import BATCH_DEPENDENT_SCORE_TOLERANCE as tolerance
    from nlu_deploy.serving.load_generator import near_tie

    want = {"label": "PlayMusic", "score": 0.41}
    assert near_tie({"label": "AddToPlaylist", "score": 0.43}, want, tolerance)  # two leading labels, reordered
    assert not near_tie({"label": "AddToPlaylist", "score": 0.93}, want, tolerance)  # a confident other answer
    assert not near_tie({"label": "PlayMusic", "score": 0.41}, want, tolerance)  # the same answer is no tie
    joint = {**want, "entities": [{"type": "artist", "text": "abba", "start": 5, "end": 9, "score": 0.9}]}
    moved = {"label": "AddToPlaylist", "score": 0.43, "entities": []}
    assert not near_tie(moved, joint, tolerance)  # its entities must still agree
