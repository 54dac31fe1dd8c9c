"""Reading the rows to predict on, a chunk at a time, from txt, JSONL, CSV/TSV or Parquet.

Every reader streams: it holds one chunk of rows, never the file. A chunk is a `Chunk`: where
it starts and ends in the file (bytes for the text formats, rows for Parquet) and the number of
its first row, so a chunk can be read again on its own (a rerun going on after the last finished
chunk, a Ray actor reading its share of the file).

Real files are messy. A row that cannot be read (not UTF-8, not JSON, a CSV row with the wrong
number of fields, no text, an empty text) becomes a `BadRow` with its line number and the
reason, and the chunk goes on. A path with `://` (s3://, gs://, hdfs://...) is opened through
pyarrow's filesystems, so a cluster reads the same URI the driver was given.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nlu_deploy.errors import DataError

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_BLOCK = 1 << 20  # bytes read at a time from a text file


@dataclass(frozen=True)
class Chunk:
    """Rows [start, end) of the input: byte offsets (txt, JSONL, CSV) or row numbers (Parquet);
    `first_line` numbers its first row (from 1), as the bad-rows file reports it."""

    index: int
    start: int
    end: int
    first_line: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Chunk:
        return cls(int(data["index"]), int(data["start"]), int(data["end"]), int(data["first_line"]))


@dataclass
class ChunkRows:
    """The rows of one chunk that can be predicted on, and those that cannot."""

    chunk: Chunk
    lines: list[int] = field(default_factory=list)  # each good row's number in the input
    ids: list[Any] = field(default_factory=list)  # its id column's value (None without --id-column)
    texts: list[str] = field(default_factory=list)
    bad: list[dict] = field(default_factory=list)  # {"line", "id", "reason"}

    @property
    def rows(self) -> int:
        return len(self.texts) + len(self.bad)

    def add(self, line: int, text: Any, row_id: Any = None) -> None:
        """A row with its text, or a bad row when the text is missing, not a string or empty."""
        if not isinstance(text, str):
            self.bad.append(
                {"line": line, "id": row_id, "reason": "no text" if text is None else "text is not a string"}
            )
        elif not text.strip():
            self.bad.append({"line": line, "id": row_id, "reason": "empty text"})
        else:
            self.lines.append(line)
            self.ids.append(row_id)
            self.texts.append(text)

    def add_bad(self, line: int, reason: str, row_id: Any = None) -> None:
        self.bad.append({"line": line, "id": row_id, "reason": reason})


def input_format(path: str) -> str:
    suffix = Path(path.split("://", 1)[-1]).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unsupported input type {suffix or '(none)'}; use one of {', '.join(sorted(FORMATS))}."
        )
    return FORMATS[suffix]


def open_source(path: str, text_column: str = "text", id_column: str | None = None) -> RowSource:
    """The reader for `path`, its columns checked (a missing column is refused in one sentence)."""
    kind = input_format(str(path))
    if kind == "parquet":
        return ParquetSource(str(path), text_column, id_column)
    return TextFileSource(str(path), kind, text_column, id_column)


def _open_binary(path: str):
    """A local file, or a URI through pyarrow's filesystems (random access where it has it)."""
    try:
        if "://" not in path:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(path)
        return filesystem.open_input_file(inner)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a data file.") from None
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None


def file_size(path: str) -> int:
    with _open_binary(path) as handle:
        handle.seek(0, 2)
        return handle.tell()


def _lines(handle, start: int, end: int | None) -> Iterator[tuple[int, bytes]]:
    """(offset after the line, the line without its newline) from byte `start` up to `end`. A
    final newline ends the last line; it does not start an empty one."""
    handle.seek(start)
    offset, pending = start, b""
    while end is None or offset < end:
        block = handle.read(_BLOCK if end is None else min(_BLOCK, end - offset))
        if not block:
            break
        offset += len(block)
        pieces = (pending + block).split(b"\n")
        pending = pieces.pop()
        position = offset - len(pending)
        ends = []
        for piece in reversed(pieces):
            ends.append(position)
            position -= len(piece) + 1
        yield from zip(reversed(ends), pieces)
    if pending:
        yield offset, pending


class RowSource:
    """A file's rows in chunks. `chunks()` streams from a point on; `read(chunk)` reads one again."""

    path: str
    total_hint: int | None = None  # rows, when the format knows them before reading (Parquet)

    def chunks(self, rows_per_chunk: int, after: Chunk | None = None) -> Iterator[ChunkRows]:
        raise NotImplementedError

    def read(self, chunk: Chunk) -> ChunkRows:
        raise NotImplementedError

    def size(self) -> int:
        """How far chunks go: bytes for text formats, rows for Parquet (the progress bar's scale)."""
        raise NotImplementedError


