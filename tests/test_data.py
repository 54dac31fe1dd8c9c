import json

import pytest

from nlu_deploy.data.tables import (
    LabelledTexts,
    check_known_labels,
    label_list,
    load_labelled_texts,
    read_records,
    read_texts,
    stratified_holdout,
)
from nlu_deploy.errors import DataError


def test_reads_every_format_to_the_same_rows(tmp_path):
    rows = [{"text": "wake me up, please", "intent": "alarm"}, {"text": 'say "hi"', "intent": "chat"}]
    (tmp_path / "d.csv").write_text('text,intent\n"wake me up, please",alarm\n"say ""hi""",chat\n', encoding="utf-8")
    (tmp_path / "d.tsv").write_text('text\tintent\nwake me up, please\talarm\nsay "hi"\tchat\n', encoding="utf-8")
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}), encoding="utf-8")
    for name in ("d.csv", "d.tsv", "d.jsonl", "d.json"):
        data = load_labelled_texts(tmp_path / name, "text", "intent")
        assert data.texts == ["wake me up, please", 'say "hi"'], name
        assert data.labels == ["alarm", "chat"], name


def test_parquet_when_pyarrow_is_present(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet support is optional (pyarrow not installed)")
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["a", "b"], "label": [1, 2]}), tmp_path / "d.parquet")
    assert load_labelled_texts(tmp_path / "d.parquet", "text", "label").labels == ["1", "2"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "does not exist"),
        ("empty.csv", "", "is empty"),
        ("header_only.csv", "text,label\n", "holds no examples"),
        ("ragged.csv", "text,label\nhello,a\nhello,a,extra\n", "line 3: expected 2 fields"),
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", label}\n', "line 2 is not valid JSON"),
        ("list.jsonl", '["a", "x"]\n', "line 1 is not a JSON object"),
        ("bad.json", '[{"text": "a"', "is not valid JSON"),
        ("data.xlsx", "whatever", "unsupported file type .xlsx"),
    ],
)
def test_bad_files_get_one_clear_sentence(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nfine,a\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text .*line 3"):
        read_records(path)


def test_missing_column_lists_the_available_ones(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\nhi,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'text' \(columns: sentence, label\)"):
        load_labelled_texts(path, "text", "label")


def test_missing_label_value_names_the_example(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', encoding="utf-8")
    with pytest.raises(DataError, match="example 2: 'label' is missing"):
        load_labelled_texts(path, "text", "label")


def test_single_label_and_unknown_labels_are_refused():
    with pytest.raises(DataError, match="single label"):
        label_list(LabelledTexts(["a", "b"], ["x", "x"], "train.csv"))
    with pytest.raises(DataError, match="never trained on: 'z'"):
        check_known_labels(LabelledTexts(["a", "b"], ["x", "z"], "dev.csv"), ["x", "y"])


def test_stratified_holdout_is_seeded_and_keeps_every_label():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    data = LabelledTexts([f"text {i}" for i in range(100)], labels, "d")
    train, held = stratified_holdout(data, 0.1, seed=7)
    again_train, again_held = stratified_holdout(data, 0.1, seed=7)
    _, other_held = stratified_holdout(data, 0.1, seed=8)
    assert held.texts == again_held.texts and train.texts == again_train.texts
    assert held.texts != other_held.texts
    assert sorted(held.labels) == ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    assert not set(train.texts) & set(held.texts) and len(train) + len(held) == 100


def test_read_texts_from_plain_lines(tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_text("play jazz\n\nwake me up\n", encoding="utf-8")
    assert read_texts(path) == ["play jazz", "wake me up"]
