"""Reading labelled text from CSV, TSV, JSON, JSONL and Parquet, with errors that name the
file, the line and the column; label maps; the seeded validation holdout."""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlu_deploy.errors import DataError

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class LabelledTexts:
    """Parallel lists of texts and their string labels, plus where they came from."""

    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int], source: str) -> LabelledTexts:
        return LabelledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices], source)

    def to_records(self, text_column: str, label_column: str) -> list[dict[str, str]]:
        return [{text_column: t, label_column: y} for t, y in zip(self.texts, self.labels)]


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a data file.") from None
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror}).") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} is not UTF-8 text (invalid byte at line {line}).") from None


def text_lines(text: str) -> list[str]:
    """Lines as data files mean them: split at \\n (and \\r\\n) only. str.splitlines also splits
    at U+2028, U+0085 and other characters that are valid inside a JSON string or a text. A final
    newline ends the last line; it does not start an empty one."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if len(lines) > 1 and lines[-1] == "" else lines


def _read_delimited(path: Path, delimiter: str) -> list[dict[str, Any]]:
    # The csv module over the whole text: a quoted field keeps its newlines and any length.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
        records = []
        for row in reader:
            if not row:  # blank line
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path} line {reader.line_num}: expected {len(header)} fields like the header, found {len(row)}."
                )
            records.append(dict(zip(header, row)))
    except StopIteration:
        raise DataError(f"{path} is empty.") from None
    except csv.Error as exc:
        raise DataError(
            f"{path} line {reader.line_num} is not valid {'CSV' if delimiter == ',' else 'TSV'} ({exc})."
        ) from None
    return records


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc.msg}).") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number} is not a JSON object.")
        records.append(record)
    return records


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} wrappers
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise DataError(f"{path} must hold a JSON list of objects (one per example).")
    return data


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow).") from None
    if not path.exists():
        raise DataError(f"{path} does not exist.")
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"{path} is not a readable Parquet file ({exc}).") from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """All rows of a data file as dicts; the format is chosen by the file suffix."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file.")
    suffix = path.suffix.lower()
    readers = {
        ".csv": lambda p: _read_delimited(p, ","),
        ".tsv": lambda p: _read_delimited(p, "\t"),
        ".jsonl": _read_jsonl,
        ".json": _read_json,
        ".parquet": _read_parquet,
    }
    if suffix not in readers:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUPPORTED_SUFFIXES)}."
        )
    records = readers[suffix](path)
    if not records:
        raise DataError(f"{path} holds no examples.")
    return records


def load_labelled_texts(path: Path, text_column: str, label_column: str) -> LabelledTexts:
    records = read_records(path)
    for column in (text_column, label_column):
        if column not in records[0]:
            available = ", ".join(map(str, records[0].keys()))
            raise DataError(f"{path} has no column {column!r} (columns: {available}).")
    texts, labels = [], []
    for number, record in enumerate(records, start=1):
        text, label = record.get(text_column), record.get(label_column)
        if not isinstance(text, str):
            raise DataError(f"{path} example {number}: {text_column!r} is missing or not a string.")
        if label is None or label == "" or isinstance(label, (list, dict)):
            raise DataError(f"{path} example {number}: {label_column!r} is missing or not a single label.")
        texts.append(text)
        labels.append(str(label))
    return LabelledTexts(texts, labels, str(path))


def label_list(data: LabelledTexts) -> list[str]:
    """The label set, sorted so that the same data always gives the same label ids."""
    labels = sorted(set(data.labels))
    if len(labels) < 2:
        raise DataError(f"{data.source} has a single label ({labels[0]!r}); a classifier needs at least two.")
    return labels


def check_label_names(label_sets: dict[str, list[str]], source: str) -> None:
    """Labels become one-line answers (`predict` prints label, score and text on a line, split by
    tabs): a label holding a tab or a line break is refused. Labels that differ only in case are
    different classes, which is seldom meant: said once, not refused."""
    for labels in label_sets.values():
        for label in labels:
            if any(character in label for character in "\t\n\r"):
                raise DataError(
                    f"{source} has the label {label!r}, which holds a tab or a line break; predict answers one "
                    "line per text, so rename it."
                )
        by_case: dict[str, list[str]] = defaultdict(list)
        for label in labels:
            by_case[label.casefold()].append(label)
        for same in (group for group in by_case.values() if len(group) > 1):
            shown = " and ".join(repr(label) for label in same)
            print(f"note: {source}: labels {shown} differ only in case; they are trained as different classes.",
                  file=sys.stderr)  # fmt: skip


def check_known_labels(data: LabelledTexts, known: list[str] | set[str]) -> None:
    unknown = sorted(set(data.labels) - set(known))
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise DataError(f"{data.source} has labels the model was never trained on: {shown}{more}.")


def stratified_holdout(data: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """Split off `fraction` of every label (at least one example of labels with two or more)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(data.labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    train_idx, held_idx = [], []
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        n_held = max(1, round(len(indices) * fraction)) if len(indices) > 1 else 0
        held_idx.extend(indices[:n_held])
        train_idx.extend(indices[n_held:])
    if not held_idx:
        raise DataError(f"{data.source} is too small to hold out a validation split; pass --validation.")
    return (
        data.subset(sorted(train_idx), f"{data.source} (train part)"),
        data.subset(sorted(held_idx), f"{data.source} (held-out {fraction:.0%})"),
    )


def write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_texts(path: Path, column: str = "text") -> list[str]:
    """Texts to predict on: one per line of a .txt file, or the text column of a data file."""
    path = Path(path)
    if path.suffix.lower() in SUPPORTED_SUFFIXES:
        records = read_records(path)
        if column not in records[0]:
            raise DataError(f"{path} has no {column!r} column.")
        return [str(record[column]) for record in records]
    texts = [line for line in text_lines(read_text(path)) if line.strip()]
    if not texts:
        raise DataError(f"{path} holds no text.")
    return texts


def column_texts(path: Path, column: str) -> tuple[list[str], int]:
    """(the non-empty texts of a column, how many rows had none): a data file's column, whose cells
    may also be a tagged file's word lists (joined by spaces), or a .txt file's lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is not a file.")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raw = text_lines(read_text(path))
    else:
        records = read_records(path)
        if column not in records[0]:
            raise DataError(f"{path} has no {column!r} column (give the text column with --text-column).")
        raw = [record.get(column) for record in records]
    texts = [text for text in map(_as_text, raw) if text]
    return texts, len(raw) - len(texts)


def _as_text(value) -> str | None:
    if isinstance(value, list) and value and all(isinstance(word, str) for word in value):
        value = " ".join(value)
    return value if isinstance(value, str) and value.strip() else None