class TextFileSource(RowSource):
    """txt (a row per line), JSONL (an object per line), CSV and TSV (a header, then records that
    may span lines inside quotes). Chunks end at record boundaries, so each can be read alone."""

    def __init__(self, path: str, kind: str, text_column: str, id_column: str | None):
        self.path, self.kind, self.text_column, self.id_column = path, kind, text_column, id_column
        self.header: list[str] | None = None
        self.body_start = 0
        if kind == "txt" and id_column:
            raise DataError(f"{path} is plain text, one text per line: it has no id column; the line number is the id.")
        if kind in ("csv", "tsv"):
            self._read_header()

    def size(self) -> int:
        return file_size(self.path)

    def _read_header(self) -> None:
        with _open_binary(self.path) as handle:
            for offset, line in _lines(handle, 0, None):
                self.header = next(csv.reader([_decoded(line, first=True)], delimiter=self._delimiter()))
                self.body_start = offset
                break
        if not self.header:
            raise DataError(f"{self.path} is empty.")
        for column in filter(None, (self.text_column, self.id_column)):
            if column not in self.header:
                raise DataError(f"{self.path} has no column {column!r} (columns: {', '.join(self.header)}).")

    def _delimiter(self) -> str:
        return "\t" if self.kind == "tsv" else ","

    def chunks(self, rows_per_chunk: int, after: Chunk | None = None) -> Iterator[ChunkRows]:
        start, index = (after.end, after.index + 1) if after else (self.body_start, 0)
        yield from self._chunks(start, None, self._first_line_after(after), index, rows_per_chunk)

    def _first_line_after(self, after: Chunk | None) -> int:
        if after is None:
            return 2 if self.header is not None else 1
        with _open_binary(self.path) as handle:  # the lines the chunk spans (CSV records may span several)
            return after.first_line + sum(1 for _ in _lines(handle, after.start, after.end))

    def read(self, chunk: Chunk) -> ChunkRows:
        return next(self._chunks(chunk.start, chunk.end, chunk.first_line, chunk.index, None), ChunkRows(chunk))

    def _chunks(self, start, end, line, index, rows_per_chunk) -> Iterator[ChunkRows]:
        with _open_binary(self.path) as handle:
            records = self._records(_lines(handle, start, end), line)
            current = ChunkRows(Chunk(index, start, start, line))
            for first_line, offset, next_line, parse in records:
                parse(current, first_line)
                current.chunk = Chunk(index, current.chunk.start, offset, current.chunk.first_line)
                if rows_per_chunk and current.rows >= rows_per_chunk:
                    yield current
                    index += 1
                    current = ChunkRows(Chunk(index, offset, offset, next_line))
            if current.rows:
                yield current

    def _records(self, lines, line) -> Iterator:
        """(first line, offset after the record, the line after it, a function that adds it to a
        chunk) per record."""
        if self.kind in ("txt", "jsonl"):
            parse = _txt_row if self.kind == "txt" else self._jsonl_row
            for number, (offset, raw) in enumerate(lines, start=line):
                yield number, offset, number + 1, lambda rows, n, raw=raw: parse(rows, n, raw)
            return
        yield from self._csv_records(lines, line)

    def _jsonl_row(self, rows: ChunkRows, line: int, raw: bytes) -> None:
        text = _decoded(raw)
        if text is None:
            return rows.add_bad(line, "not UTF-8")
        if not text.strip():
            return rows.add_bad(line, "empty line")
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            return rows.add_bad(line, f"not valid JSON ({exc.msg})")
        if not isinstance(record, dict):
            return rows.add_bad(line, "not a JSON object")
        row_id = record.get(self.id_column) if self.id_column else None
        if self.id_column and self.id_column not in record:
            return rows.add_bad(line, f"no {self.id_column!r} field")
        if self.text_column not in record:
            return rows.add_bad(line, f"no {self.text_column!r} field", row_id)
        rows.add(line, record[self.text_column], row_id)

    def _csv_records(self, lines, line) -> Iterator:
        """csv.reader pulls lines one at a time, so after each record the offset of the last line
        it pulled is where the next record starts: a chunk boundary."""
        position = {"offset": None, "line": line - 1}

        def decoded_lines():
            for offset, raw in lines:
                position["offset"], position["line"] = offset, position["line"] + 1
                yield raw.decode("utf-8", "surrogateescape") + "\n"

        reader = csv.reader(decoded_lines(), delimiter=self._delimiter())
        text_at = self.header.index(self.text_column)
        id_at = self.header.index(self.id_column) if self.id_column else None
        while True:
            first = position["line"] + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                after = position["line"] + 1
                yield first, position["offset"], after, lambda rows, n, e=exc: rows.add_bad(n, f"not valid CSV ({e})")
                continue
            if not record:  # a blank line: not a row
                continue
            after = position["line"] + 1
            yield first, position["offset"], after, lambda rows, n, r=record: self._csv_row(rows, n, r, text_at, id_at)

    def _csv_row(self, rows: ChunkRows, line: int, record: list[str], text_at: int, id_at: int | None) -> None:
        row_id = record[id_at] if id_at is not None and id_at < len(record) else None
        if len(record) != len(self.header):
            return rows.add_bad(
                line, f"expected {len(self.header)} fields like the header, found {len(record)}", row_id
            )
        if any(_undecodable(value) for value in record):
            return rows.add_bad(line, "not UTF-8", None if _undecodable(row_id) else row_id)
        rows.add(line, record[text_at], row_id)


