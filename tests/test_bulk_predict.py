"""predict --file IN --output OUT: answers in input order equal `predict --json`, in JSONL and
Parquet, for every task; a real SIGTERM mid-run and a rerun give the uninterrupted output; bad
rows are listed, not fatal; a local Ray instance writes the local run's bytes."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from nlu_deploy.bulk.row_sources import open_source
from nlu_deploy.cli import main
from nlu_deploy.portable.rejection import CONFIG_KEY

TEXTS = [
    "wake me up at 7 am",
    "play some jazz in the kitchen",
    "what is the weather like in paris tomorrow",
    "book a table for two at an italian place tonight near the station",
    "add milk",
    "set an alarm for noon",
    "play the latest album by the band from my playlist on the living room speaker",
    "will it rain",
]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def predict_json(model_dir: Path, texts: list[str], *options) -> list[dict]:
    result = invoke("predict", model_dir, "--json", *options, *texts)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rejecting_copy(tmp_path_factory, tiny_onnx):
    """The tiny intent model with an out-of-scope rule in its config.json whose threshold is the
    median confidence of TEXTS: about half of them come back as "oos"."""
    from nlu_deploy.predict import load_predictor

    folder = tmp_path_factory.mktemp("oos-bulk") / "onnx"
    shutil.copytree(tiny_onnx, folder)
    predictor, _ = load_predictor(folder)
    scores = sorted(score for _, score in predictor.predict(TEXTS * 3))
    config = json.loads((folder / "config.json").read_text())
    config[CONFIG_KEY] = {"label": "oos", "score": "msp", "threshold": scores[len(scores) // 2], "oos_class": None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def assert_same_answers(got: list[dict], expected: list[dict], tolerance: float) -> None:
    """The same text, label and entity spans in the same order; scores within `tolerance`."""
    assert len(got) == len(expected)
    for answer, reference in zip(got, expected):
        assert answer.keys() == reference.keys()
        assert (answer["text"], answer.get("label")) == (reference["text"], reference.get("label"))
        assert answer.get("score", 0) == pytest.approx(reference.get("score", 0), abs=tolerance)
        spans = [
            [(e["type"], e["text"], e["start"], e["end"]) for e in a.get("entities", [])] for a in (answer, reference)
        ]
        assert spans[0] == spans[1]


@pytest.mark.parametrize("model", ["tiny_onnx", "tiny_tagger_onnx", "tiny_joint_onnx", "rejecting_copy"])
def test_answers_in_input_order_equal_predict_json(request, tmp_path, model):
    """Chunks of 5 rows batch the texts otherwise than one call over all of them: the fp32 file
    answers the same up to float noise. (The int8 file's dynamic quantization scales each batch's
    activations by that batch's range, so its scores move with the batch's other rows; one chunk
    holding every row batches as `predict` does and gives the very same bytes.)"""
    model_dir = request.getfixturevalue(model)
    texts = TEXTS * 3
    source = write_lines(tmp_path / "in.txt", texts)
    fp32 = ["--variant", "fp32"]
    result = invoke(
        "predict", model_dir, "--file", source, "--output", tmp_path / "out.jsonl", "--chunk-rows", 5, *fp32
    )
    assert result.exit_code == 0, result.output
    expected = predict_json(model_dir, texts, *fp32)
    assert_same_answers(lines_of(tmp_path / "out.jsonl"), expected, 1e-5)
    assert "answered 24 of 24 rows" in result.output
    whole = invoke("predict", model_dir, "--file", source, "--output", tmp_path / "int8.jsonl")
    assert whole.exit_code == 0, whole.output
    assert lines_of(tmp_path / "int8.jsonl") == predict_json(model_dir, texts)
    assert not (tmp_path / "out.jsonl.odd-rows.jsonl").exists()
    assert not list(tmp_path.glob(".out.jsonl*"))  # no chunks folder, no lock left
    if model == "rejecting_copy":
        labels = {answer["label"] for answer in expected}
        assert "oos" in labels and len(labels) > 1
    if model == "tiny_tagger_onnx":
        assert any(answer["entities"] for answer in expected)


def test_bad_rows_are_listed_with_their_line_and_reason_and_the_rest_answered(tmp_path, tiny_onnx):
    long_text = " ".join(["play some jazz"] * 40)  # far past the model's max length
    source = tmp_path / "messy.txt"
    source.write_bytes(b"wake me up at 7 am\n\n   \nplay \xff\xfe jazz\n" + long_text.encode() + b"\nadd milk\n")
    result = invoke("predict", tiny_onnx, "--file", source, "--output", tmp_path / "out.jsonl", "--chunk-rows", 2)
    assert result.exit_code == 0, result.output
    answers = lines_of(tmp_path / "out.jsonl")
    assert [a["text"] for a in answers] == ["wake me up at 7 am", long_text, "add milk"]
    assert_same_answers(answers, predict_json(tiny_onnx, ["wake me up at 7 am", long_text, "add milk"]), 0.02)
    odd = lines_of(tmp_path / "out.jsonl.odd-rows.jsonl")
    assert [(row["line"], row["answered"]) for row in odd] == [(2, False), (3, False), (4, False), (5, True)]
    assert [row["reason"] for row in odd[:3]] == ["empty text", "empty text", "not UTF-8"]
    assert odd[3]["reason"].startswith("longer than the model's")
    assert "3 row(s) could not be read" in result.output and "1 text(s) were longer" in result.output


def test_jsonl_and_csv_rows_that_cannot_be_read_are_listed(tmp_path, tiny_onnx):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        '{"id": 1, "text": "wake me up"}\n{"id": 2, "text": \n[1, 2]\n{"id": 4}\n{"id": 5, "text": 7}\n'
        '{"text": "no id"}\n{"id": 7, "text": "add milk"}\n',
        encoding="utf-8",
    )
    result = invoke(
        "predict", tiny_onnx, "--file", jsonl, "--output", tmp_path / "j.jsonl", "--id-column", "id", "--chunk-rows", 3
    )
    assert result.exit_code == 0, result.output
    assert [(a["id"], a["text"]) for a in lines_of(tmp_path / "j.jsonl")] == [(1, "wake me up"), (7, "add milk")]
    reasons = {row["line"]: row["reason"] for row in lines_of(tmp_path / "j.jsonl.odd-rows.jsonl")}
    assert reasons == {2: "not valid JSON (Expecting value)", 3: "not a JSON object", 4: "no 'text' field",
                       5: "text is not a string", 6: "no 'id' field"}  # fmt: skip

    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,text\na,"wake me\nup at 7"\nb,too,many\nc,add milk\n', encoding="utf-8")
    result = invoke("predict", tiny_onnx, "--file", csv_file, "--output", tmp_path / "c.jsonl", "--id-column", "id")
    assert result.exit_code == 0, result.output
    assert [(a["id"], a["text"]) for a in lines_of(tmp_path / "c.jsonl")] == [
        ("a", "wake me\nup at 7"),
        ("c", "add milk"),
    ]
    (odd,) = lines_of(tmp_path / "c.jsonl.odd-rows.jsonl")
    assert odd == {"line": 4, "id": "b", "reason": "expected 2 fields like the header, found 3", "answered": False}


def test_a_chunk_read_again_on_its_own_gives_the_rows_the_stream_gave(tmp_path):
    """What a rerun and a Ray actor rely on: chunks end at record boundaries (a quoted CSV field
    may hold newlines) and know their first line."""
    rows = [f'{i},"text {i}' + ('\nsecond line"' if i % 3 == 0 else '"') for i in range(40)]
    path = tmp_path / "in.csv"
    path.write_text("id,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    source = open_source(str(path), "text", "id")
    streamed = list(source.chunks(7))
    assert [len(c.texts) for c in streamed] == [7, 7, 7, 7, 7, 5]
    for chunk_rows in streamed:
        again = source.read(chunk_rows.chunk)
        assert (again.lines, again.ids, again.texts) == (chunk_rows.lines, chunk_rows.ids, chunk_rows.texts)
    resumed = list(source.chunks(7, after=streamed[2].chunk))
    assert [c.lines for c in resumed] == [c.lines for c in streamed[3:]]
    assert streamed[1].lines[0] == 2 + 7 + 3  # the header, seven rows, three of them on two lines


def test_parquet_in_and_out_carries_the_id_column(tmp_path, tiny_joint_onnx):
    texts = TEXTS * 2
    ids = list(range(100, 100 + len(texts) + 1))
    table = pa.table({"id": pa.array(ids, pa.int64()), "text": texts + [None], "other": ["x"] * len(ids)})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=5)
    result = invoke(
        "predict", tiny_joint_onnx, "--file", tmp_path / "in.parquet", "--output", tmp_path / "out.parquet",
        "--id-column", "id", "--chunk-rows", 4, "--variant", "fp32",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 1  # chunks gathered
    written = pq.read_table(tmp_path / "out.parquet")
    assert written.schema.field("id").type == pa.int64()
    assert written.column_names == ["id", "text", "label", "score", "entities"]
    rows = written.to_pylist()
    assert [row["id"] for row in rows] == ids[:-1]
    for row, expected in zip(rows, predict_json(tiny_joint_onnx, texts, "--variant", "fp32")):
        assert row["label"] == expected["label"] and row["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert [{k: e[k] for k in ("type", "text", "start", "end")} for e in row["entities"]] == [
            {k: e[k] for k in ("type", "text", "start", "end")} for e in expected["entities"]
        ]
    (odd,) = lines_of(tmp_path / "out.parquet.odd-rows.jsonl")
    assert odd == {"line": len(ids), "id": ids[-1], "reason": "no text", "answered": False}


def test_an_existing_output_or_another_commands_chunks_are_refused_in_one_sentence(tmp_path, tiny_onnx):
    source = write_lines(tmp_path / "in.txt", TEXTS)
    output = tmp_path / "out.jsonl"
    assert invoke("predict", tiny_onnx, "--file", source, "--output", output).exit_code == 0
    result = invoke("predict", tiny_onnx, "--file", source, "--output", output)
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.output
    assert "Traceback" not in result.output
    (tmp_path / ".other.jsonl.chunks").mkdir()
    (tmp_path / ".other.jsonl.chunks" / "state.json").write_text('{"input": "elsewhere"}')
    result = invoke("predict", tiny_onnx, "--file", source, "--output", tmp_path / "other.jsonl")
    assert result.exit_code == 1 and "holds an unfinished run of a different command" in result.output
    result = invoke("predict", tiny_onnx, "--file", source, "--id-column", "id")
    assert result.exit_code == 2 and "--id-column only apply with --output" in result.output


def test_sigterm_in_the_middle_then_a_rerun_gives_the_uninterrupted_output(tmp_path, tiny_joint_onnx):
    texts = [f"{text} number {i}" for i in range(600) for text in TEXTS]
    source = write_lines(tmp_path / "in.txt", texts)
    command = [sys.executable, "-m", "nlu_deploy", "predict", str(tiny_joint_onnx), "--file", str(source),
               "--chunk-rows", "200"]  # fmt: skip
    whole = subprocess.run([*command, "--output", str(tmp_path / "whole.jsonl")], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr

    output, chunks = tmp_path / "cut.jsonl", tmp_path / ".cut.jsonl.chunks"
    process = subprocess.Popen([*command, "--output", str(output)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(chunks.glob("*.done.json"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr and "run the same command again to go on" in stderr
    assert not output.exists()
    kept = len(list(chunks.glob("*.done.json")))
    assert 3 <= kept < len(texts) // 200

    rerun = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"going on after {kept} chunk(s)" in rerun.stderr
    assert output.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not chunks.exists()
    assert "going on after chunk" in Path(f"{output}.log").read_text()


def test_a_local_ray_instance_writes_the_local_runs_output(tmp_path, tiny_tagger_onnx):
    pytest.importorskip("ray")
    texts = TEXTS * 4 + ["", "add milk"]
    source = write_lines(tmp_path / "in.txt", texts)
    local = invoke(
        "predict", tiny_tagger_onnx, "--file", source, "--output", tmp_path / "local.jsonl", "--chunk-rows", 6
    )
    assert local.exit_code == 0, local.output
    started = time.monotonic()
    on_ray = invoke(
        "predict", tiny_tagger_onnx, "--file", source, "--output", tmp_path / "ray.jsonl", "--chunk-rows", 6,
        "--ray", "local", "--ray-actors", 2,
    )  # fmt: skip
    assert on_ray.exit_code == 0, on_ray.output
    assert time.monotonic() - started < 60
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "ray.jsonl.odd-rows.jsonl").read_bytes() == (
        tmp_path / "local.jsonl.odd-rows.jsonl"
    ).read_bytes()
    assert not list(tmp_path.glob("ray.jsonl.partial-*"))