def _txt_row(rows: ChunkRows, line: int, raw: bytes) -> None:
    text = _decoded(raw, first=line == 1)
    if text is None:
        rows.add_bad(line, "not UTF-8")
    else:
        rows.add(line, text)


def _decoded(raw: bytes, first: bool = False) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.removesuffix("\r")
    return text.removeprefix("\ufeff") if first else text


def _undecodable(value) -> bool:
    return isinstance(value, str) and any("\udc80" <= c <= "\udcff" for c in value)


class ParquetSource(RowSource):
    """A Parquet file's text (and id) column, read a record batch at a time: only those columns
    are decoded, and chunks are row ranges that start in whichever row group holds them."""

    def __init__(self, path: str, text_column: str, id_column: str | None):
        self.path, self.text_column, self.id_column = path, text_column, id_column
        parquet = self._file()
        metadata = parquet.metadata
        self._id_type = parquet.schema_arrow.field(id_column).type if id_column in parquet.schema_arrow.names else None
        parquet.close()
        names = metadata.schema.names
        for column in filter(None, (text_column, id_column)):
            if column not in names:
                raise DataError(f"{path} has no column {column!r} (columns: {', '.join(names)}).")
        self.total_hint = metadata.num_rows
        self.group_starts = [0]
        for group in range(metadata.num_row_groups):
            self.group_starts.append(self.group_starts[-1] + metadata.row_group(group).num_rows)

    def _file(self):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{self.path}: reading Parquet needs pyarrow (pip install pyarrow).") from None
        try:
            if "://" not in self.path:
                return pq.ParquetFile(self.path)
            from pyarrow import fs

            filesystem, inner = fs.FileSystem.from_uri(self.path)
            return pq.ParquetFile(inner, filesystem=filesystem)
        except FileNotFoundError:
            raise DataError(f"{self.path} does not exist.") from None
        except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
            raise DataError(f"{self.path} is not a readable Parquet file ({exc}).") from None

    def size(self) -> int:
        return self.total_hint

    def id_type(self):
        """The Arrow type of the id column, which a Parquet output keeps."""
        return self._id_type

    def chunks(self, rows_per_chunk: int, after: Chunk | None = None) -> Iterator[ChunkRows]:
        start, index = (after.end, after.index + 1) if after else (0, 0)
        current = ChunkRows(Chunk(index, start, start, start + 1))
        for row, text, row_id in self._rows(start, self.total_hint):
            current.add(row + 1, text, row_id)
            if current.rows >= rows_per_chunk:
                current.chunk = Chunk(index, current.chunk.start, row + 1, current.chunk.first_line)
                yield current
                index += 1
                current = ChunkRows(Chunk(index, row + 1, row + 1, row + 2))
        if current.rows:
            current.chunk = Chunk(index, current.chunk.start, self.total_hint, current.chunk.first_line)
            yield current

    def read(self, chunk: Chunk) -> ChunkRows:
        rows = ChunkRows(chunk)
        for row, text, row_id in self._rows(chunk.start, chunk.end):
            rows.add(row + 1, text, row_id)
        return rows

    def _rows(self, start: int, end: int) -> Iterator[tuple[int, Any, Any]]:
        """(row number from 0, text, id) for rows [start, end), streaming record batches."""
        first_group = max(g for g, first in enumerate(self.group_starts[:-1]) if first <= start) if start else 0
        groups = [g for g in range(first_group, len(self.group_starts) - 1) if self.group_starts[g] < end]
        if not groups:
            return
        columns = [self.text_column] + ([self.id_column] if self.id_column else [])
        row = self.group_starts[first_group]
        parquet = self._file()
        try:
            yield from self._batch_rows(parquet.iter_batches(8192, groups, columns), row, start, end)
        finally:
            parquet.close()

    @staticmethod
    def _batch_rows(batches, row: int, start: int, end: int) -> Iterator[tuple[int, Any, Any]]:
        for batch in batches:
            if row + batch.num_rows <= start:
                row += batch.num_rows
                continue
            texts = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if batch.num_columns > 1 else [None] * len(texts)
            for text, row_id in zip(texts, ids):
                if start <= row < end:
                    yield row, text, row_id
                row += 1
            if row >= end:
                return
